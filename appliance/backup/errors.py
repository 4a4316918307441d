"""The two ways a backup operation fails: refused before anything changed, or failed on the way."""

from __future__ import annotations


class BackupError(Exception):
    """A backup, verify or restore could not be done; the message says why and what to do."""


class ArchiveRefused(BackupError):
    """The archive cannot be restored here (wrong key, corrupt, truncated, from a newer Sygmax).

    Always raised before anything on the node was changed.
    """
