"""Retention: keep the newest scheduled archive of each of the last N days and M ISO weeks.

Only archives the scheduler made (reason ``scheduled``) are pruned; manual and pre-upgrade
archives stay until an operator deletes them. WAL segments older than the oldest archive
still holding a base backup are removed with it: no point in time before that archive can
be recovered any more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from appliance.backup.location import Location
from appliance.backup.verify import list_archives
from appliance.backup.wal import prune_wal

SCHEDULED = "scheduled"


@dataclass
class PruneResult:
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    wal_removed: int = 0


def select_kept(archives: list[tuple[str, datetime]], keep_daily: int, keep_weekly: int) -> set[str]:
    """Names to keep: the newest archive per day for ``keep_daily`` days and per week for ``keep_weekly`` weeks."""
    kept: set[str] = set()
    days: set = set()
    weeks: set = set()
    for name, created in sorted(archives, key=lambda item: item[1], reverse=True):
        day = created.date()
        week = created.isocalendar()[:2]
        if day not in days and len(days) < keep_daily:
            days.add(day)
            kept.add(name)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.add(week)
            kept.add(name)
    return kept


def prune(location: Location, keep_daily: int, keep_weekly: int, wal_dir: Path | None = None) -> PruneResult:
    result = PruneResult()
    listed = [item for item in list_archives(location) if not item.problem]
    scheduled = [(item.entry.name, datetime.fromisoformat(item.metadata["created_at"]))
                 for item in listed if item.metadata.get("reason") == SCHEDULED]
    keep = select_kept(scheduled, keep_daily, keep_weekly)
    for name, _ in scheduled:
        if name in keep:
            result.kept.append(name)
        else:
            location.delete(name)
            result.deleted.append(name)
    if wal_dir is not None:
        bases = [datetime.fromisoformat(item.metadata["created_at"]) for item in listed
                 if item.metadata.get("base_backup") and item.entry.name not in result.deleted]
        if bases:
            result.wal_removed = prune_wal(wal_dir, min(bases).timestamp())
    return result


def scheduled_today(location: Location, now: datetime | None = None) -> bool:
    today = (now or datetime.now(UTC)).date()
    return any(
        item.metadata.get("reason") == SCHEDULED
        and datetime.fromisoformat(item.metadata["created_at"]).date() == today
        for item in list_archives(location) if not item.problem
    )
