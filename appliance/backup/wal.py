"""Continuous WAL archiving into the backup location, and pruning of WAL no backup needs.

PostgreSQL runs ``archive_command`` for every completed WAL segment. The command is plain
``sh`` (no Python start-up per segment, nothing the ``postgres`` user cannot execute): it
copies the segment to a hidden temporary name, fsyncs it and renames it into place, so a
crash never leaves a torn segment under the real name. A segment that is already archived
with identical content succeeds again (PostgreSQL retries after crashes); a different file
under the same name fails, which is PostgreSQL's signal that something is wrong.

roles/postgresql/templates/sygmax.conf.j2 renders the same command (tests compare them).
"""

from __future__ import annotations

from pathlib import Path

ARCHIVE_HELP = (
    "`sygmax install` turns it on (archive_mode, archive_command into <prefix>/var/lib/sygmax/backups/wal)."
)


def archive_command(wal_dir: str | Path) -> str:
    target = f"{wal_dir}/%f"
    return (
        f'if [ -f "{target}" ]; then cmp -s "%p" "{target}"; '
        f'else cp "%p" "{wal_dir}/.%f.tmp" && sync "{wal_dir}/.%f.tmp" && mv "{wal_dir}/.%f.tmp" "{target}"; fi'
    )


def prune_wal(wal_dir: Path, older_than: float) -> int:
    """Delete archived segments completed before ``older_than`` (epoch seconds); history files stay.

    Segments are copied when completed, so a segment archived before the oldest kept base
    backup began cannot be needed by any point-in-time recovery still possible.
    """
    if not wal_dir.is_dir():
        return 0
    removed = 0
    for path in wal_dir.iterdir():
        if path.name.endswith(".history") or path.name.startswith("."):
            continue
        try:
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
