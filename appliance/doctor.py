"""``sygmax doctor``: every check of the host and the node, each problem with the command that fixes it.

Works before anything is installed (host checks: OS, ports, disk, memory, versions) and on
an installed node (processes, services, TLS, migrations, clock).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil

from appliance.layout import ApplianceState, Layout, LayoutError, load_state, resolve_prefix
from appliance.preflight import (
    Finding,
    check_disk,
    check_memory,
    check_os,
    check_ports,
    check_venv_access,
    pid1_is_systemd,
)
from appliance.status import collect, expiry_text
from appliance.supervisor import Supervisor

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TLS_WARN_DAYS = 7
CLOCK_SKEW_LIMIT_S = 2.0
TIME_DAEMONS = ("chronyd", "ntpd", "systemd-timesyncd", "openntpd", "timesyncd")


def _version(command: list[str]) -> str | None:
    if not shutil.which(command[0]) and not Path(command[0]).exists():
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def check_versions(venv: str) -> list[Finding]:
    import sys

    wanted = [
        ("python", [sys.executable, "--version"], (3, 11), "sudo ./install.sh"),
        ("postgresql", [str(PG_BIN / "postgres"), "--version"], (15,), "apt-get install postgresql"),
        ("redis", ["redis-server", "--version"], (6,), "apt-get install redis-server"),
        ("caddy", ["caddy", "version"], (2, 6), "apt-get install caddy"),
        ("supervisord", [str(Path(venv) / "bin" / "supervisord"), "--version"], (4, 2), "sudo ./install.sh"),
    ]
    findings = []
    for name, command, minimum, fix in wanted:
        text = _version(command)
        if text is None:
            findings.append(Finding(f"{name} version", "error", f"{name} is not installed", fix))
            continue
        match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text.split("v=")[-1] if name == "redis" else text)
        found = tuple(int(part) for part in match.groups() if part is not None) if match else ()
        if found and found[: len(minimum)] < minimum:
            findings.append(
                Finding(
                    f"{name} version",
                    "error",
                    f"{name} {'.'.join(map(str, found))} is older than {'.'.join(map(str, minimum))}",
                    fix,
                )
            )
        else:
            findings.append(Finding(f"{name} version", "ok", f"{name} {'.'.join(map(str, found)) or text}"))
    return findings


def check_clock(state: ApplianceState | None) -> list[Finding]:
    findings = []
    names = set()
    for process in psutil.process_iter(["name"]):
        names.add(process.info.get("name") or "")
    if pid1_is_systemd():
        done = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True
        )
        synced = done.stdout.strip() == "yes"
    else:
        synced = any(daemon in names for daemon in TIME_DAEMONS)
    if synced:
        findings.append(Finding("clock sync", "ok", "the clock is kept in sync (NTP)"))
    else:
        findings.append(
            Finding(
                "clock sync",
                "warning",
                "no time synchronisation running; tokens and TLS need a correct clock",
                "apt-get install chrony (containers: keep the host's clock in sync)",
            )
        )
    if state is not None:
        skew = _database_skew(state)
        if skew is not None:
            level = "ok" if abs(skew) <= CLOCK_SKEW_LIMIT_S else "error"
            findings.append(
                Finding(
                    "clock skew",
                    level,
                    f"database clock differs by {skew:+.3f}s",
                    "" if level == "ok" else "sync both clocks: apt-get install chrony",
                )
            )
    return findings


def _database_skew(state: ApplianceState) -> float | None:
    import tomllib

    try:
        url = tomllib.loads(state.layout.config_file.read_text())["database"]["url"]
    except (OSError, KeyError, ValueError):
        return None

    async def measure() -> float:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=5)
        try:
            before = datetime.now(UTC)
            remote = await connection.fetchval("SELECT clock_timestamp()")
            after = datetime.now(UTC)
        finally:
            await connection.close()
        local = before + (after - before) / 2
        return (remote - local).total_seconds()

    try:
        return asyncio.run(measure())
    except Exception:  # noqa: BLE001 - any failure means "unknown"; the services check reports why
        return None


def diagnose(prefix: Path | None) -> tuple[ApplianceState | None, list[Finding]]:
    layout = Layout(resolve_prefix(prefix))
    try:
        state = load_state(layout.prefix)
    except LayoutError as exc:
        state = None
        not_installed = str(exc)
    findings: list[Finding] = [check_os()]
    if os.geteuid() != 0:
        findings.append(
            Finding(
                "root",
                "warning",
                "not root: some checks (ports' owners, services) are partial",
                "sudo sygmax doctor",
            )
        )
    probe_state = state or ApplianceState(prefix=str(layout.prefix))
    findings.append(check_disk(probe_state.layout.data))
    findings.append(check_memory())
    findings += check_versions(probe_state.venv)
    findings.append(check_venv_access(probe_state.venv))
    sup = Supervisor(probe_state)
    own = sup.pid() if sup.alive() else None
    findings += check_ports(probe_state.all_ports(), own_pid=own)
    findings += check_clock(state)
    if state is None:
        findings.append(Finding("install", "warning", not_installed, "sudo sygmax install"))
        return None, findings

    prefix_flag = "" if state.prefix == "/" else f" --prefix {state.prefix}"
    if own is None:
        findings.append(
            Finding(
                "supervisor",
                "error",
                "supervisord is not running: nothing of the node runs",
                f"sygmax up{prefix_flag}",
            )
        )
        return state, findings
    status = collect(state)
    for row in status.processes:
        if not row.health.ok:
            findings.append(
                Finding(
                    row.program,
                    "error",
                    f"{row.program} is {row.state}: {row.health.detail}",
                    f"sygmax restart {row.program}{prefix_flag}; see: sygmax logs {row.program}{prefix_flag}",
                )
            )
    if all(row.health.ok for row in status.processes):
        findings.append(Finding("processes", "ok", f"{len(status.processes)} processes healthy"))
    ai_rows = [row for row in status.processes if row.profile == "ai"]
    if not ai_rows:
        findings.append(Finding("ai profile", "ok", "no ai process configured: AI endpoints answer 503 "
                                                    "(with the ai extra installed: sygmax scale ai=1)"))
    for row in ai_rows:
        if row.health.ok:  # the detail names the loaded models and whether a GPU is in use
            findings.append(Finding(f"ai profile ({row.program})", "ok", row.health.detail))
    for name, probe in status.services.items():
        if probe.ok:
            findings.append(Finding(name, "ok", probe.detail))
        else:
            fix = (
                f"sygmax restart {name}{prefix_flag}"
                if name != "storage"
                else f"sudo sygmax install{prefix_flag}"
            )
            findings.append(Finding(name, "error", probe.detail, fix))
    if status.tls_expiry is None:
        findings.append(
            Finding(
                "tls",
                "error",
                f"no certificate served on port {state.https_port}",
                f"sygmax logs caddy{prefix_flag}; sygmax restart caddy{prefix_flag}",
            )
        )
    else:
        days = (status.tls_expiry - datetime.now(UTC)).total_seconds() / 86400
        # Caddy's internal CA issues 12-hour certificates and renews them itself.
        limit = 0.1 if state.tls_internal else TLS_WARN_DAYS
        level = "ok" if days > limit else "error"
        findings.append(
            Finding(
                "tls",
                level,
                f"certificate for {state.domain} expires {expiry_text(status.tls_expiry)}",
                ""
                if level == "ok"
                else f"check DNS points {state.domain} here and port {state.http_port} is reachable; "
                f"sygmax restart caddy{prefix_flag}",
            )
        )
    if status.pending_migrations is None:
        findings.append(
            Finding(
                "migrations",
                "error",
                f"cannot check migrations: {status.migrations_error}",
                f"sygmax doctor{prefix_flag} after fixing the database",
            )
        )
    elif status.pending_migrations:
        findings.append(
            Finding(
                "migrations",
                "warning",
                f"{len(status.pending_migrations)} pending: {', '.join(status.pending_migrations)}",
                f"SYGMAX_CONFIG={state.layout.config_file} sygmax migrate",
            )
        )
    else:
        findings.append(Finding("migrations", "ok", "no pending migrations"))
    return state, findings
