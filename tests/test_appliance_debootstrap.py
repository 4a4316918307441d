"""install.sh on a truly fresh Debian 12: a debootstrap root, entered with chroot.

Opt-in (about 10 minutes, needs the Debian mirror and PyPI): SYGMAX_TEST_DEBOOTSTRAP=1.
install.sh must install every system package and Python package it needs from the
registries and end with a working ``sygmax --help`` and ``sygmax doctor``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SYGMAX_TEST_DEBOOTSTRAP") != "1",
        reason="opt-in (about 10 minutes): SYGMAX_TEST_DEBOOTSTRAP=1",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root"),
]


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 sources or sources.list)."""
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        text = path.read_text() if path.exists() else ""
        for match in re.finditer(r"(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+/debian)\b", text):
            return match.group(1)
    return "http://deb.debian.org/debian"


def chrooted_processes(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == str(root):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def fresh_root():
    if not shutil.which("debootstrap"):
        pytest.fail("debootstrap is missing: apt-get install debootstrap")
    root = Path(tempfile.mkdtemp(prefix="sygmax-debootstrap-", dir="/var/tmp"))
    root.chmod(0o755)  # it becomes "/" inside the chroot
    mounted: list[Path] = []
    try:
        done = run(["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()], timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # Package scripts must not start daemons (they would share this host's ports), as in any chroot.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # The chroot shares this host's network: its resolver, and the CA bundle this host's
        # egress needs for HTTPS to PyPI (passed to pip as PIP_CERT, nothing installed system-wide).
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "host-ca-bundle.crt")
        for name, kind in (("proc", "proc"), ("sys", "sysfs")):
            if run(["mount", "-t", kind, name, str(root / name)]).returncode == 0:
                mounted.append(root / name)
        if run(["mount", "--bind", "/dev", str(root / "dev")]).returncode == 0:
            mounted.append(root / "dev")
        source = root / "opt/sygmax-src"
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                "__pycache__",
                "*.egg-info",
                ".pytest_cache",
                ".ruff_cache",
                ".hypothesis",
                "node_modules",
                ".import_linter_cache",
                "results",
            ),
        )
        yield root
    finally:
        for pid in chrooted_processes(root):  # whatever the chroot started and left running
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in reversed(mounted):
            run(["umount", "-l", str(path)])
        if all(not path.is_mount() for path in mounted):
            shutil.rmtree(root, ignore_errors=True)


def chroot(root: Path, script: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_CERT": "/host-ca-bundle.crt",
        "PIP_DEFAULT_TIMEOUT": "180",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    return run(["chroot", str(root), "/bin/bash", "-c", script], env=env, timeout=timeout)


def test_install_sh_on_fresh_debian_gives_a_working_cli(fresh_root):
    done = chroot(fresh_root, "cd /opt/sygmax-src && ./install.sh")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "Installed: 0." in done.stdout

    help_text = chroot(fresh_root, "sygmax --help")
    assert help_text.returncode == 0, help_text.stderr
    for command in ("install", "status", "scale", "doctor", "uninstall"):
        assert command in help_text.stdout

    doctor = chroot(fresh_root, "COLUMNS=200 sygmax doctor")
    # Exit 1 is allowed: ports may be taken by the host this chroot shares its network with.
    assert doctor.returncode in (0, 1), doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stdout + doctor.stderr
    for line in ("os", "postgresql version", "redis version", "caddy version", "supervisord version", "venv"):
        assert re.search(rf"│ {re.escape(line)}\s+│ ok", doctor.stdout), (line, doctor.stdout)
    assert "sudo sygmax install" in doctor.stdout
