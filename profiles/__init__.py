"""Process profiles: what each ``sygmax run PROFILE`` process does, and how many a small host runs.

The Kubernetes manifests for each profile live beside this file in ``kubernetes/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    http_routes: bool = False        # REST API, OpenAPI, web UI
    websocket_routes: bool = False   # /ws/<plugin> endpoints
    consumers: bool = False          # event-bus consumers
    schedules: bool = False          # scheduled jobs (one leader cluster-wide)
    default_processes: int = 1       # on a small single-node host
    extra: str | None = None         # pip extra the profile needs installed


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("api", "HTTP API and web UI; stateless, N per node behind Caddy", http_routes=True,
                default_processes=2),
        Profile("realtime", "WebSocket connections; fan-out from Redis pub/sub", websocket_routes=True),
        Profile("worker", "Event-bus consumers: notifications, AI jobs, media, automation", consumers=True),
        Profile("scheduler", "Scheduled jobs (feed polling, digests, backups); one active leader",
                schedules=True),
    )
}


class UnknownProfile(ValueError):
    pass


def parse_profiles(text: str) -> list[Profile]:
    """``"api,worker"`` -> the profiles, in a stable order, refusing unknown or repeated names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UnknownProfile(f"no profile given; choose from {', '.join(PROFILES)}")
    unknown = [name for name in names if name not in PROFILES]
    if unknown:
        raise UnknownProfile(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    if len(set(names)) != len(names):
        raise UnknownProfile(f"profile listed twice in {text!r}")
    return [PROFILES[name] for name in PROFILES if name in names]
