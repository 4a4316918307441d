"""Backups of a Sygmax node: one encrypted, streamed archive; verify, list, restore, PITR, retention.

The public entry points are re-exported here lazily (this package is also imported by
PostgreSQL's ``archive_command`` through :mod:`appliance.backup.wal`, which must start fast):

- :func:`create_backup` writes an archive (database, objects, config and secrets);
- ``appliance.backup.verify.verify_archive`` checks every checksum without restoring;
- ``appliance.backup.restore.restore_archive`` restores one, ``--at`` included;
- ``appliance.backup.retention.prune`` keeps N daily and M weekly archives.

Design, and why:

- One file per backup, a tar stream (:mod:`appliance.backup.archive`) written part by part from
  its sources (the ``pg_dump`` pipe, the object store through ``sygmax.storage``, so local disk
  and S3 both work) into the destination (a directory or S3, :mod:`appliance.backup.location`):
  memory stays flat, nothing is spooled to disk, and a failed backup leaves nothing behind.
- The database as ``pg_dump -Fc``: portable across hosts and PostgreSQL minor versions, and
  restorable into an already installed node in one transaction. With WAL archiving on, the
  archive also holds a ``pg_basebackup``: point-in-time recovery needs a physical copy, which
  a logical dump cannot provide (:mod:`appliance.backup.pitr`).
- The whole archive is encrypted, not only config and secrets: the database and objects are
  user data too. Chunked AES-256-GCM with counter and last-chunk flag in the nonce detects a
  wrong key, a flipped byte, reordering and truncation (:mod:`appliance.backup.crypto`).
- A manifest with every part's size and sha256, the Sygmax version and each module's applied
  migrations, so ``verify`` checks everything and a restore refuses an archive from a newer
  Sygmax before changing anything (:mod:`appliance.backup.verify`, :mod:`appliance.backup.restore`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.backup.create import BackupResult
    from sygmax.config import Settings

# (what is being written, bytes done so far, bytes expected or None when unknown)
ProgressCallback = Callable[[str, int, "int | None"], None]


def create_backup(
    settings: Settings | None = None,
    *,
    output: str | Path | None = None,
    key: str | None = None,
    reason: str = "manual",
    base_backup: bool | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """Write one encrypted backup archive of this node and return what was written.

    ``settings``: the node's validated settings (``sygmax.app.load_configuration()[0]``);
    ``None`` loads them from ``SYGMAX_CONFIG`` like every ``sygmax`` command does.
    ``output``: a directory, a file path ending in ``.sygbak``, or ``s3://ACCESS:SECRET@host:port/bucket/prefix``;
    ``None`` uses ``backup.location`` (default ``<prefix>/var/lib/sygmax/backups``).
    ``key``: the operator's backup key; ``None`` takes ``backup.key``, ``SYGMAX_BACKUP_KEY`` or
    ``backup.key_file`` (a missing key raises :class:`appliance.backup.errors.BackupError`).
    ``reason``: recorded in the archive and shown by ``sygmax backup list`` ("manual",
    "scheduled", "pre-upgrade", ...); scheduled archives are the ones retention prunes.
    ``base_backup``: also store a ``pg_basebackup`` for point-in-time recovery; ``None`` does
    so when ``backup.wal_archive`` is on.
    ``progress``: called as data is written, for a progress bar.

    Blocking (runs its own event loop for object storage): call it from a thread when inside
    one. Raises :class:`appliance.backup.errors.BackupError` with a readable message on any
    failure; a failed backup leaves no partial archive behind.
    """
    from appliance.backup.create import create_backup as _create

    return _create(settings, output=output, key=key, reason=reason, base_backup=base_backup, progress=progress)
