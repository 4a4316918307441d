"""Backup and restore throughput against plain pg_dump / pg_restore of the same database.

    .venv/bin/python bench/backup.py [--db-mb 700] [--objects-mb 400] [--no-write]

Generates a data set on a throwaway PostgreSQL and local-disk object store: a table of rows
with random (incompressible) payloads, plus random objects. Then, in the same run:

* ``pg_dump``: ``pg_dump -Fc`` of the database to a file (the peer of the backup);
* ``backup``: ``create_backup`` (pg_dump -Fc + objects + config, tar, AES-256-GCM) in a child
  process, whose own peak RSS it reports (memory must stay flat whatever the data size);
* ``pg_restore``: ``pg_restore`` of the peer's dump into a new database;
* ``restore``: the verify pass plus the restore pass of the archive (database and objects).

MB/s counts the data each one handles (database size for the peers, database plus objects for
Sygmax); the ratios divide Sygmax's MB/s by the peer's. Prints one JSON object (bench/report.py)
and writes bench/results/backup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit
from tests.servers import PostgresServer

KEY = "benchmark key, not a secret at all"
ROW = 256 * 1024
OBJECT = 16 * 1024 * 1024

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from appliance.backup.settings import BackupSettings
from sygmax.config import load_settings
from sygmax.plugins import discover_plugins
settings = load_settings({config!r}, environ={environ!r}, plugin_sections={{"backup": BackupSettings}})
start = time.perf_counter()
if {what!r} == "backup":
    from appliance.backup import create_backup
    result = create_backup(settings, output={output!r}, key={key!r}, base_backup=False)
    timing = {{"seconds": time.perf_counter() - start, "location": result.location}}
else:
    from appliance.backup.restore import apply, prepare
    plugins = discover_plugins()
    contents = prepare({output!r}, {key!r}, plugins)
    verified = time.perf_counter() - start
    apply(settings, {output!r}, {key!r}, contents, plugins)
    timing = {{"seconds": time.perf_counter() - start, "verify_seconds": verified}}
timing["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(timing))
"""


def child(what: str, root: Path, environ: dict[str, str], output: str) -> dict:
    code = CHILD.format(root=str(ROOT), config=str(root / "absent.toml"), environ=environ, what=what,
                        output=output, key=KEY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


async def generate(url: str, store_dir: Path, db_mb: int, objects_mb: int) -> None:
    import asyncpg

    from sygmax.config import StorageSettings
    from sygmax.storage.base import open_store

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE bench_rows (id int PRIMARY KEY, payload bytea)")
        # Random payloads: neither TOAST nor pg_dump's zlib can shrink them, like uploaded media.
        await connection.execute("ALTER TABLE bench_rows ALTER COLUMN payload SET STORAGE EXTERNAL")
        rows = db_mb * 1024 * 1024 // ROW
        for start in range(0, rows, 64):
            batch = [(number, os.urandom(ROW)) for number in range(start, min(rows, start + 64))]
            await connection.copy_records_to_table("bench_rows", records=batch)
    finally:
        await connection.close()
    store = open_store(StorageSettings(url=f"file://{store_dir}"))
    try:
        for number in range(objects_mb * 1024 * 1024 // OBJECT):
            await store.put(f"bench/object-{number:04d}.bin", os.urandom(OBJECT))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-mb", type=int, default=700)
    parser.add_argument("--objects-mb", type=int, default=400)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from appliance.backup.pg import libpq_environ, tool
    from sygmax.db.migrations import migrate, plan
    from sygmax.plugins import discover_plugins, order_plugins

    root = Path(tempfile.mkdtemp(prefix="sygmax-bench-backup-"))
    server = PostgresServer().start()
    try:
        url = server.url()
        plugins = order_plugins(discover_plugins())
        asyncio.run(migrate(url, plan([(plugin.name, plugin.migrations) for plugin in plugins])))
        store_dir = root / "objects"
        asyncio.run(generate(url, store_dir, args.db_mb, args.objects_mb))
        db_bytes = int(server.psql("sygmax", "SELECT pg_database_size('sygmax')").strip())
        object_bytes = sum(path.stat().st_size for path in (store_dir / "objects").rglob("*") if path.is_file())
        (root / "keys").mkdir()
        environ = {"SYGMAX_DATABASE_URL": url, "SYGMAX_STORAGE_URL": f"file://{store_dir}",
                   "SYGMAX_AUTH_KEYS_DIR": str(root / "keys")}
        libpq = libpq_environ(url)
        mb = 1024 * 1024

        dump_file = root / "peer.dump"
        pg_dump_s = timed([tool("pg_dump"), "-Fc", "-f", str(dump_file)], libpq)
        backup = child("backup", root, environ, str(root / "archive.sygbak"))
        archive_bytes = (root / "archive.sygbak").stat().st_size

        server.psql("postgres", "CREATE DATABASE peer_restore")
        pg_restore_s = timed([tool("pg_restore"), "--no-owner", "-d", "peer_restore", str(dump_file)], libpq)
        shutil.rmtree(store_dir / "objects")  # the restore puts every object back
        restore = child("restore", root, environ, str(root / "archive.sygbak"))
        restored_rows = int(server.psql("sygmax", "SELECT count(*) FROM bench_rows").strip())
        restored_objects = sum(1 for path in (store_dir / "objects").rglob("*") if path.is_file())

        data_mb = (db_bytes + object_bytes) / mb
        report = {
            "benchmark": "backup",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "data": {"database_mb": round(db_bytes / mb, 1), "objects_mb": round(object_bytes / mb, 1),
                     "total_mb": round(data_mb, 1), "archive_mb": round(archive_bytes / mb, 1),
                     "pg_dump_file_mb": round(dump_file.stat().st_size / mb, 1),
                     "rows_restored": restored_rows, "objects_restored": restored_objects},
            "pg_dump": {"seconds": round(pg_dump_s, 2), "mb_per_s": round(db_bytes / mb / pg_dump_s, 1)},
            "backup": {"seconds": round(backup["seconds"], 2), "mb_per_s": round(data_mb / backup["seconds"], 1),
                       "peak_rss_mb": round(backup["peak_rss_mb"], 1)},
            "pg_restore": {"seconds": round(pg_restore_s, 2), "mb_per_s": round(db_bytes / mb / pg_restore_s, 1)},
            "restore": {"seconds": round(restore["seconds"], 2), "verify_seconds": round(restore["verify_seconds"], 2),
                        "mb_per_s": round(data_mb / restore["seconds"], 1),
                        "peak_rss_mb": round(restore["peak_rss_mb"], 1)},
        }
        report["ratio_backup_over_pg_dump"] = round(report["backup"]["mb_per_s"] / report["pg_dump"]["mb_per_s"], 2)
        report["ratio_restore_over_pg_restore"] = round(
            report["restore"]["mb_per_s"] / report["pg_restore"]["mb_per_s"], 2)
        emit(report, ROOT / "bench" / "results" / "backup.json", write=not args.no_write)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
