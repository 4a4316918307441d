"""Point-in-time recovery: a base backup from an archive plus the WAL archive, replayed to a time.

PostgreSQL archives every completed WAL segment into the WAL directory (``archive_command``,
see :mod:`appliance.backup.wal`); archives made while archiving is on also hold a
``pg_basebackup``. ``restore --at T``:

1. asks the running server to close its current WAL segment and waits until it is archived,
   so the WAL up to now is in the archive;
2. unpacks the base backup into a new data directory beside the live one, with
   ``restore_command`` reading the WAL archive and ``recovery_target_time = T``;
3. runs a temporary postmaster on it (own port and socket, no TCP) until it has replayed to T
   and promoted itself; the live cluster keeps running meanwhile, so a failed recovery
   (T before the base backup, WAL missing) changes nothing;
4. stops the live cluster, moves its data directory aside (``<data>.before-restore-<time>``,
   kept for the operator to delete) and the recovered one into its place, and starts it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from appliance.backup.errors import BackupError
from appliance.backup.pg import tool
from appliance.backup.wal import ARCHIVE_HELP

RECOVERY_TIMEOUT_S = 1800.0


@dataclass
class Cluster:
    """The node's PostgreSQL cluster as PITR needs it; ``stop``/``start`` act on the live server."""

    data_dir: Path
    stop: Callable[[], None]
    start: Callable[[], None]
    owner: str | None = "postgres"  # the service user owning the data directory (None: this user)
    log: list[str] = field(default_factory=list)

    def as_owner(self) -> list[str]:
        if self.owner is None or os.geteuid() != 0:
            return []
        return ["runuser", "-u", self.owner, "--"]


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {(done.stderr or done.stdout).strip()}")
    return done


# Replay refuses to run with any of these lower than on the server that wrote the WAL.
REPLAY_MINIMUMS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                   "max_locks_per_transaction")

# The recovered cluster archives like the live one, so its new timeline's history file is
# archived the moment it promotes (wherever the live server's settings came from).
ARCHIVING = ("archive_mode", "archive_command")


async def archive_current_wal(url: str, timeout_s: float = 120.0) -> dict[str, str]:
    """Close the live server's WAL segment and wait until the archiver has stored it.

    Returns the live server's settings that a replaying server must match (REPLAY_MINIMUMS)
    and its archiving settings, wherever they were set (config file or command line).
    """
    try:
        connection = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot reach the database to archive its WAL: {exc}") from exc
    try:
        if await connection.fetchval("SELECT current_setting('archive_mode')") != "on":
            raise BackupError("WAL archiving is off on this server: point-in-time recovery is impossible. "
                              + ARCHIVE_HELP)
        try:
            lsn = await connection.fetchval("SELECT pg_switch_wal()")
        except asyncpg.InsufficientPrivilegeError as exc:
            raise BackupError(f"cannot switch WAL ({exc}); the database role needs EXECUTE on "
                              "pg_switch_wal() (sygmax install grants it)") from exc
        segment = await connection.fetchval("SELECT pg_walfile_name($1::pg_lsn)", lsn)
        deadline = time.monotonic() + timeout_s
        while True:
            archived, failed = await connection.fetchrow(
                "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
            if archived is not None and archived[:24] >= segment:
                rows = await connection.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                                              [*REPLAY_MINIMUMS, *ARCHIVING])
                return {row["name"]: row["setting"] for row in rows}
            if time.monotonic() > deadline:
                raise BackupError(f"WAL segment {segment} was not archived within {timeout_s:.0f}s "
                                  f"(last failure: {failed}); see the PostgreSQL log")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def _tail(log: Path, lines: int = 12) -> str:
    """The end of the recovery server's log, for the error message (it is deleted with the attempt)."""
    if not log.exists():
        return "(no log)"
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def _controldata_state(bin_path: str, data_dir: Path, prefix: list[str]) -> str:
    done = subprocess.run([*prefix, bin_path, "-D", str(data_dir)], check=False, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    return ""


def recover(cluster: Cluster, base_backup: Iterable[bytes], wal_dir: Path, target: datetime,
            live_settings: dict[str, str], note: Callable[[str], None] = lambda message: None) -> Path:
    """Build a data directory recovered to ``target``, then swap it in; returns the old one's new path."""
    if not wal_dir.is_dir():
        raise BackupError(f"the WAL archive {wal_dir} does not exist: set backup.wal_dir")
    data_dir = cluster.data_dir
    recovered = data_dir.with_name(data_dir.name + ".restoring")
    prefix = cluster.as_owner()
    shutil.rmtree(recovered, ignore_errors=True)
    recovered.mkdir(mode=0o700)
    if prefix and cluster.owner:
        shutil.chown(recovered, user=cluster.owner, group=cluster.owner)
    note("unpacking the base backup")
    untar = subprocess.Popen([*prefix, "tar", "-x", "-f", "-", "-C", str(recovered)], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        for data in base_backup:
            untar.stdin.write(data)
        untar.stdin.close()
    except BrokenPipeError:
        pass
    if untar.wait() != 0:
        shutil.rmtree(recovered, ignore_errors=True)
        raise BackupError(f"unpacking the base backup failed: {untar.stderr.read().decode(errors='replace')}")
    settings = (
        "\n# Written by `sygmax restore --at`; removed once recovery is done.\n"
        f"restore_command = 'cp \"{wal_dir}/%f\" \"%p\"'\n"
        f"recovery_target_time = '{target.astimezone(UTC).isoformat()}'\n"
        "recovery_target_action = 'promote'\n"
    )
    auto_conf = recovered / "postgresql.auto.conf"
    original_auto = auto_conf.read_text() if auto_conf.exists() else ""
    auto_conf.write_text(original_auto + settings)
    (recovered / "recovery.signal").write_text("")
    for path in (auto_conf, recovered / "recovery.signal"):
        if prefix and cluster.owner:
            shutil.chown(path, user=cluster.owner, group=cluster.owner)
    socket_dir = Path(tempfile.mkdtemp(prefix="sygmax-pitr-"))
    if prefix and cluster.owner:
        shutil.chown(socket_dir, user=cluster.owner, group=cluster.owner)
    log = socket_dir / "recovery.log"
    # No TCP and a private socket: nothing can connect to the half-recovered cluster.
    options = f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c port=5432"
    for name, value in live_settings.items():
        if name in REPLAY_MINIMUMS:
            options += f" -c {name}={int(value)}"
        elif "'" not in value:  # pg_ctl hands the options to sh: single quotes keep the command whole
            options += f" -c {name}='{value}'"
    note(f"replaying WAL up to {target.isoformat()}")
    started = subprocess.run([*prefix, tool("pg_ctl"), "-D", str(recovered), "-o", options, "-l", str(log),
                              "-w", "-t", str(int(RECOVERY_TIMEOUT_S)), "start"], check=False, capture_output=True,
                             text=True)
    try:
        if started.returncode != 0:
            raise BackupError(f"the recovery server did not start: {started.stderr.strip()} | {_tail(log)}")
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        # The server deletes recovery.signal when it promotes at the target (pg_control says
        # "in production" from the start: the base backup copied the primary's).
        while (recovered / "recovery.signal").exists() or _controldata_state(
                tool("pg_controldata"), recovered, prefix) != "in production":
            alive = subprocess.run([*prefix, tool("pg_ctl"), "-D", str(recovered), "status"],
                                   check=False, capture_output=True).returncode == 0
            if not alive or time.monotonic() > deadline:
                raise BackupError(f"recovery to {target.isoformat()} failed: {_tail(log)}")
            time.sleep(0.3)
        _run([*prefix, tool("pg_ctl"), "-D", str(recovered), "-m", "fast", "-w", "stop"], "stopping the recovery server")
    except BaseException:
        subprocess.run([*prefix, tool("pg_ctl"), "-D", str(recovered), "-m", "immediate", "-w", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(recovered, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    shutil.rmtree(socket_dir, ignore_errors=True)
    auto_conf.write_text(original_auto)
    note("swapping in the recovered data directory")
    cluster.stop()
    aside = data_dir.with_name(f"{data_dir.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    data_dir.rename(aside)
    recovered.rename(data_dir)
    try:
        cluster.start()
    except BaseException:
        # The recovered cluster does not start: put the previous one back, serving as before.
        data_dir.rename(recovered)
        aside.rename(data_dir)
        cluster.start()
        raise
    return aside
