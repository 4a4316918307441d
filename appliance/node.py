"""Operating an installed node: start, stop, restart, scale, and what runs where.

Scaling and restarts keep requests flowing: a new process is started and must answer
``/healthz`` before Caddy sends it traffic; a process being removed is first taken out of
Caddy's upstreams, then stopped. Restarts go one process at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance import caddy
from appliance.health import process_health, readiness, wait_for
from appliance.layout import ApplianceState, LayoutError
from appliance.preflight import pid1_is_systemd
from appliance.supervisor import SERVICE_PROGRAMS, Supervisor, SupervisorError
from profiles import PROFILES

HEALTH_TIMEOUT = 90.0
DRAIN_SECONDS = 1.0


class NodeError(RuntimeError):
    pass


@dataclass
class Changes:
    items: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.items.append(what)

    def __bool__(self) -> bool:
        return bool(self.items)


def select_programs(state: ApplianceState, target: str | None) -> list[str]:
    """Program names for ``target``: a profile, a service, a program, or everything (None)."""
    app = [program for _, program, _ in state.all_processes()]
    if target is None:
        return [*SERVICE_PROGRAMS, *app]
    if target in PROFILES:
        return [program for program, _ in state.profile_processes(PROFILES[target])]
    if target in SERVICE_PROGRAMS or target in app:
        return [target]
    raise LayoutError(
        f"unknown profile or service {target!r}; choose from "
        f"{', '.join([*PROFILES, *SERVICE_PROGRAMS])} or a program like sygmax-api-1"
    )


def port_of(state: ApplianceState, program: str) -> int | None:
    for _, name, port in state.all_processes():
        if name == program:
            return port
    return None


def wait_healthy(state: ApplianceState, programs: list[str], timeout: float = HEALTH_TIMEOUT) -> None:
    sup = Supervisor(state)
    for program in programs:
        port = port_of(state, program)
        if port is None:
            continue

        def healthy_or_given_up(port: int = port, program: str = program) -> bool:
            # FATAL: supervisord stopped retrying a process that keeps exiting; waiting longer is pointless.
            if process_health(port).ok:
                return True
            status = sup.status().get(program)
            return status is not None and status.state == "FATAL"

        if not wait_for(healthy_or_given_up, timeout) or not process_health(port).ok:
            status = sup.status().get(program)
            raise NodeError(
                f"{program} did not become healthy on 127.0.0.1:{port} within {timeout:.0f}s "
                f"(supervisor state {status.state if status else 'unknown'}); "
                f"see: sygmax logs {program}"
            )


def wait_ready(state: ApplianceState, timeout: float = HEALTH_TIMEOUT) -> None:
    programs = state.profile_processes(PROFILES["api"])
    if not programs:
        return
    _, port = programs[0]
    if not wait_for(lambda: readiness(port).ok, timeout, interval=0.5):
        raise NodeError(f"the api is not ready: {readiness(port).detail}; see: sygmax status")


def ensure_supervisor(state: ApplianceState) -> bool:
    """supervisord up (e.g. after a reboot without systemd); True if it had to be started."""
    sup = Supervisor(state)
    if sup.alive():
        return False
    if pid1_is_systemd():
        import subprocess

        subprocess.run(["systemctl", "start", f"{state.layout.instance}.service"], check=True)
        if not wait_for(sup.alive, 30):
            raise NodeError(
                f"{state.layout.instance}.service did not start; see: journalctl -u {state.layout.instance}"
            )
        return True
    for directory, owner in ((state.layout.run, "root"), (state.layout.run / "postgresql", "postgres")):
        directory.mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.chown(directory, user=owner, group=owner)
    (state.layout.run / "postgresql").chmod(0o700)
    return sup.start_daemon()


def converge_programs(
    state: ApplianceState,
    changes: Changes,
    progress: Callable[[str], None] | None = None,
    health_timeout: float = HEALTH_TIMEOUT,
) -> None:
    """Bring supervisord's programs in line with the files the roles wrote, without dropping requests.

    New processes start and must be healthy before Caddy is told about them; removed ones leave
    Caddy first. Processes whose definition changed (a new release's venv, say) are re-created
    one at a time in profile order: each first leaves Caddy's upstreams and drains (when its
    profile has another process to take the traffic), then is replaced and must answer
    ``/healthz`` before it rejoins Caddy and the next one goes. A process that does not become
    healthy raises :class:`NodeError` and stays out of Caddy.
    """
    sup = Supervisor(state)
    added, changed, removed = sup.reread()
    for name in added:
        if progress:
            progress(f"starting {name}")
        sup.add(name)
        changes.add(f"started {name}")
    if added:
        wait_healthy(state, added, health_timeout)
    order = [program for _, program, _ in state.all_processes()]
    # Every Caddy reload closes its idle client connections (a client that sends on one at that
    # instant sees it closed), so a re-created process rejoins Caddy in the same reload that
    # takes the next one out: one reload per drained process, plus one at the end.
    out: int | None = None
    for name in sorted(changed, key=lambda name: order.index(name) if name in order else len(order)):
        if progress:
            progress(f"restarting {name} (definition changed)")
        port = _drainable(state, name)
        if port is not None:
            caddy.apply(state, without=frozenset({port}))  # `out` rejoins in the same reload
            time.sleep(DRAIN_SECONDS)  # let requests already routed there finish
        elif out is not None:
            caddy.apply(state)
        out = port
        sup.remove(name)
        sup.add(name)
        wait_healthy(state, [name], health_timeout)
        changes.add(f"re-created {name}")
    if out is not None:
        caddy.apply(state)
    # Every program of the node runs (a stopped one from a failed earlier run, say).
    for name, status in sup.status().items():
        if name in removed or status.running or status.state == "STARTING":
            continue
        if progress:
            progress(f"starting {name}")
        sup.start(name)
        changes.add(f"started {name}")
    if caddy.apply(state):
        changes.add("caddy configuration")
    if removed:
        time.sleep(DRAIN_SECONDS)  # let requests already routed there finish
    for name in removed:
        if progress:
            progress(f"stopping {name}")
        sup.remove(name)
        changes.add(f"removed {name}")
    wait_healthy(state, [program for _, program, _ in state.all_processes()])


def _drainable(state: ApplianceState, program: str) -> int | None:
    """The port to take out of Caddy's upstreams before ``program`` restarts; None if it cannot
    leave (not behind Caddy, or the only process of its profile): it restarts in place and
    Caddy's retries (try_duration) cover the gap."""
    for profile, name, port in state.all_processes():
        if name == program:
            if profile.behind_proxy is None or state.processes.get(profile.name, 0) < 2:
                return None
            return port
    return None


def start(state: ApplianceState, target: str | None) -> list[str]:
    """Start what is not running (supervisord first); wait until all of it is healthy."""
    sup = Supervisor(state)
    programs = select_programs(state, target)
    before = sup.status()
    ensure_supervisor(state)
    for program in programs:
        sup.start(program)
    wait_healthy(state, programs)
    return [program for program in programs if not (program in before and before[program].running)]


def stop(state: ApplianceState, target: str | None) -> list[str]:
    sup = Supervisor(state)
    if not sup.alive():
        return []
    if target is None:
        programs = [program for program, status in sup.status().items() if status.running]
        sup.shutdown()
        return programs
    return [program for program in reversed(select_programs(state, target)) if sup.stop(program)]


def restart(
    state: ApplianceState, target: str | None, progress: Callable[[str], None] | None = None
) -> list[str]:
    """Rolling restart: one process at a time, each healthy before the next goes down."""
    ensure_supervisor(state)
    sup = Supervisor(state)
    done = []
    for program in select_programs(state, target):
        if progress:
            progress(f"restarting {program}")
        try:
            sup.restart(program)
        except SupervisorError as exc:
            raise NodeError(str(exc)) from exc
        wait_healthy(state, [program])
        done.append(program)
    return done
