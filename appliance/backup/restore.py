"""``sygmax restore``: verify, stop writers, restore database, objects and config, migrate, start.

Two passes over the archive. The first (:func:`prepare`) decrypts and checks everything and
refuses an archive from a newer Sygmax; nothing on the node changes before it has passed.
The second (:func:`apply`) streams the parts into place:

- database: ``pg_restore -f -`` turns the dump into SQL that ``psql --single-transaction``
  runs after dropping the current schema, so the database is replaced all at once or not at
  all (a failed restore rolls back and leaves the previous data);
- objects: put back one by one; objects not in the archive are then deleted, so storage
  matches the archive (kept with ``--at``: the database may reference newer objects);
- config: the archived ``sygmax.toml`` is merged into this host's, whose host-specific keys
  (database, Redis and storage addresses with their passwords, key directory) win, so the
  archive can be restored on a fresh host after ``sygmax install``; the JWT signing keys are
  put back so sessions and tokens stay valid; ``secrets.json`` and ``appliance.json`` stay
  as this host has them (they hold its own service passwords) and are kept in the archive
  for reference only;
- the archive's database is migrated forward to this Sygmax's schema.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import tomli_w

from appliance.backup import ProgressCallback
from appliance.backup.archive import Contents, walk
from appliance.backup.errors import ArchiveRefused, BackupError
from appliance.backup.location import open_location
from appliance.backup.pg import libpq_environ, tool
from appliance.backup.pitr import Cluster, archive_current_wal, recover
from appliance.backup.settings import default_location, wal_directory
from appliance.backup.verify import (
    archive_size,
    check_compatible,
    list_archives,
    open_archive,
    verify_archive,
)
from sygmax.config import Settings
from sygmax.db.migrations import MigrationError, migrate, plan
from sygmax.plugins import Plugin
from sygmax.storage.base import StorageError, open_store

# sygmax.toml keys that belong to the host, not to the data: this host's values win.
HOST_KEYS = {
    "server": ("host",),
    "database": ("url",),
    "redis": ("url",),
    "storage": ("url", "presign_secret"),
    "auth": ("keys_dir",),
}

# Run in the restore's transaction before the dump: the database is replaced, not merged.
WIPE_SQL = """
DO $$
DECLARE schema_name text;
BEGIN
  FOR schema_name IN
    SELECT nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')
      AND pg_get_userbyid(nspowner) = current_user
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', schema_name);
  END LOOP;
END $$;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


class NodeControl(Protocol):
    """What a restore needs from the node around it (supervisord on an appliance)."""

    def stop_writers(self) -> list[str]:
        """Stop every process that writes to the database or storage; their names."""

    def start_writers(self, names: list[str]) -> None:
        """Start them again."""

    def cluster(self) -> Cluster | None:
        """The local PostgreSQL cluster, for point-in-time recovery; None if not managed here."""


@dataclass
class RestoreSummary:
    archive: str
    created_at: str
    sygmax_version: str
    reason: str
    at: str | None = None
    database_bytes: int = 0
    objects_restored: int = 0
    objects_removed: int = 0
    config_restored: list[str] = field(default_factory=list)
    migrations_applied: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)
    previous_data_dir: str = ""


def installed_steps(plugins: dict[str, Plugin]) -> list[tuple[str, str]]:
    return [(step.module, step.name) for step in plan([(p.name, p.migrations) for p in plugins.values()])]


def prepare(archive: str, key: str, plugins: dict[str, Plugin], progress: ProgressCallback | None = None,
            need_base_backup: bool = False) -> Contents:
    """Verify the whole archive and its compatibility; :class:`ArchiveRefused` changes nothing."""
    contents = verify_archive(archive, key, progress)
    check_compatible(contents.metadata, installed_steps(plugins))
    if need_base_backup and "basebackup" not in contents.parts:
        raise ArchiveRefused(
            f"{archive} holds no base backup, so it cannot be replayed to a point in time: "
            "archives hold one when WAL archiving is on"
        )
    return contents


def pick_archive_for(settings: Settings, at: datetime) -> str:
    """The newest archive with a base backup made before ``at``, for ``restore --at`` alone."""
    location = open_location(default_location(settings))
    best = None
    for listed in list_archives(location):
        meta = listed.metadata
        if listed.problem or not meta.get("base_backup"):
            continue
        created = datetime.fromisoformat(meta["created_at"])
        if created < at and (best is None or created > best[0]):
            best = (created, listed.entry.location)
    if best is None:
        raise ArchiveRefused(
            f"no archive with a base backup made before {at.isoformat()} in {default_location(settings)}"
        )
    return best[1]


class _Members:
    """The second pass's members with one item of look-ahead (parts span several members)."""

    def __init__(self, members: Iterator) -> None:
        self.members = members
        self.peeked = None
        self.contents: Contents | None = None

    def peek(self):
        if self.peeked is None:
            try:
                self.peeked = next(self.members)
            except StopIteration as stop:
                self.contents = stop.value
                self.peeked = ("end", "", b"", {})
        return self.peeked

    def take(self):
        item = self.peek()
        self.peeked = None
        return item

    def chunks_of(self, part: str) -> Iterator[bytes]:
        while self.peek()[1] == part and self.peek()[0] != "end":
            yield self.take()[2]


def _restore_database(url: str, chunks: Iterator[bytes]) -> int:
    """pg_restore's SQL into psql in one transaction, after the wipe; bytes of dump consumed."""
    environ = libpq_environ(url)
    pg_restore = subprocess.Popen([tool("pg_restore"), "--no-owner", "--no-privileges", "-f", "-"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=environ)
    psql = subprocess.Popen([tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "-v",
                             "ON_ERROR_STOP=1", "--no-password", "-c", WIPE_SQL, "-f", "-"],
                            stdin=pg_restore.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=environ)
    pg_restore.stdout.close()  # psql holds it now; pg_restore sees EPIPE if psql dies
    errors: dict[str, bytes] = {}

    def collect(name: str, stream) -> None:
        errors[name] = stream.read()

    readers = [threading.Thread(target=collect, args=(name, process.stderr), daemon=True)
               for name, process in (("pg_restore", pg_restore), ("psql", psql))]
    for thread in readers:
        thread.start()
    size = 0
    try:
        for data in chunks:
            pg_restore.stdin.write(data)
            size += len(data)
        pg_restore.stdin.close()
    except BrokenPipeError:
        pass
    restore_code, psql_code = pg_restore.wait(), psql.wait()
    for thread in readers:
        thread.join()
    if restore_code != 0 or psql_code != 0:
        detail = (errors.get("psql", b"") or errors.get("pg_restore", b"")).decode(errors="replace").strip()
        raise BackupError(f"restoring the database failed and was rolled back: {detail[-2000:]}")
    return size


def _write_private(path: Path, data: bytes, like: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    reference = like if like is not None and like.exists() else path.parent
    if os.geteuid() == 0:
        stat = reference.stat()
        os.chown(tmp, stat.st_uid, stat.st_gid)
    tmp.replace(path)


def merge_config(current_text: str, archived_text: str) -> str:
    current = tomllib.loads(current_text) if current_text.strip() else {}
    merged = tomllib.loads(archived_text)
    for section, keys in HOST_KEYS.items():
        for key in keys:
            if key in current.get(section, {}):
                merged.setdefault(section, {})[key] = current[section][key]
            elif key in merged.get(section, {}):
                del merged[section][key]
    header = "".join(line + "\n" for line in current_text.splitlines() if line.startswith("#"))
    return header + tomli_w.dumps(merged)


def apply(settings: Settings, archive: str, key: str, contents: Contents, plugins: dict[str, Plugin], *,
          control: NodeControl | None = None, at: datetime | None = None,
          progress: ProgressCallback | None = None, note: Callable[[str], None] = lambda message: None
          ) -> RestoreSummary:
    meta = contents.metadata
    summary = RestoreSummary(archive, meta["created_at"], meta["sygmax_version"], meta.get("reason", ""),
                             at.isoformat() if at else None)
    cluster = None
    wal_dir = None
    live_settings: dict[str, str] = {}
    if at is not None:
        cluster = control.cluster() if control else None
        wal_dir = wal_directory(settings)
        if cluster is None or wal_dir is None:
            raise BackupError("point-in-time recovery needs the node's own PostgreSQL cluster "
                              "(run on the appliance host) and backup.wal_dir")
        live_settings = asyncio.run(archive_current_wal(settings.database.url))
    summary.writers = control.stop_writers() if control else []
    try:
        total = archive_size(archive)
        with open_archive(archive, key) as reader:
            members = _Members(walk(reader, archive))

            def tick() -> None:
                if progress:
                    progress("restore", reader.consumed, total)

            asyncio.run(_apply_members(settings, members, summary, (cluster, wal_dir, live_settings), at, tick,
                                       note))
            if members.contents is None:
                raise ArchiveRefused(f"{archive} changed between verification and restore")
        note("applying migrations")
        steps = plan([(plugin.name, plugin.migrations) for plugin in plugins.values()])
        try:
            applied = asyncio.run(migrate(settings.database.url, steps))
        except MigrationError as exc:
            raise BackupError(f"the restored database could not be migrated: {exc}") from exc
        summary.migrations_applied = [f"{step.module}/{step.name}" for step in applied]
    finally:
        if control:
            note("starting the Sygmax processes")
            control.start_writers(summary.writers)
    return summary


async def _apply_members(settings: Settings, members: _Members, summary: RestoreSummary, pitr: tuple,
                         at, tick, note) -> None:
    cluster, wal_dir, live_settings = pitr
    store = open_store(settings.storage)
    kept: set[str] = set()
    try:
        while True:
            kind, part, data, pax = members.peek()
            if kind == "end":
                break
            if kind == "config":
                members.take()
                name = part.removeprefix("config/")
                _restore_config(settings, name, b"".join([data, *members.chunks_of(part)]), summary)
            elif kind == "database":
                if at is None:
                    note("restoring the database")
                    summary.database_bytes = _restore_database(settings.database.url, _ticking(
                        members.chunks_of("database"), tick))
                else:
                    for _ in members.chunks_of("database"):
                        tick()
            elif kind == "basebackup":
                if at is None:
                    for _ in members.chunks_of("basebackup"):
                        tick()
                else:
                    aside = recover(cluster, _ticking(members.chunks_of("basebackup"), tick), wal_dir, at,
                                    live_settings, note)
                    summary.previous_data_dir = str(aside)
            elif kind == "objects":
                if not summary.objects_restored:
                    note("restoring objects")
                object_key = pax["SYGMAX.key"]
                content_type = pax.get("SYGMAX.content_type") or "application/octet-stream"

                try:
                    await store.put(object_key, _async(_ticking(members.chunks_of(part), tick)),
                                    content_type=content_type)
                except StorageError as exc:
                    raise BackupError(f"restoring object {object_key!r} failed: {exc}") from exc
                kept.add(object_key)
                summary.objects_restored += 1
        if at is None:
            # Storage must match the archive: what was stored after it is removed.
            extra = [info.key async for info in store.list("") if info.key not in kept]
            for object_key in extra:
                await store.delete(object_key)
            summary.objects_removed = len(extra)
    finally:
        await store.close()


async def _async(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _ticking(chunks: Iterator[bytes], tick: Callable[[], None]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        tick()


def _restore_config(settings: Settings, name: str, data: bytes, summary: RestoreSummary) -> None:
    if name.startswith("keys/"):
        keys = Path(settings.auth.keys_dir)
        target = keys / Path(name).name
        _write_private(target, data, like=keys)
        summary.config_restored.append(name)
    elif name == "sygmax.toml":
        path = Path(settings.source)
        if not path.is_file():
            return  # configured from the environment only: nothing to merge into
        current = path.read_text(encoding="utf-8")
        _write_private(path, merge_config(current, data.decode("utf-8")).encode(), like=path)
        summary.config_restored.append(name)
    # secrets.json and appliance.json: this host's own, kept (see the module docstring).


class SupervisedNode:
    """An appliance node: writers are its sygmax-* supervisor programs, PostgreSQL is ``postgresql``."""

    def __init__(self, state) -> None:
        from appliance.supervisor import Supervisor

        self.state = state
        self.supervisor = Supervisor(state)

    def stop_writers(self) -> list[str]:
        stopped = []
        for name, status in sorted(self.supervisor.status().items()):
            if name.startswith("sygmax-") and status.state in ("RUNNING", "STARTING", "BACKOFF"):
                self.supervisor.stop(name)
                stopped.append(name)
        return stopped

    def start_writers(self, names: list[str]) -> None:
        for name in names:
            self.supervisor.start(name)

    def cluster(self) -> Cluster:
        data_dir = self.state.layout.data / "postgresql"
        socket_dir = self.state.layout.run / "postgresql"
        port = str(self.state.postgres_port)

        def ready() -> bool:
            return subprocess.run([tool("pg_isready"), "-q", "-h", str(socket_dir), "-p", port], check=False).returncode == 0

        def start() -> None:
            from appliance.health import wait_for

            self.supervisor.start("postgresql")
            if not wait_for(ready, 300, interval=0.5):
                raise BackupError("PostgreSQL did not come back after the swap; see: sygmax logs postgresql")

        return Cluster(data_dir=data_dir, stop=lambda: self.supervisor.stop("postgresql"), start=start)

