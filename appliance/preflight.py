"""Checks made before anything changes: OS, root, free ports, disk, memory, init system.

Each check returns :class:`Finding` objects; ``install`` refuses on any ``error`` and
``doctor`` prints all of them with the command that fixes each.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

SUPPORTED_OS = {("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}
MIN_FREE_DISK = 2 * 1024**3
MIN_MEMORY = 1 * 1024**3


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # "ok" | "warning" | "error"
    message: str
    fix: str = ""  # the command (or action) that fixes it

    @property
    def ok(self) -> bool:
        return self.level == "ok"


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def check_os(force: bool = False, os_release: Path = Path("/etc/os-release")) -> Finding:
    info = read_os_release(os_release)
    name = info.get("PRETTY_NAME", "an unknown system")
    if (info.get("ID", ""), info.get("VERSION_ID", "")) in SUPPORTED_OS:
        return Finding("os", "ok", name)
    if force:
        return Finding("os", "warning", f"{name} is not supported; going on because of --force-os")
    return Finding(
        "os",
        "error",
        f"unsupported OS {name}: Sygmax supports Debian 12 and Ubuntu 22.04/24.04",
        "install on Debian 12 or Ubuntu 22.04/24.04 (or pass --force-os to try anyway)",
    )


def check_root(euid: int | None = None) -> Finding:
    if (os.geteuid() if euid is None else euid) == 0:
        return Finding("root", "ok", "running as root")
    return Finding(
        "root",
        "error",
        "sygmax install must run as root (it creates users, services and files)",
        "sudo sygmax install ...",
    )


def pid1_is_systemd() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def check_init() -> Finding:
    if pid1_is_systemd():
        return Finding("init", "ok", "systemd is PID 1: a systemd unit starts the node's supervisord at boot")
    return Finding("init", "ok", "no systemd: supervisord runs every service; after a reboot run `sygmax up`")


def listeners() -> dict[int, list[psutil.Process | None]]:
    """Listening TCP ports -> the processes holding them (None where not visible)."""
    found: dict[int, list[psutil.Process | None]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        process = None
        if conn.pid:
            try:
                process = psutil.Process(conn.pid)
            except psutil.Error:
                process = None
        found.setdefault(conn.laddr.port, []).append(process)
    return found


def describe(process: psutil.Process | None) -> str:
    if process is None:
        return "an unknown process"
    try:
        return f"{process.name()} (pid {process.pid}, {' '.join(process.cmdline()[:3])})"
    except psutil.Error:
        return f"pid {process.pid}"


def _descendants(pid: int | None) -> set[int]:
    if not pid:
        return set()
    try:
        root = psutil.Process(pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def check_ports(ports: dict[int, str], own_pid: int | None = None) -> list[Finding]:
    """Ports we need that another program holds. Ports held by this node's supervisord tree are fine."""
    ours = _descendants(own_pid)
    held = listeners()
    findings = []
    for port, purpose in sorted(ports.items()):
        holders = [p for p in held.get(port, []) if p is None or p.pid not in ours]
        if holders:
            who = ", ".join(sorted({describe(p) for p in holders}))
            findings.append(
                Finding(
                    f"port {port}",
                    "error",
                    f"port {port} (for {purpose}) is taken by {who}",
                    f"stop that program (ss -ltnp 'sport = :{port}' shows it) or choose "
                    f"other ports (--http-port/--https-port/--base-port)",
                )
            )
    if not findings:
        findings.append(Finding("ports", "ok", f"{len(ports)} ports free or held by this node"))
    return findings


def _gib(size: int, digits: int = 1) -> str:
    """A byte count in GiB for a message: ``_gib(3 * 1024**3)`` is ``"3.0 GiB"``."""
    return f"{size / 1024**3:.{digits}f} GiB"


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_disk(path: Path, needed: int = MIN_FREE_DISK) -> Finding:
    free = shutil.disk_usage(_existing_parent(path)).free
    if free >= needed:
        return Finding("disk", "ok", f"{_gib(free)} free under {path}")
    return Finding(
        "disk",
        "error",
        f"only {_gib(free)} free under {path}; Sygmax needs at least {_gib(needed)}",
        f"free space (du -xh {path} | sort -h | tail) or install with --prefix on a larger disk",
    )


def check_memory(needed: int = MIN_MEMORY) -> Finding:
    total = psutil.virtual_memory().total
    if total >= needed:
        return Finding("memory", "ok", f"{_gib(total)} of memory")
    return Finding(
        "memory",
        "warning",
        f"{_gib(total)} of memory; a small node wants {_gib(needed, digits=0)}",
        "sygmax scale api=1 (fewer processes)",
    )


def check_commands(commands: dict[str, str]) -> list[Finding]:
    """Programs the node needs on PATH (or at a fixed path): name -> apt package."""
    missing = [
        (name, package)
        for name, package in commands.items()
        if not (shutil.which(name) or Path(name).exists())
    ]
    if not missing:
        return [Finding("packages", "ok", "postgresql, redis, caddy and supervisor are installed")]
    return [
        Finding(
            f"package {package}",
            "error",
            f"{name} not found (apt package {package})",
            f"apt-get install {package}  (or re-run: sudo ./install.sh)",
        )
        for name, package in missing
    ]


def check_venv_access(venv: str) -> Finding:
    """The node's processes run as an unprivileged user: every directory up to the venv's real
    interpreter (and its standard library) must be open to other users."""
    import stat
    import sys

    python = Path(venv) / "bin" / "python"
    real = python.resolve()
    candidates = [real, Path(venv) / "bin" / "sygmax"]
    if Path(sys.prefix) == Path(venv):
        candidates.append(Path(sys.base_prefix) / "lib")
    for target in candidates:
        path = target
        while True:
            try:
                mode = path.stat().st_mode
            except OSError:
                break
            needed = stat.S_IXOTH if path.is_dir() or path != target else stat.S_IROTH
            if not mode & needed:
                return Finding(
                    "venv",
                    "error",
                    f"the service user cannot use {python} ({path} is closed to other users)",
                    "recreate the environment with the system Python: sudo ./install.sh "
                    "(it uses /usr/bin/python3)",
                )
            if path.parent == path:
                break
            path = path.parent
    return Finding("venv", "ok", f"{python} -> {real}")


def check_prefix_access(prefix: Path) -> Finding:
    """The node's service users (postgres, redis, caddy, sygmax) must be able to reach the prefix."""
    import stat

    path = prefix
    while not path.exists():
        path = path.parent
    while True:
        if not path.stat().st_mode & stat.S_IXOTH:
            return Finding(
                "prefix",
                "error",
                f"{path} is closed to other users, so the node's service users cannot reach {prefix}",
                f"chmod o+x {path}, or choose a --prefix under an open directory",
            )
        if path.parent == path:
            return Finding("prefix", "ok", f"{prefix} is reachable by the service users")
        path = path.parent
