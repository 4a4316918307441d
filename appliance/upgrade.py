"""``sygmax upgrade``: a new release beside the old one, then a rolling switch that cannot strand the node.

Releases live side by side (blue/green virtual environments): the serving one is
``state.venv`` (the venv ``sygmax install`` used, or ``<opt>/deployments/<version>`` after an
upgrade), ``<opt>/deployments/current`` links to it, and ``state.previous_venv`` remembers
the one before, which ``sygmax upgrade --rollback`` returns to.

Stage 1 runs from the installed release (the ``sygmax`` the operator typed):

1. :func:`prepare`: resolve ``--to`` (a checkout, a wheel or sdist, or a version on the package
   index), refuse a version that is not newer, and run the pre-flight checks that change
   nothing: the node is healthy, the running release has no pending migration, the event bus
   has no backlog worth waiting for, and there is disk for the new release.
2. :func:`pre_upgrade_backup`: an automatic backup (:func:`appliance.backup.create_backup`,
   reason ``pre-upgrade``), taken by the serving release so the archive names the version and
   the migrations it restores with.
3. :func:`install_release`: the new release's venv is a hard-link clone of the serving venv
   with the new package installed over it by pip (see :func:`clone_venv` for why that is safe
   and why it is cheap), then checked: it reports the expected version, and the service user
   can run it.
4. Stage 2 is started from the **new** release (:func:`stage2_command`), so the checks, the
   migrations and the switch are done by the code that knows the new schema and the new
   process definitions (Zulip's ``upgrade-zulip-stage-2`` does the same).

Stage 2 (:func:`finish`), in the new release:

5. The new release must accept the node's configuration, the migration history must match,
   and no pending migration may be a *contract* step the running release still needs
   (:func:`contract_problems`; the rule is in docs/architecture.md).
6. Migrations, in one transaction: expand-only by the rule above, so the old processes keep
   working on the new schema while the restart rolls, and after a rollback.
7. The switch (:func:`switch`): the supervisor programs are rewritten to run the new venv and
   :func:`appliance.node.converge_programs` (the code ``sygmax scale`` uses) re-creates them one
   at a time: drained out of Caddy's rotation (its health answer, never a Caddy configuration
   change, which would close clients' idle connections), replaced, healthy, back in rotation.
   If a process of the new release does not become healthy, the same steps run back to the
   previous venv: the old release serves again and the (expanded) data is untouched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from appliance.layout import ApplianceState
from appliance.node import HEALTH_TIMEOUT, Changes, NodeError, converge_programs, ensure_supervisor
from appliance.preflight import Finding, check_disk, check_root, check_venv_access
from appliance.supervisor import Supervisor, SupervisorError

DISTRIBUTION = "sygmax"
# The new package, pip's build and the pre-upgrade backup's scratch space; a venv copied across
# file systems (no hard links) needs its own size on top.
MIN_UPGRADE_DISK = 1024**3
MAX_EVENT_BACKLOG = 1000
BACKLOG_WAIT_S = 60.0
PIP_TIMEOUT_S = 1800


class UpgradeError(RuntimeError):
    """The upgrade stopped; the message says what is serving now and what to do."""


class UpgradeRefused(UpgradeError):
    """A pre-flight check failed: nothing was changed."""

    def __init__(self, message: str, findings: Sequence[Finding] = ()) -> None:
        self.findings = list(findings)
        super().__init__(message)


class RolledBack(UpgradeError):
    """The new release failed its health checks; the previous one serves again."""


class Reporter:
    """What the CLI draws; the default draws nothing."""

    def step(self, title: str) -> None: ...

    def note(self, message: str) -> None: ...


# --- what to upgrade to -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    spec: str  # what pip installs: a path, or "sygmax==X.Y.Z"
    version: str
    source: str  # for people: "checkout /src", "wheel ...", "package index"


def resolve_target(to: str | None, python: str | None = None) -> Target:
    """``--to``: a checkout (a directory with pyproject.toml), a wheel or sdist file, or a version.

    Without ``--to``, the newest ``sygmax`` on the package index pip is configured with.
    """
    if to is None:
        latest = _latest_on_index(python or sys.executable)
        return Target(f"{DISTRIBUTION}=={latest}", latest, "package index")
    path = Path(to).expanduser()
    if path.is_dir():
        return _checkout_target(path.resolve())
    if path.is_file():
        return _archive_target(path.resolve())
    try:
        version = Version(to)
    except InvalidVersion:
        raise UpgradeRefused(
            f"--to {to}: no such file or directory, and not a version number either "
            "(give a checkout, a .whl/.tar.gz file, or a version such as 0.2.0)"
        ) from None
    return Target(f"{DISTRIBUTION}=={version}", str(version), "package index")


def _checkout_target(path: Path) -> Target:
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        raise UpgradeRefused(f"--to {path}: not a Sygmax checkout (no pyproject.toml)")
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpgradeRefused(f"--to {path}: cannot read pyproject.toml: {exc}") from exc
    if project.get("name") != DISTRIBUTION:
        raise UpgradeRefused(f"--to {path}: the project there is {project.get('name')!r}, not {DISTRIBUTION}")
    try:
        version = str(Version(str(project.get("version", ""))))
    except InvalidVersion:
        raise UpgradeRefused(f"--to {path}: pyproject.toml has no valid static [project] version") from None
    return Target(str(path), version, f"checkout {path}")


def _archive_target(path: Path) -> Target:
    try:
        if path.name.endswith(".whl"):
            name, version, *_ = parse_wheel_filename(path.name)
            kind = "wheel"
        elif path.name.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(path.name)
            kind = "sdist"
        else:
            raise UpgradeRefused(f"--to {path}: expected a .whl, .tar.gz or .zip of {DISTRIBUTION}")
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise UpgradeRefused(f"--to {path}: {exc}") from exc
    if name != DISTRIBUTION:
        raise UpgradeRefused(f"--to {path}: that is a package of {name}, not {DISTRIBUTION}")
    return Target(str(path), str(version), f"{kind} {path.name}")


def _latest_on_index(python: str) -> str:
    done = subprocess.run(
        [python, "-m", "pip", "index", "versions", DISTRIBUTION, "--disable-pip-version-check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.match(rf"{DISTRIBUTION} \(([^)]+)\)", done.stdout.strip())
    if done.returncode != 0 or not match:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise UpgradeRefused(
            "cannot find the newest Sygmax on the package index"
            + (f" ({detail[-1]})" if detail else "")
            + "; give one with --to PATH_OR_VERSION"
        )
    return match.group(1)


def running_version(state: ApplianceState) -> str:
    """The serving release's version: recorded by install/upgrade, else asked from its venv."""
    if state.version:
        return state.version
    done = subprocess.run(
        [state.sygmax_bin, "version"], check=False, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise UpgradeRefused(f"cannot tell which version serves ({state.sygmax_bin} version failed)")
    return done.stdout.strip()


def check_newer(target: Target, current: str) -> None:
    if Version(target.version) == Version(current):
        raise UpgradeRefused(f"Sygmax {current} is already installed ({target.source}); nothing to upgrade")
    if Version(target.version) < Version(current):
        raise UpgradeRefused(
            f"{target.source} is Sygmax {target.version}, older than the installed {current}: a "
            "downgrade would run old code on a newer schema; use `sygmax upgrade --rollback` to return "
            "to the release that served before, or restore a backup"
        )


# --- pre-flight ---------------------------------------------------------------------------


@dataclass
class Plan:
    state: ApplianceState
    target: Target
    current: str
    findings: list[Finding] = field(default_factory=list)


def prepare(state: ApplianceState, to: str | None) -> Plan:
    """Resolve the target and run every check that changes nothing; :class:`UpgradeRefused` if one fails."""
    target = resolve_target(to, str(Path(state.venv) / "bin" / "python"))
    current = running_version(state)
    check_newer(target, current)
    findings = preflight(state)
    errors = [finding for finding in findings if finding.level == "error"]
    if errors:
        raise UpgradeRefused(
            "pre-flight failed: " + "; ".join(finding.message for finding in errors), findings
        )
    return Plan(state, target, current, findings)


def preflight(state: ApplianceState) -> list[Finding]:
    from appliance.status import collect

    findings = [check_root()]
    status = collect(state, migrations=True)
    if not status.supervisor_running:
        findings.append(
            Finding("node", "error", "the node is not running (supervisord is down)", "sygmax up")
        )
        return findings
    sick = [
        f"{row.program}: {row.state.lower()}, {row.health.detail}"
        for row in status.processes
        if not row.health.ok
    ]
    sick += [f"{name}: {probe.detail}" for name, probe in status.services.items() if not probe.ok]
    if sick:
        findings.append(
            Finding(
                "node",
                "error",
                "the node is not healthy (" + "; ".join(sick) + ")",
                "sygmax status; sygmax doctor",
            )
        )
    else:
        findings.append(Finding("node", "ok", f"{len(status.processes)} processes and every service healthy"))
    if status.pending_migrations is None:
        findings.append(
            Finding(
                "migrations",
                "error",
                f"cannot read the migration state: {status.migrations_error}",
                "sygmax doctor",
            )
        )
    elif status.pending_migrations:
        findings.append(
            Finding(
                "migrations",
                "error",
                f"the running release has pending migrations ({', '.join(status.pending_migrations)})",
                "sygmax migrate, then upgrade",
            )
        )
    else:
        findings.append(Finding("migrations", "ok", "no pending migrations"))
    findings.append(check_disk(state.layout.opt, MIN_UPGRADE_DISK + _copy_cost(state)))
    findings.append(check_event_backlog(state))
    if state.processes.get("api", 0) < 2:
        findings.append(
            Finding(
                "api processes",
                "warning",
                "one api process: it restarts in place, so requests wait on Caddy's retries (5 s) "
                "while it starts",
                "sygmax scale api=2 before upgrading",
            )
        )
    return findings


def _copy_cost(state: ApplianceState) -> int:
    """Bytes a new release costs beyond the package: nothing with hard links, the venv's size without."""
    venv = Path(state.venv)
    target = state.layout.opt
    while not target.exists():
        target = target.parent
    if venv.exists() and venv.stat().st_dev == target.stat().st_dev:
        return 0
    return sum(path.stat().st_size for path in venv.rglob("*") if path.is_file() and not path.is_symlink())


def event_backlog(state: ApplianceState) -> dict[str, int] | None:
    """Unfinished events (lag + pending) per ``stream/group``, from a process's /metrics; None if
    unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    ports = [port for _, _, port in state.all_processes()]
    if not ports:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    backlog: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "sygmax_event_bus_lag":
            for sample in family.samples:
                key = f"{sample.labels.get('stream', '?')}/{sample.labels.get('group', '?')}"
                backlog[key] = backlog.get(key, 0) + int(sample.value)
    return backlog


def check_event_backlog(
    state: ApplianceState, limit: int = MAX_EVENT_BACKLOG, wait_s: float = BACKLOG_WAIT_S
) -> Finding:
    """Events survive a restart (consumer groups, reclaim), but a large backlog means stuck or slow
    workers: the upgrade would restart them mid-flood. Wait a little for it to fall, then refuse."""
    deadline = time.monotonic() + wait_s
    while True:
        backlog = event_backlog(state)
        if backlog is None:
            return Finding(
                "event bus",
                "error",
                "cannot read the event-bus backlog from /metrics",
                "sygmax status; sygmax logs api",
            )
        total = sum(backlog.values())
        if total <= limit:
            return Finding("event bus", "ok", f"{total} event(s) waiting")
        if time.monotonic() >= deadline:
            worst = ", ".join(
                f"{key}: {count}" for key, count in sorted(backlog.items(), key=lambda kv: -kv[1])[:3]
            )
            return Finding(
                "event bus",
                "error",
                f"{total} events wait for the workers after {wait_s:.0f}s (more than {limit}; {worst})",
                "sygmax logs worker; sygmax scale worker=N; upgrade once the backlog has drained",
            )
        time.sleep(2)


# --- the expand/contract rule -------------------------------------------------------------

CONTRACT_MARK = re.compile(r"^--\s*sygmax:\s*contract\s+since\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
# Statements that take away something a running release may still read or write.
DESTRUCTIVE = re.compile(
    r"\b(DROP\s+TABLE|DROP\s+COLUMN|RENAME\s+(?:COLUMN\s+\S+\s+)?TO|ALTER\s+COLUMN\s+\S+\s+(?:SET\s+DATA\s+)?TYPE"
    r"|SET\s+NOT\s+NULL)\b",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def contract_since(sql: str) -> str | None:
    """The release a contract step waits for (``-- sygmax: contract since 0.3.0``), or None."""
    match = CONTRACT_MARK.search(sql)
    return match.group(1) if match else None


def destructive_statements(sql: str) -> list[str]:
    return sorted(
        {" ".join(match.group(1).upper().split()) for match in DESTRUCTIVE.finditer(_COMMENT.sub(" ", sql))}
    )


def contract_problems(steps: Sequence, running: str) -> list[str]:
    """Why the pending ``steps`` (``sygmax.db.migrations.Step``) cannot run while ``running`` serves.

    Migrations run before the rolling restart, with the old release still serving, and stay
    after a rollback: a step that removes or narrows something (DROP TABLE/COLUMN, RENAME,
    a column TYPE change, SET NOT NULL) must say which release stopped needing it
    (``-- sygmax: contract since X.Y.Z``), and runs only on a node already serving X.Y.Z or later.
    """
    problems = []
    for step in steps:
        since = contract_since(step.sql)
        found = destructive_statements(step.sql)
        where = f"{step.module}/{step.name}"
        if since is None:
            if found:
                problems.append(
                    f"{where} removes or narrows schema ({', '.join(found)}) but is not marked as a contract "
                    "step (`-- sygmax: contract since X.Y.Z`: the first release that no longer uses it)"
                )
            continue
        try:
            needed = Version(since)
        except InvalidVersion:
            problems.append(f"{where}: `contract since {since}` is not a version")
            continue
        if Version(running) < needed:
            problems.append(
                f"{where} is a contract step for releases from {needed} on, but this node runs {running}, "
                f"which still uses what it removes: upgrade to a {needed.major}.{needed.minor}.x "
                "release first"
            )
    return problems


# --- installing a release beside the old one ----------------------------------------------


def release_dir(state: ApplianceState, version: str) -> Path:
    return state.layout.releases / version


def clone_venv(source: Path, target: Path) -> bool:
    """Copy the venv ``source`` to ``target`` as hard links (a real copy across file systems);
    True if hard links were used.

    Why hard links are safe here: nothing ever writes into an existing file of a venv. pip
    removes a file (unlink, or rename into a stash) before writing its replacement, Python
    writes bytecode through a temporary file and a rename, and :func:`_relocate` below does the
    same. So installing the new package into the clone creates new inodes in the clone and the
    serving venv's files are never touched, which keeps rollback a matter of pointing the
    processes back. It is cheap: no bytes copied, a few seconds for tens of thousands of files,
    and pip then installs only the Sygmax package (its dependencies are already satisfied).
    """
    linked = True
    target.mkdir(parents=True)
    for root, dirs, files in os.walk(source):
        here = Path(root)
        there = target / here.relative_to(source)
        for name in dirs:
            src = here / name
            if src.is_symlink():
                os.symlink(os.readlink(src), there / name)
            else:
                (there / name).mkdir()
                shutil.copystat(src, there / name)
        dirs[:] = [name for name in dirs if not (here / name).is_symlink()]
        for name in files:
            src, dst = here / name, there / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            if linked:
                try:
                    os.link(src, dst)
                    continue
                except OSError:
                    linked = False  # another file system (EXDEV) or links not allowed
            shutil.copy2(src, dst)
    _relocate(source, target)
    return linked


def _relocate(source: Path, target: Path) -> None:
    """Point the clone's scripts (shebangs, activate) and pyvenv.cfg at the clone, not the original."""
    old, new = str(source).encode(), str(target).encode()
    candidates = [path for path in (target / "bin").iterdir() if path.is_file() and not path.is_symlink()]
    candidates.append(target / "pyvenv.cfg")
    for path in candidates:
        data = path.read_bytes()
        if old not in data or b"\0" in data[:8192]:
            continue  # a compiled program, or nothing to change
        if not (data.startswith(b"#!") or path.name.startswith("activate") or path.name == "pyvenv.cfg"):
            continue
        staged = path.with_name(path.name + ".relocating")
        staged.write_bytes(data.replace(old, new))
        shutil.copymode(path, staged)
        os.replace(staged, path)  # a new inode: the original's hard link keeps its own content


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def install_release(state: ApplianceState, target: Target, reporter: Reporter | None = None) -> Path:
    """The new release's venv in ``deployments/<version>``, checked; :class:`UpgradeError` if it
    cannot be made."""
    reporter = reporter or Reporter()
    venv = release_dir(state, target.version)
    if venv.resolve() == Path(state.venv).resolve():
        raise UpgradeRefused(f"{venv} is the serving release")
    if venv.exists() or venv.is_symlink():
        reporter.note(f"removing {venv} left by an earlier attempt")
        remove_release(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The processes run as the service user: whatever the caller's umask, the release must be readable.
    with _umask(0o022):
        started = time.monotonic()
        linked = clone_venv(Path(state.venv), venv)
        reporter.note(
            f"cloned {state.venv} in {time.monotonic() - started:.1f}s ("
            + ("hard links" if linked else "copied: another file system")
            + ")"
        )
        done = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                target.spec,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            env=_pip_environ(),
        )
    if done.returncode != 0:
        remove_release(venv)
        raise UpgradeError(
            f"pip could not install {target.source}; nothing was changed:\n"
            + (done.stderr or done.stdout).strip()[-2000:]
        )
    reporter.note(f"installed {target.source} into {venv}")
    version = subprocess.run(
        [str(venv / "bin" / "sygmax"), "version"], check=False, capture_output=True, text=True, timeout=120
    )
    found = version.stdout.strip()
    if version.returncode != 0 or found != target.version:
        remove_release(venv)
        raise UpgradeError(
            "the new release does not run "
            f"(`sygmax version` said {found or version.stderr.strip()[-500:]!r}, "
            f"expected {target.version}); nothing was changed"
        )
    access = check_venv_access(str(venv))
    if not access.ok:
        remove_release(venv)
        raise UpgradeError(f"{access.message}; {access.fix}; nothing was changed")
    return venv


def _pip_environ() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SYGMAX_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def remove_release(venv: Path) -> None:
    if venv.is_symlink():
        venv.unlink()
    elif venv.exists():
        shutil.rmtree(venv)


def stage2_command(state: ApplianceState, venv: Path, health_timeout: float) -> list[str]:
    command = [
        str(venv / "bin" / "sygmax"),
        "upgrade",
        "--finish-from",
        state.venv,
        "--prefix",
        str(state.layout.prefix),
        "--yes",
        "--health-timeout",
        str(health_timeout),
    ]
    return command


def run_stage2(state: ApplianceState, venv: Path, health_timeout: float) -> int:
    """Stage 2 from the new release, on this terminal; a release left unused afterwards is removed."""
    done = subprocess.run(stage2_command(state, venv, health_timeout), check=False)
    after = ApplianceState.from_json(state.layout.state_file.read_text())
    if Path(after.venv) != venv and Path(after.previous_venv or "/nonexistent") != venv:
        remove_release(venv)
    return done.returncode


# --- stage 2: in the new release ----------------------------------------------------------


@dataclass
class UpgradeReport:
    old_version: str
    new_version: str
    migrations: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def node_environment(state: ApplianceState) -> Iterator[None]:
    """This process reads the node's configuration (``sygmax.app.load_configuration``)."""
    saved = os.environ.get("SYGMAX_CONFIG")
    os.environ["SYGMAX_CONFIG"] = str(state.layout.config_file)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SYGMAX_CONFIG", None)
        else:
            os.environ["SYGMAX_CONFIG"] = saved


def migration_plan(state: ApplianceState, running: str) -> tuple[str, list]:
    """(database URL, pending steps of this release), after the stage-2 checks;
    :class:`UpgradeRefused` if not."""
    from sygmax.app import load_configuration
    from sygmax.config import ConfigError
    from sygmax.db.migrations import MigrationError, pending, plan
    from sygmax.plugins import PluginError

    with node_environment(state):
        try:
            settings, plugins = load_configuration()
        except (ConfigError, PluginError) as exc:
            raise UpgradeRefused(f"the new release does not accept this node's configuration: {exc}") from exc
    try:
        steps = plan([(plugin.name, plugin.migrations) for plugin in plugins.values()])
        todo = asyncio.run(pending(settings.database.url, steps))
    except MigrationError as exc:
        raise UpgradeRefused(f"the new release's migrations do not match this database: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise UpgradeRefused(f"cannot reach the database: {exc}") from exc
    problems = contract_problems(todo, running)
    if problems:
        raise UpgradeRefused(
            "the new release's migrations break the expand-then-contract rule: " + "; ".join(problems)
        )
    return settings.database.url, todo


def pre_upgrade_backup(state: ApplianceState, reporter: Reporter | None = None) -> str:
    """An archive of the node before anything changes, taken by the serving release (so the archive
    names the version and migrations it can be restored with); its location."""
    reporter = reporter or Reporter()
    from appliance.backup import create_backup
    from appliance.backup.errors import BackupError
    from sygmax.app import load_configuration

    with node_environment(state):
        settings, _ = load_configuration()
        try:
            result = create_backup(settings, reason="pre-upgrade")
        except BackupError as exc:
            raise UpgradeRefused(f"the pre-upgrade backup failed, so nothing was changed: {exc}") from exc
        except ImportError as exc:  # a release built without the backup module's parts
            raise UpgradeRefused(
                f"this release cannot take the pre-upgrade backup ({exc}); take one yourself "
                "(sygmax backup create) and pass --skip-backup"
            ) from exc
    reporter.note(f"backup written: {result.location}")
    return result.location


def finish(
    state: ApplianceState,
    old_venv: Path,
    reporter: Reporter | None = None,
    health_timeout: float = HEALTH_TIMEOUT,
) -> UpgradeReport:
    """Stage 2, run from the new release's venv (``sys.prefix``)."""
    from sygmax import __version__
    from sygmax.db.migrations import MigrationError, migrate

    reporter = reporter or Reporter()
    started = time.monotonic()
    new_venv = Path(sys.prefix)
    if Path(state.venv).resolve() != old_venv.resolve():
        raise UpgradeRefused(
            f"{old_venv} is not the serving release ({state.venv} is); start again with sygmax upgrade"
        )
    if new_venv.resolve() == old_venv.resolve():
        raise UpgradeRefused("stage 2 must run from the new release's venv")
    old_version = running_version(state)
    check_newer(Target(str(new_venv), __version__, f"release {new_venv}"), old_version)
    report = UpgradeReport(old_version, __version__)

    reporter.step("Checking the new release against this node")
    dsn, todo = migration_plan(state, old_version)
    reporter.note(
        f"{len(todo)} pending migration(s)"
        + (": " + ", ".join(f"{s.module}/{s.name}" for s in todo) if todo else "")
    )

    reporter.step("Applying migrations (expand only: the running release keeps working)")
    try:
        applied = asyncio.run(migrate(dsn, todo))
    except MigrationError as exc:
        raise UpgradeRefused(
            f"migrations failed and were rolled back: {exc}; {old_version} still serves"
        ) from exc
    report.migrations = [f"{step.module}/{step.name}" for step in applied]

    reporter.step(f"Rolling restart onto {__version__}")
    report.restarted = switch(state, new_venv, __version__, reporter, health_timeout)
    report.seconds = time.monotonic() - started
    return report


def switch(
    state: ApplianceState,
    venv: Path,
    version: str,
    reporter: Reporter,
    health_timeout: float = HEALTH_TIMEOUT,
) -> list[str]:
    """Run every process from ``venv``, one at a time; on a failed health check, back to the release
    that served (:class:`RolledBack`). Returns the programs re-created."""
    from appliance.caddy import CaddyError
    from appliance.runner import ProvisionError

    ensure_supervisor(state)
    old_venv, old_version = state.venv, running_version(state)
    previous = (state.previous_venv, state.previous_version)
    state.previous_venv, state.previous_version = old_venv, old_version
    state.venv, state.version = str(venv), version
    state.save()  # if this process dies half-way, `sygmax upgrade --rollback` knows where to return
    try:
        changes = _roll(state, reporter, health_timeout)
    except (NodeError, SupervisorError, ProvisionError, CaddyError) as failure:
        reporter.step(f"{version} failed: {failure}")
        reporter.step(f"Rolling back to {old_version}")
        state.venv, state.version = old_venv, old_version
        state.previous_venv, state.previous_version = previous
        state.save()
        try:
            _roll(state, reporter, HEALTH_TIMEOUT)
        except (NodeError, SupervisorError, ProvisionError, CaddyError) as second:
            raise UpgradeError(
                f"{version} failed ({failure}) and returning to {old_version} failed too ({second}); "
                "see: sygmax status; sygmax logs"
            ) from second
        _point_current(state)
        raise RolledBack(
            f"{version} failed its health check ({failure}); rolled back: {old_version} serves"
        ) from failure
    _point_current(state)
    _prune(state)
    return changes


def _roll(state: ApplianceState, reporter: Reporter, health_timeout: float) -> list[str]:
    from appliance.runner import extravars, run_playbook
    from appliance.secrets import load_or_create_secrets, render_config

    node_secrets, _ = load_or_create_secrets(state.layout.secrets_file)
    variables = extravars(
        state, node_secrets, render_config(state, node_secrets), manage_packages=False, migrate=False
    )
    run_playbook(state, variables, tags="processes")
    changes = Changes()
    converge_programs(state, changes, progress=reporter.note, health_timeout=health_timeout)
    return [item.removeprefix("re-created ") for item in changes.items if item.startswith("re-created ")]


def _point_current(state: ApplianceState) -> None:
    """``deployments/current`` -> the serving venv; ``/usr/local/bin/sygmax`` follows on the host's
    own install."""
    releases = state.layout.releases
    releases.mkdir(parents=True, exist_ok=True)
    staged = releases / ".current"
    if staged.is_symlink() or staged.exists():
        staged.unlink()
    staged.symlink_to(state.venv)
    os.replace(staged, releases / "current")
    on_path = Path("/usr/local/bin/sygmax")
    if state.layout.prefix == Path("/") and on_path.is_symlink():
        staged = on_path.with_name(".sygmax.relinking")
        if staged.is_symlink():
            staged.unlink()
        staged.symlink_to(releases / "current" / "bin" / "sygmax")
        os.replace(staged, on_path)


def _prune(state: ApplianceState) -> None:
    """Keep the serving release, the previous one and the one supervisord itself runs from."""
    keep = {Path(path).resolve() for path in (state.venv, state.previous_venv) if path}
    keep |= {path.resolve() for path in _supervisord_venvs(state)}
    releases = state.layout.releases
    for path in releases.iterdir() if releases.is_dir() else ():
        if path.name in ("current", ".current") or path.is_symlink() or path.resolve() in keep:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _supervisord_venvs(state: ApplianceState) -> list[Path]:
    import psutil

    pid = Supervisor(state).pid()
    if pid is None:
        return []
    try:
        return [
            Path(arg).parent.parent
            for arg in psutil.Process(pid).cmdline()
            if arg.endswith("/bin/supervisord")
        ]
    except psutil.Error:
        return []


# --- by hand: back to the release before ----------------------------------------------------


def rollback_target(state: ApplianceState) -> tuple[Path, str]:
    if not state.previous_venv:
        raise UpgradeRefused("no earlier release is recorded on this node: nothing to roll back to")
    venv = Path(state.previous_venv)
    if not (venv / "bin" / "sygmax").exists():
        raise UpgradeRefused(f"the previous release {state.previous_version} is gone ({venv} is missing)")
    access = check_venv_access(str(venv))
    if not access.ok:
        raise UpgradeRefused(f"{access.message}; {access.fix}")
    return venv, state.previous_version


def rollback(
    state: ApplianceState, reporter: Reporter | None = None, health_timeout: float = HEALTH_TIMEOUT
) -> tuple[str, str, list[str]]:
    """Switch back to the previous release with the same rolling restart; (from, to, programs).

    Schema changes stay: by the expand-then-contract rule the previous release works on them.
    Running it again switches forward again.
    """
    reporter = reporter or Reporter()
    venv, version = rollback_target(state)
    current = running_version(state)
    reporter.step(f"Rolling restart back onto {version}")
    return current, version, switch(state, venv, version, reporter, health_timeout)
