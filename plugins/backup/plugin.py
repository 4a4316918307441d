"""The backup module: the ``[backup]`` settings section and the daily scheduled backup.

The backup logic is appliance code (``appliance.backup``: it runs pg_dump, talks to the WAL
archive and is shared with ``sygmax backup``, ``restore`` and ``upgrade``); this plugin is how
the scheduler profile reaches it. The job runs in a thread because a backup is blocking work
(child processes, file and object I/O) that must not stall the scheduler's event loop.
"""

from __future__ import annotations

import asyncio

import structlog

from appliance.backup.errors import BackupError
from appliance.backup.scheduled import run_scheduled
from appliance.backup.settings import BackupSettings
from sygmax.plugins import Plugin, Schedule

log = structlog.get_logger("sygmax.backup")


async def daily_backup(kernel) -> None:
    try:
        run = await asyncio.to_thread(run_scheduled, kernel.settings)
    except BackupError as exc:
        log.error("backup_failed", error=str(exc))
        return
    if run.backup is not None:
        log.info("backup_created", archive=run.backup.location, bytes=run.backup.size,
                 objects=run.backup.objects, pruned=run.pruned.deleted if run.pruned else [])


plugin = Plugin(
    name="backup",
    version="1",
    description="Daily encrypted backups with retention; settings for sygmax backup/restore",
    settings=BackupSettings,
    schedules=[Schedule("daily", daily_backup, seconds=900)],
)
