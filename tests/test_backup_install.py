"""Backups on a real node (`sygmax install`: root, no systemd, an isolated prefix on free ports):
the PostgreSQL role archives WAL and lets the app role take base backups; `sygmax backup create`,
`sygmax restore` (processes stopped and started by supervisord) and `sygmax restore --at`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import asyncpg
import httpx
import pytest

from appliance.preflight import check_venv_access, pid1_is_systemd
from tests.test_appliance_install import Node, free_block, free_port

BIN = Path(sys.executable).parent
KEY = "an operator key for the install test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="sygmax install provisions the host: run as root (CI does)"),
    pytest.mark.skipif(pid1_is_systemd(), reason="this test covers hosts without systemd"),
]


@pytest.fixture(scope="module")
def node():
    problem = check_venv_access(sys.prefix)
    if not problem.ok:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{problem.message}; {problem.fix}")
    prefix = Path(tempfile.mkdtemp(prefix="sygmax-backup-", dir="/tmp")) / "node"
    prefix.parent.chmod(0o755)
    node = Node(prefix, free_port(), free_port(), free_block(83), [])
    config = prefix / "etc/sygmax/sygmax.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[backup]\nkey = "{KEY}"\n')
    try:
        installed = node.sygmax("install", "--http-port", str(node.http_port), "--https-port",
                                str(node.https_port), "--base-port", str(node.base_port))
        assert installed.returncode == 0, installed.stdout + installed.stderr
        yield node
    finally:
        node.sygmax("uninstall", "--yes")
        shutil.rmtree(prefix.parent, ignore_errors=True)


def cli(node: Node, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
    env.update(COLUMNS="200", SYGMAX_CONFIG=str(node.prefix / "etc/sygmax/sygmax.toml"))
    return subprocess.run([str(BIN / "sygmax"), *args], check=False, capture_output=True, text=True, env=env,
                          timeout=timeout)


def sql(node: Node, statement: str):
    url = tomllib.loads((node.prefix / "etc/sygmax/sygmax.toml").read_text())["database"]["url"]

    async def run():
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch(statement)
        finally:
            await connection.close()

    return asyncio.run(run())


def ready(node: Node) -> None:
    """The restarted api processes serve again through Caddy (they need a moment after RUNNING)."""
    last = None
    for _ in range(120):
        try:
            last = httpx.get(node.url("/readyz"), verify=node.ca, timeout=5)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"the node did not become ready again: {last}")


def notes(node: Node) -> list[str]:
    return [row["note"] for row in sql(node, "SELECT note FROM backup_test ORDER BY id")]


def test_backup_restore_and_point_in_time_on_a_node(node):
    data = node.prefix / "var/lib/sygmax"
    assert (data / "backups/wal").stat().st_mode & 0o777 == 0o770
    sql(node, "CREATE TABLE backup_test (id serial PRIMARY KEY, note text)")
    sql(node, "INSERT INTO backup_test (note) VALUES ('before the backup')")

    made = cli(node, "backup", "create")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "base backup yes" in made.stdout
    [archive] = [line.split(": ", 1)[1] for line in made.stdout.splitlines() if line.startswith("backup written")]
    assert archive.startswith(str(data / "backups"))
    assert any(path.name.startswith("0000000100") for path in (data / "backups/wal").iterdir())

    sql(node, "INSERT INTO backup_test (note) VALUES ('after the backup')")
    restored = cli(node, "restore", archive, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "sygmax-api-1" in restored.stdout  # stopped, then started again
    assert notes(node) == ["before the backup"]
    ready(node)

    sql(node, "INSERT INTO backup_test (note) VALUES ('change A')")
    time.sleep(1.1)
    [row] = sql(node, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS at")
    time.sleep(1.1)
    sql(node, "INSERT INTO backup_test (note) VALUES ('change B')")
    recovered = cli(node, "restore", "--at", row["at"], "--yes")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert notes(node) == ["before the backup", "change A"]
    assert list(data.glob("postgresql.before-restore-*"))
    ready(node)
    sql(node, "INSERT INTO backup_test (note) VALUES ('writable again')")
