"""Point-in-time recovery against a real PostgreSQL with WAL archiving on: changes A, then B;
restore to a time between them; A is there, B is not; the server serves and archives afterwards."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance.backup import create_backup
from appliance.backup.errors import ArchiveRefused, BackupError
from appliance.backup.pitr import Cluster, archive_current_wal
from appliance.backup.restore import apply, pick_archive_for, prepare
from appliance.backup.wal import archive_command
from sygmax.db.migrations import migrate, plan
from sygmax.plugins import discover_plugins, order_plugins
from tests.backup_helpers import KEY, db_snapshot, execute, fetch, node_settings, object_snapshot
from tests.servers import PostgresServer


class ThrowawayNode:
    """The NodeControl of a restore, for a cluster run by pg_ctl instead of supervisord."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.stopped: list[str] = []
        self.started: list[str] = []

    def stop_writers(self) -> list[str]:
        self.stopped.append("sygmax-api-1")
        return ["sygmax-api-1"]

    def start_writers(self, names: list[str]) -> None:
        self.started += names

    def cluster(self) -> Cluster:
        return Cluster(data_dir=self.server.data_dir, stop=self.server.halt, start=self.server.launch)


@pytest.fixture(scope="module")
def archiving():
    """A PostgreSQL of its own (PITR replaces the whole cluster) archiving WAL into a directory."""
    root = Path(tempfile.mkdtemp(prefix="sygmax-pitr-test-"))
    root.chmod(0o711)  # the postgres user archives into it
    wal = root / "wal"
    wal.mkdir()
    shutil.chown(wal, "postgres", "postgres")
    server = PostgresServer(settings={"archive_mode": "on", "archive_command": archive_command(wal)}).start()
    plugins = discover_plugins()
    steps = plan([(plugin.name, plugin.migrations) for plugin in order_plugins(plugins)])
    asyncio.run(migrate(server.url(), steps))
    yield server, root, wal, plugins
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_restore_to_a_time_between_two_changes(archiving):
    server, root, wal, plugins = archiving
    env = {"SYGMAX_DATABASE_URL": server.url(), "SYGMAX_STORAGE_URL": f"file://{root / 'objects'}",
           "SYGMAX_AUTH_KEYS_DIR": str(root / "keys"), "SYGMAX_BACKUP_KEY": KEY,
           "SYGMAX_BACKUP_LOCATION": str(root / "archives"), "SYGMAX_BACKUP_WAL_DIR": str(wal)}
    settings = node_settings(root / "absent.toml", env)
    execute(server.url(), "CREATE TABLE ledger (id int PRIMARY KEY, note text)")
    made = create_backup(settings, reason="scheduled")
    assert made.base_backup  # archive_mode is on: the archive carries a pg_basebackup

    execute(server.url(), "INSERT INTO ledger VALUES (1, 'change A')")
    time.sleep(1.1)  # distinct commit timestamps on either side of the target
    [row] = fetch(server.url(), "SELECT clock_timestamp() AS now")
    target: datetime = row["now"]
    time.sleep(1.1)
    execute(server.url(), "INSERT INTO ledger VALUES (2, 'change B'); UPDATE ledger SET note = 'A changed later' "
                          "WHERE id = 1")

    archive = pick_archive_for(settings, target)
    assert archive == made.location
    contents = prepare(archive, KEY, plugins, need_base_backup=True)
    node = ThrowawayNode(server)
    summary = apply(settings, archive, KEY, contents, plugins, control=node, at=target)

    rows = fetch(server.url(), "SELECT id, note FROM ledger ORDER BY id")
    assert [(row["id"], row["note"]) for row in rows] == [(1, "change A")]
    assert node.stopped == node.started == ["sygmax-api-1"]
    assert Path(summary.previous_data_dir).is_dir() and summary.at == target.isoformat()
    # The recovered cluster is the live one now: it takes writes and keeps archiving WAL.
    execute(server.url(), "INSERT INTO ledger VALUES (3, 'after the restore')")
    assert fetch(server.url(), "SELECT pg_is_in_recovery() AS r")[0]["r"] is False
    asyncio.run(archive_current_wal(server.url()))  # waits until the new segment is in the archive
    names = sorted(path.name for path in wal.iterdir())
    assert "00000002.history" in names and any(name.startswith("00000002") and len(name) == 24 for name in names)


def test_refusals_before_anything_changes(archiving):
    server, root, wal, plugins = archiving
    env = {"SYGMAX_DATABASE_URL": server.url(), "SYGMAX_STORAGE_URL": f"file://{root / 'objects'}",
           "SYGMAX_AUTH_KEYS_DIR": str(root / "keys"), "SYGMAX_BACKUP_KEY": KEY,
           "SYGMAX_BACKUP_LOCATION": str(root / "other-archives"), "SYGMAX_BACKUP_WAL_DIR": str(wal)}
    settings = node_settings(root / "absent.toml", env)
    before = db_snapshot(server.url()), object_snapshot(settings)
    with pytest.raises(ArchiveRefused, match="no archive with a base backup made before"):
        pick_archive_for(settings, datetime.fromisoformat("2001-01-01T00:00:00+00:00"))
    without_base = create_backup(settings, base_backup=False)
    with pytest.raises(ArchiveRefused, match="holds no base backup"):
        prepare(without_base.location, KEY, plugins, need_base_backup=True)
    contents = prepare(without_base.location, KEY, plugins)
    with pytest.raises(BackupError, match="needs the node's own PostgreSQL cluster"):
        apply(settings, without_base.location, KEY, contents, plugins, control=None,
              at=datetime.fromisoformat("2026-01-01T00:00:00+00:00"))
    assert (db_snapshot(server.url()), object_snapshot(settings)) == before


def test_the_appliance_archives_wal_with_the_same_command(tmp_path):
    """roles/postgresql renders appliance.backup.wal's archive_command; the command archives atomically,
    accepts a segment archived twice and refuses a different file under the same name."""
    import subprocess

    import jinja2

    template = Path("roles/postgresql/templates/sygmax.conf.j2").read_text()
    wal = tmp_path / "wal"
    wal.mkdir()
    rendered = jinja2.Template(template).render(
        postgresql_port=5432, postgresql_socket_dir="/run", postgresql_max_connections=100,
        postgresql_shared_buffers="128MB", postgresql_wal_archive=str(wal), postgresql_archive_timeout=300)
    settings = dict(line.split(" = ", 1) for line in rendered.splitlines() if " = " in line and not line.startswith("#"))
    assert settings["archive_mode"] == "on" and settings["wal_level"] == "replica"
    command = archive_command(wal)
    assert settings["archive_command"] == f"'{command}'"

    segment = tmp_path / "000000010000000000000007"
    segment.write_bytes(b"wal bytes" * 1000)

    def archive(path: Path) -> int:
        shell = command.replace("%p", str(path)).replace("%f", path.name)
        return subprocess.run(["sh", "-c", shell], check=False, capture_output=True).returncode

    assert archive(segment) == 0
    assert (wal / segment.name).read_bytes() == segment.read_bytes()
    assert [path.name for path in wal.iterdir()] == [segment.name]  # no temporary file left
    assert archive(segment) == 0  # archived again after a crash: same content, success
    segment.write_bytes(b"something else")
    assert archive(segment) != 0  # a different file under an archived name is an error
