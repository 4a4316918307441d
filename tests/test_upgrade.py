"""`sygmax upgrade` and `sygmax upgrade --rollback`.

The first part needs no node: refusals through typer's CliRunner (same or older version, a
path that is no Sygmax, a node that fails pre-flight, nothing to roll back to), the
expand-then-contract rule on migration steps (and on every step in this tree), and the
hard-link clone that makes a release venv cheap.

The second part installs a real node (root, no systemd, an isolated prefix on free ports, as in
tests/test_appliance_install.py), builds releases from this checkout with bench/upgrade.py's
harness and upgrades while clients send requests through Caddy without pause (HTTP/1.1 with
keep-alive, never retrying any request: see bench.upgrade.Traffic): a good release (new version
serving, its migration applied, zero failed requests, Caddy's configuration never changed), a
release whose processes cannot start (automatic rollback, the old version serving, data intact),
a release with a contract step the running version still needs (refused, nothing changed), and a
rollback by hand. Draining is checked on its own too: a process with a drain marker answers only
Caddy's check with 503, and Caddy stops sending it requests without a configuration change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance import caddy
from appliance.backup.verify import verify_archive
from appliance.health import process_health, upstream_check, wait_for
from appliance.layout import ApplianceState
from appliance.node import DRAIN_DIR, drain, drain_marker, rejoin
from appliance.preflight import check_venv_access, pid1_is_systemd
from appliance.upgrade import (
    MAX_EVENT_BACKLOG,
    check_event_backlog,
    clone_venv,
    contract_problems,
    destructive_statements,
    event_backlog,
)
from bench.upgrade import BACKUP_KEY, MIGRATION, Node, Traffic, build_release, bump
from cli.main import app
from profiles import PROFILES
from sygmax import __version__
from sygmax.app import DRAIN_DIR as APP_DRAIN_DIR
from sygmax.app import UPSTREAM_CHECK_HEADER, draining
from sygmax.db.migrations import Step, load_steps

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# --- refusals, no node needed ----------------------------------------------------------------


@pytest.fixture
def recorded_node(tmp_path: Path) -> ApplianceState:
    """A node's state file (what `sygmax install` records) with nothing running."""
    state = ApplianceState(prefix=str(tmp_path / "node"), base_port=47000, version=__version__)
    state.layout.etc.mkdir(parents=True)
    state.save()
    return state


def invoke(state: ApplianceState, *args: str):
    return runner.invoke(app, ["upgrade", *args, "--prefix", state.prefix], env={"COLUMNS": "200"})


def nothing_changed(state: ApplianceState) -> bool:
    return (
        not state.layout.releases.exists()
        and ApplianceState.from_json(state.layout.state_file.read_text()) == state
    )


def test_same_version_is_refused(recorded_node):
    result = invoke(recorded_node, "--to", str(ROOT), "--yes")
    assert result.exit_code == 1, result.output
    assert f"Sygmax {__version__} is already installed" in result.output
    assert nothing_changed(recorded_node)


def test_older_version_is_refused(recorded_node):
    result = invoke(recorded_node, "--to", "0.0.1", "--yes")
    assert result.exit_code == 1, result.output
    assert "older than the installed" in result.output and "--rollback" in result.output
    assert nothing_changed(recorded_node)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "no-such-thing"), "not a version number either"),
        (lambda tmp: str(tmp), "not a Sygmax checkout (no pyproject.toml)"),
        (lambda tmp: _file(tmp / "other-9.0.0-py3-none-any.whl"), "that is a package of other, not sygmax"),
        (lambda tmp: _file(tmp / "sygmax.deb"), "expected a .whl, .tar.gz or .zip"),
        (
            lambda tmp: _project(tmp / "other", 'name = "other"\nversion = "9.0.0"'),
            "the project there is 'other'",
        ),
        (
            lambda tmp: _project(tmp / "noversion", 'name = "sygmax"\ndynamic = ["version"]'),
            "no valid static",
        ),
    ],
)
def test_targets_that_are_not_a_sygmax_release_are_refused(recorded_node, tmp_path, make, message):
    result = invoke(recorded_node, "--to", make(tmp_path), "--yes")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert nothing_changed(recorded_node)


def _file(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _project(path: Path, body: str) -> str:
    path.mkdir()
    (path / "pyproject.toml").write_text(f"[project]\n{body}\n")
    return str(path)


def test_a_node_that_fails_preflight_is_not_touched(recorded_node):
    # Nothing runs at this prefix: the pre-flight finds the node down and refuses before any install.
    result = invoke(recorded_node, "--to", bump(__version__, 50), "--yes")
    assert result.exit_code == 1, result.output
    assert "pre-flight failed, nothing was changed" in result.output
    assert "supervisord is down" in result.output and "sygmax up" in result.output
    assert nothing_changed(recorded_node)


def test_rollback_needs_a_previous_release(recorded_node):
    result = invoke(recorded_node, "--rollback", "--yes")
    assert result.exit_code == 1, result.output
    assert "no earlier release is recorded" in result.output
    both = invoke(recorded_node, "--rollback", "--to", "9.0.0")
    assert both.exit_code == 1 and "--rollback takes no --to" in both.output
    gone = ApplianceState.from_json(recorded_node.to_json())
    gone.previous_venv, gone.previous_version = "/nonexistent/venv", "0.0.9"
    gone.save()
    result = invoke(gone, "--rollback", "--yes")
    assert result.exit_code == 1 and "the previous release 0.0.9 is gone" in result.output


def test_options_are_validated_before_anything_runs(recorded_node):
    result = invoke(recorded_node, "--to", bump(__version__), "--health-timeout", "1", "--yes")
    assert result.exit_code == 2 and "--health-timeout" in result.output
    assert nothing_changed(recorded_node)
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "upgrade" in listed.output


def test_no_install_at_the_prefix(tmp_path):
    result = runner.invoke(app, ["upgrade", "--to", "9.0.0", "--prefix", str(tmp_path)])
    assert result.exit_code == 1 and "no Sygmax install found" in result.output


# --- the expand-then-contract rule --------------------------------------------------------------


def step(sql: str, name: str = "0009_change.sql") -> Step:
    return Step("kernel", name, sql)


def test_expand_steps_pass():
    steps = [
        step("CREATE TABLE t (id bigint PRIMARY KEY, x text NOT NULL);"),
        step("ALTER TABLE sygmax_workspace ADD COLUMN note text;\nCREATE INDEX ON sygmax_workspace (note);"),
        step("-- later we DROP COLUMN note (in a contract step, not here)\nALTER TABLE t ADD COLUMN y int;"),
    ]
    assert contract_problems(steps, "0.1.0") == []


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("ALTER TABLE sygmax_workspace DROP COLUMN note;", "DROP COLUMN"),
        ("DROP TABLE IF EXISTS old_things;", "DROP TABLE"),
        ("ALTER TABLE t RENAME COLUMN a TO b;", "RENAME COLUMN A TO"),
        ("ALTER TABLE t RENAME TO u;", "RENAME TO"),
        ("ALTER TABLE t ALTER COLUMN a TYPE bigint;", "ALTER COLUMN A TYPE"),
        ("alter table t alter column a set not null;", "SET NOT NULL"),
    ],
)
def test_unmarked_contract_steps_are_refused(sql, found):
    [problem] = contract_problems([step(sql)], "0.1.0")
    assert "kernel/0009_change.sql removes or narrows schema" in problem and found in problem
    assert "-- sygmax: contract since X.Y.Z" in problem


def test_contract_step_waits_for_the_release_that_stopped_using_it():
    drop = step("-- sygmax: contract since 0.3.0\nALTER TABLE sygmax_workspace DROP COLUMN note;")
    [problem] = contract_problems([drop], "0.2.4")
    assert "contract step for releases from 0.3.0 on, but this node runs 0.2.4" in problem
    assert "upgrade to a 0.3.x release first" in problem
    assert contract_problems([drop], "0.3.0") == [] and contract_problems([drop], "1.0.0") == []
    assert contract_problems([step("-- sygmax: contract since soon\nDROP TABLE x;")], "1.0.0") == [
        "kernel/0009_change.sql: `contract since soon` is not a version"
    ]


def test_every_migration_in_this_tree_follows_the_rule():
    """A step that removes or narrows schema must be marked with the release it waits for."""
    directories = [ROOT / "sygmax" / "db" / "migrations", *sorted((ROOT / "plugins").glob("*/migrations"))]
    steps = [s for directory in directories for s in load_steps(directory.parent.name, directory)]
    assert steps, "no migrations found"
    unmarked = [
        f"{s.module}/{s.name}"
        for s in steps
        if destructive_statements(s.sql) and "sygmax: contract" not in s.sql
    ]
    assert unmarked == [], f"contract steps without `-- sygmax: contract since X.Y.Z`: {unmarked}"


# --- the release venv: a hard-link clone --------------------------------------------------------


def test_clone_shares_files_and_never_writes_through_to_the_original(tmp_path):
    source = tmp_path / "old"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(source)], check=True)
    site = next((source / "lib").glob("python3*/site-packages"))
    (site / "shared.py").write_text("VALUE = 1\n")
    script = source / "bin" / "tool"
    script.write_text(f"#!{source}/bin/python\nprint('tool')\n")
    script.chmod(0o755)
    (source / "bin" / "blob").write_bytes(b"\x7fELF\0" + str(source).encode())

    target = tmp_path / "new"
    assert clone_venv(source, target) is True
    cloned_site = target / site.relative_to(source)
    assert (cloned_site / "shared.py").stat().st_ino == (site / "shared.py").stat().st_ino  # no bytes copied
    assert (target / "bin" / "tool").read_text().startswith(f"#!{target}/bin/python\n")
    assert script.read_text().startswith(f"#!{source}/bin/python\n")  # the original kept its own
    assert str(source) not in (target / "pyvenv.cfg").read_text()
    # A compiled program is left as it is, even when the old path appears in it.
    assert (target / "bin" / "blob").read_bytes() == (source / "bin" / "blob").read_bytes()
    assert os.readlink(target / "bin" / "python") == os.readlink(source / "bin" / "python")
    # The way pip replaces a file (unlink, then write) leaves the serving venv's copy alone.
    (cloned_site / "shared.py").unlink()
    (cloned_site / "shared.py").write_text("VALUE = 2\n")
    assert (site / "shared.py").read_text() == "VALUE = 1\n"
    ran = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import shared; print(shared.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == "2"


# --- draining: the process's side ---------------------------------------------------------------


def test_a_drain_marker_counts_only_when_made_after_the_process_started(tmp_path):
    marker = tmp_path / "drain" / "8000"
    started = 1_700_000_000.0
    assert not draining(marker, started)  # no marker: in rotation
    marker.parent.mkdir()
    marker.touch()
    os.utime(marker, (started + 5, started + 5))
    assert draining(marker, started)
    # Left by a restart that was not seen through: meant for the process this one replaced.
    os.utime(marker, (started - 5, started - 5))
    assert not draining(marker, started)


async def test_a_draining_process_answers_only_the_proxy_check_with_503(environ, tmp_path):
    from litestar.testing import AsyncTestClient

    from sygmax.app import create_app, load_configuration
    from sygmax.config import load_settings

    config = tmp_path / "etc" / "sygmax.toml"
    config.parent.mkdir()
    config.write_text("")
    settings = load_settings(config, environ=environ)
    _, plugins = load_configuration()
    check = {UPSTREAM_CHECK_HEADER: "1"}
    async with AsyncTestClient(app=create_app("api", settings=settings, plugins=plugins)) as client:
        assert (await client.get("/healthz", headers=check)).status_code == 200
        marker = config.parent / APP_DRAIN_DIR / "80"  # the test client's server port
        marker.parent.mkdir()
        marker.touch()
        answer = await client.get("/healthz", headers=check)
        assert answer.status_code == 503 and answer.json()["type"].endswith("draining")
        # Everyone else (supervisors, `sygmax status`, clients through Caddy) still sees it alive.
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        (marker.parent / "81").touch()  # another process's marker
        marker.unlink()
        assert (await client.get("/healthz", headers=check)).status_code == 200


def test_the_node_and_the_process_agree_on_the_drain_protocol(tmp_path):
    assert DRAIN_DIR == APP_DRAIN_DIR
    assert caddy.UPSTREAM_CHECK_HEADER.lower() == UPSTREAM_CHECK_HEADER
    state = ApplianceState(prefix=str(tmp_path), base_port=47000)
    assert drain_marker(state, 47000) == state.layout.config_file.parent / DRAIN_DIR / "47000"
    check = caddy.desired_config(state)["apps"]["http"]["servers"]["sygmax"]["routes"][0]
    proxies = [
        handler
        for route in check["handle"][0]["routes"]
        for handler in route["handle"]
        if handler["handler"] == "reverse_proxy"
    ]
    assert proxies and all(
        proxy["health_checks"]["active"]["headers"] == {caddy.UPSTREAM_CHECK_HEADER: ["1"]} for proxy in proxies
    )


# --- a real node ------------------------------------------------------------------------------

NEXT = bump(__version__)
BROKEN = bump(__version__, 2)
BROKEN_MIGRATION = """-- The broken release's expand step: applied before it fails, kept after rollback.
CREATE TABLE sygmax_upgrade_broken_probe (id bigint PRIMARY KEY);
"""
CONTRACT_MIGRATION = f"""-- sygmax: contract since {bump(__version__, 5)}
ALTER TABLE sygmax_workspace DROP COLUMN upgrade_probe;
"""


@pytest.fixture(scope="module")
def node():
    problem = check_venv_access(sys.prefix)
    if not problem.ok:
        # CI builds .venv with install.sh (the system Python): there this must run. A developer's
        # venv from a private Python (pyenv under /root) cannot host the node's unprivileged processes.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{problem.message}; {problem.fix}")
    node = Node.fresh()
    try:
        node.install()
        yield node
    finally:
        removed = node.uninstall()
        assert removed.returncode == 0, removed.stdout + removed.stderr


@pytest.fixture(scope="module")
def releases():
    # Under /tmp, readable by everyone: pip builds from here as root, the service user runs the result.
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"sygmax-releases-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def workspaces(node: Node) -> list[tuple]:
    return node.query("SELECT id, name FROM sygmax_workspace ORDER BY id")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="sygmax install provisions the host: run as root (CI does)")
@pytest.mark.skipif(pid1_is_systemd(), reason="this test covers hosts without systemd")
class TestOnANode:
    def test_a_draining_process_leaves_caddys_rotation_without_a_reload(self, node):
        state = ApplianceState.from_json(json.dumps(node.state()))
        [(program, port), *_] = state.profile_processes(PROFILES["api"])
        log = node.prefix / f"var/log/sygmax/{program}.log"
        header = caddy.UPSTREAM_CHECK_HEADER

        def served() -> int:  # requests the process handled for clients (not health checks)
            return log.read_text(errors="replace").count('"route":"/api/v1/workspaces"')

        token = node.token()
        loads = node.caddy_loads()
        with Traffic(node, token) as traffic:
            assert drain(state, port) is True
            assert upstream_check(port, header) == 503 and process_health(port).ok  # only Caddy's check
            counted = served()
            wait_for(lambda: traffic.ok >= 200, 120)  # the other api process serves all of it
            assert served() == counted
            drain_marker(state, port).unlink()
            rejoin(state, port)
            rejoined = traffic.ok
            wait_for(lambda: traffic.ok >= rejoined + 200, 120)
        assert traffic.ok >= rejoined + 200
        assert served() > counted  # back in rotation
        assert traffic.failures == [], traffic.failures[:10]
        assert node.caddy_loads() == loads

    def test_upgrade_under_load_drops_no_request(self, node, releases):
        release = build_release(releases / "next", NEXT, MIGRATION)
        token = node.token()
        assert node.info(token)["version"] == __version__
        before = workspaces(node)
        loads = node.caddy_loads()
        with Traffic(node, token) as traffic:
            done = node.sygmax("upgrade", "--to", str(release), "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert traffic.failures == [], traffic.failures[:10]
        assert node.caddy_loads() == loads  # the restart rolled by draining, never by a reload
        assert traffic.ok > 100 and traffic.created
        assert f"upgraded {__version__} -> {NEXT}" in done.stdout
        # The automatic backup came first, from the release that served: every part checks out.
        [archive] = re.findall(r"backup written: (\S+)", done.stdout)
        verify_archive(archive, BACKUP_KEY)

        assert node.info(token)["version"] == NEXT
        state = node.state()
        releases_dir = node.prefix / "opt/sygmax/deployments"
        assert state["venv"] == str(releases_dir / NEXT) and state["version"] == NEXT
        assert state["previous_venv"] == sys.prefix and state["previous_version"] == __version__
        assert (releases_dir / "current").resolve() == releases_dir / NEXT
        conf = (node.prefix / "etc/sygmax/supervisor.d/sygmax-api.conf").read_text()
        assert f"command={releases_dir / NEXT}/bin/sygmax run api" in conf
        # The new migration ran, the old data and everything created under load are there.
        assert node.query("SELECT note FROM sygmax_upgrade_probe") == [
            ("written by the next release's migration",)
        ]
        applied = [
            name for (name,) in node.query("SELECT name FROM sygmax_migrations WHERE module = 'kernel'")
        ]
        assert any(name.endswith(f"_release_{NEXT.replace('.', '_')}.sql") for name in applied)
        after = {row[0] for row in workspaces(node)}
        assert {row[0] for row in before} <= after
        assert {str(id_) for id_ in after} >= set(traffic.created)

    def test_a_release_that_cannot_start_is_rolled_back(self, node, releases):
        release = build_release(releases / "broken", BROKEN, BROKEN_MIGRATION, break_startup=True)
        token = node.token()
        before = workspaces(node)
        loads = node.caddy_loads()
        with Traffic(node, token) as traffic:
            done = node.sygmax(
                "upgrade", "--to", str(release), "--yes", "--health-timeout", "30", "--skip-backup"
            )
        assert done.returncode == 1, done.stdout + done.stderr
        assert traffic.failures == [], traffic.failures[:10]
        assert node.caddy_loads() == loads
        assert (
            f"{BROKEN} failed its health check" in done.stderr
            and f"rolled back: {NEXT} serves" in done.stderr
        )
        assert "Rolling back to" in done.stdout and "No backup (--skip-backup)" in done.stdout

        assert node.info(token)["version"] == NEXT
        state = node.state()
        assert state["version"] == NEXT and state["previous_version"] == __version__
        assert not (node.prefix / f"opt/sygmax/deployments/{BROKEN}").exists()  # the failed release is gone
        # Data intact: what was there is still there; the broken release's expand step stays, harmlessly.
        after = workspaces(node)
        assert [row for row in after if row in before] == before
        assert node.query("SELECT count(*) FROM sygmax_upgrade_broken_probe") == [(0,)]
        status = node.sygmax("status")
        assert status.returncode == 0 and "none pending" in status.stdout, status.stdout

    def test_a_contract_step_the_running_release_needs_is_refused(self, node, releases):
        release = build_release(releases / "contract", bump(__version__, 3), CONTRACT_MIGRATION)
        before = node.state()
        done = node.sygmax("upgrade", "--to", str(release), "--yes")
        assert done.returncode == 1, done.stdout + done.stderr
        assert (
            "break the expand-then-contract rule" in done.stderr and f"this node runs {NEXT}" in done.stderr
        )
        assert node.state() == before
        assert not (node.prefix / f"opt/sygmax/deployments/{bump(__version__, 3)}").exists()
        assert node.query(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'upgrade_probe'"
        ) == [(1,)]

    def test_event_bus_backlog_is_read_from_the_node(self, node):
        state = ApplianceState.from_json(json.dumps(node.state()))
        backlog = event_backlog(state)
        assert backlog is not None and all(count >= 0 for count in backlog.values())
        assert check_event_backlog(state, limit=MAX_EVENT_BACKLOG, wait_s=0).level == "ok"
        # Over the limit (here: any backlog at all, even none), after the wait: refused with the way out.
        refused = check_event_backlog(state, limit=-1, wait_s=0)
        assert refused.level == "error" and "events wait for the workers" in refused.message
        assert "sygmax logs worker" in refused.fix

    def test_rollback_by_hand_drops_no_request(self, node):
        token = node.token()
        before = workspaces(node)
        loads = node.caddy_loads()
        with Traffic(node, token) as traffic:
            done = node.sygmax("upgrade", "--rollback", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert traffic.failures == [], traffic.failures[:10]
        assert node.caddy_loads() == loads
        assert f"rolled back {NEXT} -> {__version__}" in done.stdout
        # The old release works on the expanded schema (the rule's whole point).
        assert node.info(token)["version"] == __version__
        state = node.state()
        assert state["venv"] == sys.prefix and state["previous_version"] == NEXT
        after = workspaces(node)
        assert [row for row in after if row in before] == before and len(after) > len(before)
