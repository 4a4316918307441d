"""Process profiles: what each ``sygmax run PROFILE`` process does, and how many a small host runs.

The Kubernetes manifests for each profile live beside this file in ``kubernetes/``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Appliance port layout on one node (see docs/operator-guide.md): each profile owns a block
# of MAX_PROCESSES_PER_PROFILE ports from base_port; the services follow the last block.
MAX_PROCESSES_PER_PROFILE = 20
SERVICE_PORT_OFFSETS = {"postgresql": 80, "redis": 81, "caddy_admin": 82}


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
    port_offset: int = 0             # appliance: process N listens on base_port + port_offset + N - 1
    max_processes: int = MAX_PROCESSES_PER_PROFILE
    behind_proxy: str | None = None  # appliance: Caddy route kind ("http" or "websocket"), None: internal
    asgi_server: str = "granian"     # the server under server.asgi_server = "auto"

    def port(self, base_port: int, number: int) -> int:
        """Loopback port of process ``number`` (1-based) of this profile on a node."""
        if not 1 <= number <= self.max_processes:
            raise ValueError(f"{self.name}: process number {number} outside 1..{self.max_processes}")
        return base_port + self.port_offset + number - 1

    def program(self, number: int) -> str:
        """Supervisor program name of process ``number``: ``sygmax-api-1``."""
        return f"sygmax-{self.name}-{number}"


def asgi_server_for(profiles: list[Profile], configured: str) -> str:
    """The ASGI server a process of ``profiles`` runs: the configured one, or under "auto" the
    profiles' own choice when they agree (granian when they do not)."""
    if configured != "auto":
        return configured
    chosen = {profile.asgi_server for profile in profiles}
    return chosen.pop() if len(chosen) == 1 else "granian"


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("api", "HTTP API and web UI; stateless, N per node behind Caddy", http_routes=True,
                default_processes=2, port_offset=0, behind_proxy="http"),
        # uvicorn: its WebSocket send is a Python coroutine that finishes at once when the socket
        # takes the frame, so the chats fan-out writes to idle sockets without a task per frame;
        # granian's send is a native awaitable that always suspends (docs/architecture.md,
        # "Measured: chat fan-out").
        Profile("realtime", "WebSocket connections; fan-out from Redis pub/sub", websocket_routes=True,
                port_offset=20, behind_proxy="websocket", asgi_server="uvicorn"),
        Profile("worker", "Event-bus consumers: notifications, AI jobs, media, automation", consumers=True,
                port_offset=40),
        Profile("scheduler", "Scheduled jobs (feed polling, digests, backups); one active leader",
                schedules=True, port_offset=60),
        # Model server (plugins/ai): loads models once, serves the others over Redis. Needs the
        # `ai` extra, so none run until an operator scales it up; its ports follow the services.
        Profile("ai", "Model server: LLM, speech-to-text, embeddings, NER; GPU when present", extra="ai",
                default_processes=0, port_offset=100, max_processes=8),
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
