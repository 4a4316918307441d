"""Write one archive: metadata, config and secrets, ``pg_dump -Fc``, base backup, objects, manifest.

Everything is streamed from its source (the ``pg_dump`` pipe, object storage) through the tar
writer and the encryption into the destination; the largest buffer is one 4 MiB member.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from appliance.backup import ProgressCallback
from appliance.backup.archive import MANIFEST, METADATA, TarWriter
from appliance.backup.crypto import EncryptingWriter
from appliance.backup.errors import BackupError
from appliance.backup.location import SUFFIX, open_location, split_archive
from appliance.backup.pg import libpq_environ, tool
from appliance.backup.pitr import archive_current_wal
from appliance.backup.settings import default_location, resolve_key
from sygmax import __version__
from sygmax.config import Settings
from sygmax.storage.base import ObjectNotFound, StorageError, open_store

READ_SIZE = 1024 * 1024


@dataclass
class BackupResult:
    location: str  # what `sygmax backup verify` and `sygmax restore` take
    name: str
    created_at: str
    reason: str
    size: int  # plaintext bytes archived
    database_bytes: int
    objects: int
    object_bytes: int
    base_backup: bool
    parts: int
    config_files: list[str] = field(default_factory=list)


def archive_name(created: datetime, reason: str) -> str:
    safe = "".join(char if char.isalnum() or char == "-" else "-" for char in reason)[:32] or "backup"
    return f"sygmax-{created:%Y%m%dT%H%M%SZ}-{safe}-{secrets.token_hex(2)}{SUFFIX}"


def config_files(settings: Settings) -> list[tuple[str, Path]]:
    """(name in the archive, path) of the config, the node's secrets and state, and the JWT keys.

    Files this process cannot read are left out: the daily backup runs as the service user,
    which cannot read root's secrets.json and appliance.json; a restore needs neither (they
    hold the host's own service passwords), and a backup run as root includes them.
    """
    found: list[tuple[str, Path]] = []
    source = Path(settings.source)
    if source.is_file():
        found.append(("sygmax.toml", source))
        for sibling in ("secrets.json", "appliance.json"):
            if (source.parent / sibling).is_file():
                found.append((sibling, source.parent / sibling))
    keys = Path(settings.auth.keys_dir)
    if keys.is_dir() and os.access(keys, os.R_OK | os.X_OK):
        found += [(f"keys/{path.name}", path) for path in sorted(keys.iterdir()) if path.is_file()]
    return [(name, path) for name, path in found if os.access(path, os.R_OK)]


async def _metadata(url: str, reason: str, created: datetime) -> tuple[dict, bool]:
    try:
        connection = await asyncpg.connect(url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot reach the database (database.url): {exc}") from exc
    try:
        version, archive_mode = await connection.fetchrow(
            "SELECT current_setting('server_version'), current_setting('archive_mode')")
        size = await connection.fetchval("SELECT pg_database_size(current_database())")
        migrations: dict[str, list[str]] = {}
        if await connection.fetchval("SELECT to_regclass('sygmax_migrations') IS NOT NULL"):
            for row in await connection.fetch("SELECT module, name FROM sygmax_migrations ORDER BY module, name"):
                migrations.setdefault(row["module"], []).append(row["name"])
    finally:
        await connection.close()
    return {
        "sygmax_version": __version__,
        "postgresql_version": version,
        "created_at": created.isoformat(),
        "reason": reason,
        "host": socket.gethostname(),
        "database_size_estimate": size,
        "migrations": migrations,
    }, archive_mode == "on"


class _Pipe:
    """A child process whose stdout is read in chunks; stderr is collected by a thread for errors."""

    def __init__(self, argv: list[str], environ: dict[str, str], what: str) -> None:
        self.what = what
        try:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ)
        except OSError as exc:
            raise BackupError(f"cannot run {argv[0]}: {exc}") from exc
        self.stderr = b""

        def collect() -> None:
            self.stderr = self.process.stderr.read()

        self.thread = threading.Thread(target=collect, daemon=True)
        self.thread.start()

    def chunks(self):
        while True:
            data = self.process.stdout.read(READ_SIZE)
            if not data:
                break
            yield data
        code = self.process.wait()
        self.thread.join()
        if code != 0:
            raise BackupError(f"{self.what} failed (exit {code}): {self.stderr.decode(errors='replace').strip()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def create_backup(
    settings: Settings | None,
    *,
    output=None,
    key: str | None = None,
    reason: str = "manual",
    base_backup: bool | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    if settings is None:
        from sygmax.app import load_configuration

        settings = load_configuration()[0]
    operator_key = resolve_key(settings, key)
    target = str(output) if output else default_location(settings)
    if target.endswith(SUFFIX):
        location, name = split_archive(target)
    else:
        location, name = open_location(target), ""
    return asyncio.run(_create(settings, location, name, operator_key, reason, base_backup, progress))


async def _create(settings, location, name, key, reason, base_backup, progress) -> BackupResult:
    created = datetime.now(UTC).replace(microsecond=0)
    name = name or archive_name(created, reason)
    metadata, archiving = await _metadata(settings.database.url, reason, created)
    if base_backup is None:
        base_backup = archiving
    if base_backup and not archiving:
        raise BackupError("a base backup for point-in-time recovery needs WAL archiving (archive_mode = on)")
    metadata["base_backup"] = base_backup
    store = open_store(settings.storage)
    try:
        listing = [info async for info in store.list("")]
    except StorageError as exc:
        await store.close()
        raise BackupError(f"cannot list object storage (storage.url): {exc}") from exc
    total = metadata["database_size_estimate"] * (2 if base_backup else 1) + sum(i.size for i in listing)
    done = 0

    def advance(stage: str, count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(stage, done, max(total, done))

    sink = location.open_sink(name)
    encrypted = EncryptingWriter(sink.write, key, {
        key_: metadata[key_] for key_ in ("sygmax_version", "created_at", "reason", "host", "base_backup")
    })
    writer = TarWriter(encrypted)
    result = BackupResult(location.describe(name), name, metadata["created_at"], reason, 0, 0, 0, 0,
                          base_backup, 0)
    running: list[_Pipe] = []
    try:
        writer.add_json(METADATA, metadata)
        for archived, path in config_files(settings):
            part = writer.part(f"config/{archived}", f"config/{archived}")
            part.write(path.read_bytes())
            part.finish()
            result.config_files.append(archived)
        environ = libpq_environ(settings.database.url)
        dump = _Pipe([tool("pg_dump"), "-Fc", "--no-password"], environ, "pg_dump")
        running.append(dump)
        part = writer.part("database", "database", ".dump")
        for data in dump.chunks():
            part.write(data)
            advance("database", len(data))
        result.database_bytes = part.finish(format="pg_dump -Fc")["size"]
        if base_backup:
            # pg_basebackup waits without end for its WAL to be archived: prove archiving works first.
            await archive_current_wal(settings.database.url, timeout_s=60)
            basebackup = _Pipe([tool("pg_basebackup"), "-D", "-", "-Ft", "-X", "none", "--checkpoint=fast",
                                "--no-password"], environ, "pg_basebackup")
            running.append(basebackup)
            part = writer.part("basebackup", "basebackup", ".tar")
            for data in basebackup.chunks():
                part.write(data)
                advance("base backup", len(data))
            part.finish(format="pg_basebackup -Ft")
        for info in listing:
            try:
                stat = await store.stat(info.key)
            except StorageError:
                continue  # deleted since the listing: it is not part of this backup
            part = writer.part(f"objects/{info.key}", f"objects/{info.key}",
                               pax={"SYGMAX.key": info.key, "SYGMAX.content_type": stat.content_type or ""})
            try:
                async for data in store.get(info.key):
                    part.write(bytes(data))
                    advance("objects", len(data))
            except ObjectNotFound:
                if part.size:
                    raise
                continue  # deleted between stat and read (nothing of it written): not in this backup
            entry = part.finish(content_type=stat.content_type or "application/octet-stream")
            result.objects += 1
            result.object_bytes += entry["size"]
        writer.add_json(MANIFEST, {"metadata": metadata, "parts": writer.parts})
        writer.close()
        encrypted.close()
        sink.commit()
    except BaseException as exc:
        for pipe in running:
            pipe.kill()
        sink.abort()
        if isinstance(exc, StorageError):
            raise BackupError(f"reading object storage failed: {exc}") from exc
        if isinstance(exc, OSError):
            raise BackupError(f"backup failed: {exc}") from exc
        raise
    finally:
        await store.close()
    result.size = writer.bytes_written
    result.parts = len(writer.parts)
    return result
