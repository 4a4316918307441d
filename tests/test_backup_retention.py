"""Retention (7 daily, 4 weekly by default; only scheduled archives) and the scheduled job of the
backup plugin, run the way the scheduler profile runs it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.backup.crypto import EncryptingWriter
from appliance.backup.location import DirectoryLocation
from appliance.backup.retention import prune, select_kept
from appliance.backup.scheduled import run_scheduled
from appliance.backup.verify import list_archives, verify_archive
from tests.backup_helpers import KEY, node_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday


def test_select_kept_daily_and_weekly():
    # Two archives a day for 60 days: the newest of each of the last 7 days and of the last 4 weeks.
    archives = [(f"a{day}-{hour}", NOW - timedelta(days=day, hours=hour)) for day in range(60) for hour in (0, 5)]
    kept = select_kept(archives, keep_daily=7, keep_weekly=4)
    daily = {f"a{day}-0" for day in range(7)}
    assert daily <= kept
    weeks = {created.isocalendar()[:2] for name, created in archives if name in kept}
    assert len(weeks) == 4
    # This week and last week already hold a daily one (Sunday the 22nd); two older Sundays join.
    assert kept == daily | {"a10-0", "a17-0"}
    assert select_kept(archives, keep_daily=1, keep_weekly=0) == {"a0-0"}


def fake_archive(directory: Path, name: str, created: datetime, reason: str, base_backup: bool = False) -> None:
    """A real archive header and empty stream: retention reads nothing else."""
    with open(directory / name, "wb") as handle:
        writer = EncryptingWriter(handle.write, KEY, {"created_at": created.isoformat(), "reason": reason,
                                                      "sygmax_version": "0.1.0", "base_backup": base_backup})
        writer.close()


def test_prune_only_scheduled_archives_and_old_wal(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    for day in range(20):
        fake_archive(archives, f"s{day:02d}.sygbak", NOW - timedelta(days=day), "scheduled", base_backup=True)
    fake_archive(archives, "manual-old.sygbak", NOW - timedelta(days=90), "manual", base_backup=False)
    fake_archive(archives, "pre-upgrade.sygbak", NOW - timedelta(days=30), "pre-upgrade", base_backup=True)
    wal = tmp_path / "wal"
    wal.mkdir()
    for age_days, name in ((40, "000000010000000000000001"), (25, "000000010000000000000002"),
                           (1, "000000010000000000000009"), (40, "00000002.history")):
        path = wal / name
        path.write_bytes(b"x")
        stamp = (NOW - timedelta(days=age_days)).timestamp()
        os.utime(path, (stamp, stamp))

    result = prune(DirectoryLocation(archives), keep_daily=7, keep_weekly=4, wal_dir=wal)
    left = sorted(path.name for path in archives.iterdir())
    assert "manual-old.sygbak" in left and "pre-upgrade.sygbak" in left
    scheduled_left = [name for name in left if name.startswith("s")]
    assert {f"s{day:02d}.sygbak" for day in range(7)} <= set(scheduled_left)
    assert len(scheduled_left) == len(result.kept) and len(result.deleted) == 20 - len(result.kept)
    assert len(scheduled_left) < 20
    # WAL before the oldest archive with a base backup (the pre-upgrade one, 30 days) goes.
    assert sorted(path.name for path in wal.iterdir()) == [
        "000000010000000000000002", "000000010000000000000009", "00000002.history"]
    assert result.wal_removed == 1


@pytest.fixture
def scheduled_env(environ, tmp_path):
    Path(environ["SYGMAX_AUTH_KEYS_DIR"]).mkdir(parents=True)
    return {**environ, "SYGMAX_BACKUP_KEY": KEY, "SYGMAX_BACKUP_LOCATION": str(tmp_path / "archives"),
            "SYGMAX_BACKUP_SCHEDULE_HOUR": "3", "SYGMAX_BACKUP_KEEP_DAILY": "2", "SYGMAX_BACKUP_KEEP_WEEKLY": "0"}


async def test_scheduled_job_makes_one_backup_a_day_and_prunes(scheduled_env, tmp_path):
    from plugins.backup.plugin import plugin
    from sygmax.kernel import Kernel

    settings = node_settings(tmp_path / "absent.toml", scheduled_env)
    location = DirectoryLocation(tmp_path / "archives")
    (tmp_path / "archives").mkdir()
    for day in (3, 2, 1):
        fake_archive(tmp_path / "archives", f"old-{day}.sygbak", datetime.now(UTC) - timedelta(days=day),
                     "scheduled")
    kernel = Kernel.build(settings, {"backup": plugin})
    try:
        [schedule] = plugin.schedules
        if datetime.now(UTC).hour < 3:
            # Before the configured hour nothing happens; run the rest from 03:00 on.
            await schedule.job(kernel)
            assert len(list_archives(location)) == 3
            settings = node_settings(tmp_path / "absent.toml", {**scheduled_env, "SYGMAX_BACKUP_SCHEDULE_HOUR": "0"})
            kernel.settings = settings
        await schedule.job(kernel)
    finally:
        await kernel.redis.aclose()
    listed = list_archives(location)
    today = [item for item in listed if item.metadata["created_at"][:10] == datetime.now(UTC).date().isoformat()]
    assert len(today) == 1 and today[0].metadata["reason"] == "scheduled"
    verify_archive(today[0].entry.location, KEY)
    # keep_daily = 2: today's and yesterday's stay, the two older ones were pruned.
    assert sorted(item.entry.name for item in listed if item.entry.name.startswith("old-")) == ["old-1.sygbak"]
    # A second run the same day makes nothing new.
    assert run_scheduled(settings).backup is None
    assert len(list_archives(location)) == 2


def test_scheduled_run_waits_for_the_hour(scheduled_env, tmp_path):
    settings = node_settings(tmp_path / "absent.toml", {**scheduled_env, "SYGMAX_BACKUP_SCHEDULE_HOUR": "5"})
    early = datetime(2026, 11, 25, 4, 59, tzinfo=UTC)
    assert run_scheduled(settings, now=early).backup is None
    assert not (tmp_path / "archives").exists()
