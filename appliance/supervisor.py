"""The node's own supervisord: one per install, talking XML-RPC over its unix socket.

Every process of the node is a supervisor program: ``postgresql``, ``redis``, ``caddy`` and
one program per Sygmax process (``sygmax-api-1``, ``sygmax-api-2``, ``sygmax-realtime-1``,
...). The programs of one profile live in one file (``supervisor.d/sygmax-api.conf``) and
are addressed together by the CLI (``sygmax restart api``).

Why no ``[group:api]`` section: supervisord's ``update`` restarts *every* process of a
group whose definition changed, so adding a third api process to a group would restart the
other two and drop requests. Programs stay separate process groups; ``add`` and ``remove``
below change one process at a time.
"""

from __future__ import annotations

import os
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from appliance.layout import ApplianceState

SERVICE_PROGRAMS = ("postgresql", "redis", "caddy")


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: str  # RUNNING, STARTING, STOPPED, BACKOFF, FATAL, EXITED, ...
    pid: int
    uptime_s: int
    description: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


class Supervisor:
    def __init__(self, state: ApplianceState) -> None:
        self.state = state
        self.layout = state.layout

    # --- the daemon -------------------------------------------------------------------

    @property
    def supervisord_bin(self) -> str:
        return str(Path(self.state.venv) / "bin" / "supervisord")

    def _proxy(self):
        transport = SupervisorTransport(None, None, f"unix://{self.layout.supervisor_socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def alive(self) -> bool:
        if not self.layout.supervisor_socket.exists():
            return False
        try:
            return self._proxy().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def pid(self) -> int | None:
        try:
            return int(self._proxy().supervisor.getPID())
        except (OSError, xmlrpc.client.Error):
            return None

    def start_daemon(self, timeout: float = 20.0) -> bool:
        """Start supervisord if it is not running; True if it was started."""
        if self.alive():
            return False
        subprocess.run(
            [self.supervisord_bin, "-c", str(self.layout.supervisor_conf)],
            check=True,
            capture_output=True,
            env=_clean_env(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive():
                return True
            time.sleep(0.1)
        raise SupervisorError(f"supervisord did not come up; see {self.layout.log / 'supervisord.log'}")

    def shutdown(self, timeout: float = 60.0) -> bool:
        """Stop every program and supervisord itself; True if it was running."""
        if not self.alive():
            return False
        pid = self.pid()
        try:
            self._proxy().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is None or not _pid_alive(pid):
                return True
            time.sleep(0.1)
        raise SupervisorError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")

    # --- programs ---------------------------------------------------------------------

    def status(self) -> dict[str, ProgramStatus]:
        if not self.alive():
            return {}
        rows = self._proxy().supervisor.getAllProcessInfo()
        result = {}
        for row in rows:
            uptime = max(0, row["now"] - row["start"]) if row["statename"] == "RUNNING" else 0
            result[row["name"]] = ProgramStatus(
                row["name"], row["statename"], row["pid"], uptime, row["description"]
            )
        return result

    def reread(self) -> tuple[list[str], list[str], list[str]]:
        """Reload the config files; (added, changed, removed) program names."""
        [[added, changed, removed]] = self._proxy().supervisor.reloadConfig()
        return added, changed, removed

    def add(self, name: str) -> None:
        try:
            self._proxy().supervisor.addProcessGroup(name)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_ADDED" not in fault.faultString:
                raise SupervisorError(f"cannot add {name}: {fault.faultString}") from fault

    def remove(self, name: str) -> None:
        self.stop(name)
        try:
            self._proxy().supervisor.removeProcessGroup(name)
        except xmlrpc.client.Fault as fault:
            if "BAD_NAME" not in fault.faultString:
                raise SupervisorError(f"cannot remove {name}: {fault.faultString}") from fault

    def start(self, name: str) -> bool:
        try:
            self._proxy().supervisor.startProcess(name, True)
            return True
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" in fault.faultString:
                return False
            raise SupervisorError(
                f"{name} did not start ({fault.faultString}); see {self.layout.log / (name + '.log')}"
            ) from fault

    def stop(self, name: str) -> bool:
        try:
            self._proxy().supervisor.stopProcess(name, True)
            return True
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" in fault.faultString or "BAD_NAME" in fault.faultString:
                return False
            raise SupervisorError(f"cannot stop {name}: {fault.faultString}") from fault

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def apply(self) -> tuple[list[str], list[str], list[str]]:
        """Like ``supervisorctl update``, one program at a time: add new, re-create changed, drop removed."""
        added, changed, removed = self.reread()
        for name in removed:
            self.remove(name)
        for name in changed:
            self.remove(name)
            self.add(name)
        for name in added:
            self.add(name)
        return added, changed, removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_env() -> dict[str, str]:
    """supervisord and its programs must not inherit this shell's SYGMAX_* overrides."""
    return {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
