"""Operating an installed node: start, stop, restart, scale, and what runs where.

Scaling and restarts keep requests flowing: a new process is started and must answer
``/healthz`` before Caddy sends it traffic; a process being removed is first taken out of
Caddy's upstreams, then stopped. Restarts go one process at a time.

A restart (``sygmax restart``, and the rolling restart of ``sygmax upgrade`` and ``--rollback``)
changes no Caddy configuration: each change would make Caddy close its idle client connections,
and a request a client writes on one at that instant gets no answer. Instead a process leaves
Caddy's rotation by *draining* (:func:`drain`): the node creates ``drain/<port>`` beside the
configuration file, the process answers Caddy's active check with 503 (``sygmax.app.healthz``)
while it keeps serving, and once Caddy has seen that and holds no request there any more, the
process is restarted; it rejoins when its check passes again (:func:`rejoin`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance import caddy
from appliance.health import process_health, readiness, upstream_check, wait_for
from appliance.layout import ApplianceState, LayoutError
from appliance.preflight import pid1_is_systemd
from appliance.supervisor import SERVICE_PROGRAMS, Supervisor, SupervisorError
from profiles import PROFILES

HEALTH_TIMEOUT = 90.0
DRAIN_SECONDS = 1.0
# sygmax.app.DRAIN_DIR: the markers live in this directory beside the configuration file.
DRAIN_DIR = "drain"
# Caddy has seen a process's new answer to its active check by then (one interval, one timeout,
# and a margin for a busy host).
ROTATION_SETTLE_S = caddy.CHECK_INTERVAL_S + caddy.CHECK_TIMEOUT_S + 0.5
DRAIN_CONFIRM_S = 5.0  # a process that still answers 200 after this cannot drain (an older release)
DRAIN_TIMEOUT = 30.0  # most a draining process waits for its requests (WebSockets never finish)


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
    Caddy first (both are Caddy configuration changes, made once, before any restart). Processes
    whose definition changed (a new release's venv, say) are re-created one at a time in profile
    order by :func:`_restart_one`, which changes no Caddy configuration: drained (when its profile
    has another process to take the traffic), replaced, healthy, back in rotation, then the next.
    A process that does not become healthy raises :class:`NodeError` and stays out of rotation
    (its check fails).
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
    # The upstream lists follow the process counts (and a release's new check settings) now, so
    # the restarts below find Caddy's configuration already final and never change it.
    if caddy.apply(state):
        changes.add("caddy configuration")
    if removed:
        time.sleep(DRAIN_SECONDS)  # let requests already routed there finish
    for name in removed:
        if progress:
            progress(f"stopping {name}")
        sup.remove(name)
        changes.add(f"removed {name}")
    order = [program for _, program, _ in state.all_processes()]
    for name in sorted(changed, key=lambda name: order.index(name) if name in order else len(order)):
        if progress:
            progress(f"restarting {name} (definition changed)")
        _restart_one(state, sup, name, recreate=True, health_timeout=health_timeout, progress=progress)
        changes.add(f"re-created {name}")
    # Every program of the node runs (a stopped one from a failed earlier run, say).
    for name, status in sup.status().items():
        if name in removed or status.running or status.state == "STARTING":
            continue
        if progress:
            progress(f"starting {name}")
        sup.start(name)
        changes.add(f"started {name}")
    if caddy.apply(state):  # nothing to do unless Caddy lost its configuration meanwhile
        changes.add("caddy configuration")
    wait_healthy(state, [program for _, program, _ in state.all_processes()])


def _restart_one(
    state: ApplianceState,
    sup: Supervisor,
    name: str,
    recreate: bool,
    health_timeout: float = HEALTH_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Restart (or, with ``recreate``, re-create from its new definition) one program, draining
    it first when it can leave Caddy's rotation, and wait until it is healthy and back in it."""
    port = _drainable(state, name)
    if port is not None:
        drain(state, port, progress)
    try:
        if recreate:
            sup.remove(name)
        else:
            sup.stop(name)
    finally:
        if port is not None:
            drain_marker(state, port).unlink(missing_ok=True)  # the next process starts in rotation
    if recreate:
        sup.add(name)
    else:
        sup.start(name)
    wait_healthy(state, [name], health_timeout)
    proxied = port_of(state, name) if _behind_proxy(state, name) else None
    if proxied is not None:
        rejoin(state, proxied)


def drain_marker(state: ApplianceState, port: int) -> Path:
    """The file that makes the process on ``port`` answer Caddy's check with 503 (sygmax.app)."""
    return state.layout.config_file.parent / DRAIN_DIR / str(port)


def _caddy_view(state: ApplianceState, port: int) -> dict | None:
    try:
        return caddy.CaddyAdmin(state.caddy_admin_url).upstreams().get(f"127.0.0.1:{port}", {})
    except caddy.CaddyError:
        return None


def drain(
    state: ApplianceState, port: int, progress: Callable[[str], None] | None = None
) -> bool:
    """Take the process on ``port`` out of Caddy's rotation without touching Caddy's configuration.

    True once Caddy sends it nothing more and holds no request there (or after
    :data:`DRAIN_TIMEOUT`: a WebSocket never finishes, and the process's own graceful stop still
    waits for what it holds); False if the process cannot drain (it does not answer, or runs a
    release from before draining): then it restarts in place and Caddy's retries cover the gap.
    """
    header = caddy.UPSTREAM_CHECK_HEADER
    marker = drain_marker(state, port)
    marker.parent.mkdir(mode=0o755, exist_ok=True)
    marker.touch()  # a marker left from before gets a fresh time: the process honours it
    if not wait_for(lambda: upstream_check(port, header) in (0, 503), DRAIN_CONFIRM_S):
        if progress:
            progress(f"127.0.0.1:{port} does not drain (an older release): restarting it in place")
        return False
    if upstream_check(port, header) == 0:
        return False  # not answering: Caddy's check fails as well, nothing is routed there
    time.sleep(ROTATION_SETTLE_S)  # Caddy's next check has seen the 503: it chooses the process no more

    def idle() -> bool:
        view = _caddy_view(state, port)
        return view is None or not view.get("num_requests")

    if not wait_for(idle, DRAIN_TIMEOUT, interval=0.1) and progress:
        progress(f"127.0.0.1:{port} still holds requests after {DRAIN_TIMEOUT:.0f}s (WebSockets?): stopping it")
    return True


def rejoin(state: ApplianceState, port: int, timeout: float = HEALTH_TIMEOUT) -> None:
    """Wait until Caddy sends the (healthy) process on ``port`` requests again: its check passes,
    Caddy's next check has seen that, and no passive failure keeps it out."""
    header = caddy.UPSTREAM_CHECK_HEADER
    if not wait_for(lambda: upstream_check(port, header) == 200, timeout):
        raise NodeError(
            f"127.0.0.1:{port} is alive but answers Caddy's check with {upstream_check(port, header)}; "
            f"is {drain_marker(state, port)} left over?"
        )
    time.sleep(ROTATION_SETTLE_S)

    def no_failures() -> bool:
        view = _caddy_view(state, port)
        return view is None or not view.get("fails")

    wait_for(no_failures, caddy.FAIL_DURATION_S + 1, interval=0.1)


def _behind_proxy(state: ApplianceState, program: str) -> bool:
    return any(
        name == program and profile.behind_proxy is not None for profile, name, _ in state.all_processes()
    )


def _drainable(state: ApplianceState, program: str) -> int | None:
    """The port of ``program`` if it can leave Caddy's rotation before it restarts; None if it
    cannot (not behind Caddy, or the only process of its profile): it restarts in place and
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
            if program in SERVICE_PROGRAMS:
                sup.restart(program)
                wait_healthy(state, [program])
            else:
                _restart_one(state, sup, program, recreate=False, progress=progress)
        except SupervisorError as exc:
            raise NodeError(str(exc)) from exc
        done.append(program)
    return done
