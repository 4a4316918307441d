"""The daily backup the scheduler profile runs (through the ``backup`` plugin's schedule).

The schedule fires every 15 minutes and backs up once per UTC day, from ``backup.schedule_hour``
on, then prunes. Checking "is today's archive there?" instead of firing once at a fixed time
means a scheduler that was down at that hour still makes the day's backup when it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.backup.create import BackupResult, create_backup
from appliance.backup.location import open_location
from appliance.backup.retention import SCHEDULED, PruneResult, prune, scheduled_today
from appliance.backup.settings import backup_settings, default_location, wal_directory
from sygmax.config import Settings


@dataclass
class ScheduledRun:
    backup: BackupResult | None
    pruned: PruneResult | None


def run_scheduled(settings: Settings, now: datetime | None = None) -> ScheduledRun:
    """Make today's backup if it is due and not made yet, then apply retention."""
    now = now or datetime.now(UTC)
    section = backup_settings(settings)
    location = open_location(default_location(settings))
    if now.hour < section.schedule_hour or scheduled_today(location, now):
        return ScheduledRun(None, None)
    made = create_backup(settings, reason=SCHEDULED)
    pruned = prune(location, section.keep_daily, section.keep_weekly, wal_directory(settings))
    return ScheduledRun(made, pruned)
