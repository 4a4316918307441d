"""What runs on a node and how it is doing: the data behind ``sygmax status`` and ``doctor``."""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from appliance import caddy
from appliance.health import Probe, process_health, redis_ping, tcp_open
from appliance.layout import ApplianceState
from appliance.supervisor import Supervisor
from profiles import PROFILES


@dataclass(frozen=True)
class ProcessRow:
    profile: str
    program: str
    port: int | None
    state: str
    pid: int
    uptime_s: int
    health: Probe


@dataclass
class NodeStatus:
    state: ApplianceState
    supervisor_running: bool
    processes: list[ProcessRow] = field(default_factory=list)
    services: dict[str, Probe] = field(default_factory=dict)
    tls_expiry: datetime | None = None
    pending_migrations: list[str] | None = None  # None: could not be determined
    migrations_error: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.supervisor_running
            and all(row.health.ok for row in self.processes)
            and all(probe.ok for probe in self.services.values())
        )


def _secrets(state: ApplianceState) -> dict:
    try:
        return json.loads(state.layout.secrets_file.read_text())
    except (OSError, ValueError):
        return {}


def sygmax_environ(state: ApplianceState) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
    env["SYGMAX_CONFIG"] = str(state.layout.config_file)
    return env


def pending_migrations(state: ApplianceState) -> tuple[list[str] | None, str]:
    """Steps ``sygmax migrate --check`` lists as pending; (None, why) if it cannot tell."""
    done = subprocess.run(
        [state.sygmax_bin, "migrate", "--check"],
        capture_output=True,
        text=True,
        env=sygmax_environ(state),
        timeout=60,
    )
    if done.returncode == 0:
        return [], ""
    if done.returncode == 3:
        return [
            line.split("pending:", 1)[1].strip()
            for line in done.stdout.splitlines()
            if line.startswith("pending:")
        ], ""
    output = (done.stderr or done.stdout).strip().splitlines()
    return None, output[-1] if output else f"sygmax migrate --check exited {done.returncode}"


def _postgres(state: ApplianceState) -> Probe:
    socket_dir = state.layout.run / "postgresql"
    done = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/psql",
            "-h",
            str(socket_dir),
            "-p",
            str(state.postgres_port),
            "-d",
            "postgres",
            "-Atc",
            "SHOW server_version",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode == 0:
        return Probe(True, f"PostgreSQL {done.stdout.strip()} on 127.0.0.1:{state.postgres_port}")
    if tcp_open(state.postgres_port):
        return Probe(True, f"listening on 127.0.0.1:{state.postgres_port}")
    return Probe(False, f"not answering on 127.0.0.1:{state.postgres_port}")


def _storage(state: ApplianceState) -> Probe:
    if state.storage_endpoint:
        from sygmax.config import parse_storage_url

        location = parse_storage_url(state.storage_endpoint)
        host, _, port = location.endpoint.partition(":")
        reachable = tcp_open(int(port or (443 if location.secure else 80)), host=host)
        return Probe(
            reachable,
            f"S3 bucket {location.bucket} at {location.endpoint}" + ("" if reachable else " unreachable"),
        )
    objects = state.layout.data / "objects"
    if objects.is_dir():
        free = os.statvfs(objects)
        return Probe(True, f"local disk {objects} ({free.f_bavail * free.f_frsize / 1024**3:.1f} GiB free)")
    return Probe(False, f"{objects} is missing")


def _caddy(state: ApplianceState) -> Probe:
    admin = caddy.CaddyAdmin(state.caddy_admin_url)
    if not admin.reachable():
        return Probe(False, f"admin API not answering on {state.caddy_admin_url}")
    if not tcp_open(state.https_port):
        return Probe(False, f"nothing listening on port {state.https_port}")
    return Probe(True, f"serving {state.public_url} (admin API {state.caddy_admin_url})")


_AI_LOADED = re.compile(r'^sygmax_ai_model_loaded\{([^}]*)\}\s+1(?:\.0)?$', re.MULTILINE)


def ai_models(port: int, timeout: float = 3.0) -> list[dict[str, str]]:
    """The models an ai process has loaded, from its /metrics (``sygmax_ai_model_loaded``)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode(errors="replace")
    except OSError:
        return []
    return [dict(re.findall(r'(\w+)="([^"]*)"', labels)) for labels in _AI_LOADED.findall(text)]


def ai_health(port: int) -> Probe:
    """An ai process's health plus what it serves: its models, their devices, GPU or CPU."""
    probe = process_health(port)
    if not probe.ok:
        return probe
    models = ai_models(port)
    if not models:
        return Probe(False, "healthy, but no model loaded (see sygmax logs ai)")
    gpu = any(model.get("device") == "gpu" for model in models)
    listed = ", ".join(f"{m.get('model')} ({m.get('kind')}, {m.get('device')})" for m in models)
    return Probe(True, f"healthy; GPU: {'yes' if gpu else 'no'}; models: {listed}")


def collect(state: ApplianceState, migrations: bool = True) -> NodeStatus:
    sup = Supervisor(state)
    running = sup.alive()
    programs = sup.status() if running else {}
    status = NodeStatus(state, running)
    expected = state.all_processes()

    with ThreadPoolExecutor(max_workers=8) as pool:
        health = {program: pool.submit(ai_health if profile.name == "ai" else process_health, port)
                  for profile, program, port in expected}
        services = {
            "postgresql": pool.submit(_postgres, state),
            "redis": pool.submit(redis_ping, state.redis_port, _secrets(state).get("redis_password", "")),
            "storage": pool.submit(_storage, state),
            "caddy": pool.submit(_caddy, state),
        }
        expiry = pool.submit(caddy.certificate_expiry, state)
        pending = pool.submit(pending_migrations, state) if migrations else None
        for profile, program, port in expected:
            info = programs.get(program)
            status.processes.append(
                ProcessRow(
                    profile.name,
                    program,
                    port,
                    info.state if info else "NOT INSTALLED",
                    info.pid if info else 0,
                    info.uptime_s if info else 0,
                    health[program].result(),
                )
            )
        status.services = {name: future.result() for name, future in services.items()}
        status.tls_expiry = expiry.result()
        if pending is not None:
            try:
                status.pending_migrations, status.migrations_error = pending.result()
            except (OSError, subprocess.SubprocessError) as exc:
                status.pending_migrations, status.migrations_error = None, str(exc)
    for name in ("postgresql", "redis", "caddy"):
        info = programs.get(name)
        if info is not None and not info.running:
            probe = status.services[name]
            status.services[name] = Probe(False, f"{info.state}: {probe.detail}")
    return status


def uptime_text(seconds: int) -> str:
    if seconds <= 0:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def expiry_text(expiry: datetime | None) -> str:
    if expiry is None:
        return "unknown (HTTPS not answering)"
    left = expiry - datetime.now(UTC)
    days = left.total_seconds() / 86400
    when = expiry.strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} (in {days:.1f} days)" if days < 2 else f"{when} (in {int(days)} days)"


def profile_of(program: str) -> str | None:
    for name in PROFILES:
        if program.startswith(f"sygmax-{name}-"):
            return name
    return None


def log_files(state: ApplianceState, target: str | None) -> list[Path]:
    from appliance.node import select_programs

    log = state.layout.log
    programs = select_programs(state, target)
    files = [log / f"{program}.log" for program in programs]
    if target is None:
        files.insert(0, log / "supervisord.log")
    return files
