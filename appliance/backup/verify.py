"""``sygmax backup verify`` and ``list``: check an archive end to end, show what a location holds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from appliance.backup import ProgressCallback
from appliance.backup.archive import Contents, walk
from appliance.backup.crypto import DecryptingReader, read_header
from appliance.backup.errors import ArchiveRefused, BackupError
from appliance.backup.location import ArchiveEntry, Location, split_archive
from sygmax import __version__


@contextmanager
def open_archive(path: str | Path, key: str) -> Iterator[DecryptingReader]:
    location, name = split_archive(path)
    source = location.open(name)
    try:
        yield DecryptingReader(source, key, name)
    finally:
        source.close()


def _walk_all(reader: DecryptingReader, name: str, progress: ProgressCallback | None, total: int) -> Contents:
    walker = walk(reader, name)
    try:
        while True:
            next(walker)
            if progress:
                progress("verify", reader.consumed, total)
    except StopIteration as stop:
        return stop.value


def archive_size(path: str | Path) -> int:
    location, name = split_archive(path)
    for entry in location.entries():
        if entry.name == name:
            return entry.size
    return 0


def verify_archive(path: str | Path, key: str, progress: ProgressCallback | None = None) -> Contents:
    """Decrypt and check every part against the manifest; :class:`ArchiveRefused` if anything is off."""
    total = archive_size(path)
    with open_archive(path, key) as reader:
        return _walk_all(reader, split_archive(path)[1], progress, total)


def check_compatible(metadata: dict, installed: Sequence[tuple[str, str]]) -> None:
    """Refuse an archive written by a newer Sygmax: newer version or migrations this code lacks."""
    archived = str(metadata.get("sygmax_version", ""))
    try:
        newer = Version(archived) > Version(__version__)
    except InvalidVersion:
        raise ArchiveRefused(f"the archive names an unreadable Sygmax version {archived!r}") from None
    if newer:
        raise ArchiveRefused(
            f"the archive was written by Sygmax {archived}, newer than this Sygmax {__version__}: "
            f"upgrade Sygmax to {archived} or later (sygmax upgrade), then restore"
        )
    known = set(installed)
    unknown = [f"{module}/{name}" for module, names in metadata.get("migrations", {}).items()
               for name in names if (module, name) not in known]
    if unknown:
        raise ArchiveRefused(
            f"the archive's database has migrations this Sygmax does not know ({', '.join(unknown[:5])}): "
            "it comes from a newer version or from a plugin not installed here; install that first"
        )


@dataclass(frozen=True)
class Listed:
    entry: ArchiveEntry
    metadata: dict
    problem: str = ""


def list_archives(location: Location) -> list[Listed]:
    """Every archive in a location with its plaintext header (no key needed, nothing decrypted)."""
    listed = []
    for entry in location.entries():
        try:
            source = location.open(entry.name)
        except BackupError as exc:
            listed.append(Listed(entry, {}, str(exc)))
            continue
        try:
            listed.append(Listed(entry, read_header(source, entry.name).metadata))
        except (ArchiveRefused, ValueError) as exc:
            listed.append(Listed(entry, {}, str(exc)))
        finally:
            source.close()
    return listed
