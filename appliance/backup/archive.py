"""The plaintext inside an archive: a POSIX tar stream (pax headers), written part by part.

Why tar: after decryption (``sygmax backup decrypt -o x.tar``, which restores do not need) an operator can
read an archive with any tar tool. Why parts of at most ``CHUNK`` bytes: a tar member's size
goes in its header before its data, and neither ``pg_dump``'s output nor an object that is
being streamed has a known size in advance; cutting every stream into members of at most 4 MiB
keeps memory flat whatever the data size without spooling to disk.

Members, in this order::

    backup.json                 versions, migrations, PostgreSQL version, created_at, reason
    config/<file>               sygmax.toml, secrets.json, appliance.json, keys/<JWT key files>
    database/<n>.dump           `pg_dump -Fc` output, cut into chunks
    basebackup/<n>.tar          `pg_basebackup -Ft` output (only with WAL archiving, for PITR)
    objects/<key>/<n>           every stored object (pax header SYGMAX.key holds the exact key)
    manifest.json               every part with its size and sha256; last, since only now known

Restore and verify walk the members once, recomputing every part's sha256, and accept the
archive only if the manifest (last member) agrees with everything read, nothing is missing
and nothing extra is present.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.backup.crypto import DecryptingReader
from appliance.backup.errors import ArchiveRefused

CHUNK = 4 * 1024 * 1024
METADATA = "backup.json"
MANIFEST = "manifest.json"


class PartWriter:
    """One part being written: bytes in, members of at most CHUNK bytes out, sha256 kept."""

    def __init__(self, owner: TarWriter, part: str, directory: str, suffix: str, pax: dict[str, str]) -> None:
        self.owner, self.part, self.directory, self.suffix = owner, part, directory, suffix
        self.pax = {"SYGMAX.part": part, **pax}
        self.digest = hashlib.sha256()
        self.size = 0
        self.number = 0
        self.buffer = bytearray()

    def _emit(self, data: bytes) -> None:
        self.owner.member(f"{self.directory}/{self.number:06d}{self.suffix}", data, self.pax)
        self.number += 1

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self._emit(bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]

    def finish(self, **extra) -> dict:
        if self.buffer or self.number == 0:  # an empty part still has one member, so it is present
            self._emit(bytes(self.buffer))
            self.buffer.clear()
        entry = {"sha256": self.digest.hexdigest(), "size": self.size, **extra}
        self.owner.parts[self.part] = entry
        return entry


class TarWriter:
    """Append members to a streamed tar; records every part's size and sha256 for the manifest."""

    def __init__(self, fileobj) -> None:
        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by close()
        self.parts: dict[str, dict] = {}
        self.bytes_written = 0

    def member(self, name: str, data: bytes, pax: dict[str, str] | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        if pax:
            info.pax_headers = pax
        self.tar.addfile(info, io.BytesIO(data))
        self.bytes_written += len(data)

    def add_json(self, name: str, value: dict) -> None:
        self.member(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def part(self, part: str, directory: str, suffix: str = "", pax: dict[str, str] | None = None) -> PartWriter:
        return PartWriter(self, part, directory, suffix, pax or {})

    def close(self) -> None:
        self.tar.close()


@dataclass
class Contents:
    """What a walk through an archive found (every checksum already checked)."""

    metadata: dict
    manifest: dict
    parts: dict[str, dict] = field(default_factory=dict)


def _member_error(name: str, message: str) -> ArchiveRefused:
    return ArchiveRefused(f"{name} is corrupt: {message}")


def walk(reader: DecryptingReader, name: str = "archive") -> Iterator[tuple[str, str, bytes, dict]]:
    """Yield ``(kind, part, data, pax)`` for every member, kind being config/database/basebackup/objects.

    The final ``("end", "", b"", contents)``-shaped item is not yielded; instead the generator's
    return value (``StopIteration.value``) is the checked :class:`Contents`. Raises
    :class:`ArchiveRefused` on any mismatch, a missing or extra part, or a truncated stream.
    """
    hashes: dict[str, hashlib._Hash] = {}
    sizes: dict[str, int] = {}
    order: list[str] = []
    metadata: dict | None = None
    manifest: dict | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if manifest is not None:
                    raise _member_error(name, f"member {member.name} follows the manifest")
                if not member.isfile():
                    raise _member_error(name, f"unexpected tar entry {member.name}")
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise ArchiveRefused(f"{name} is truncated inside {member.name}")
                if member.name == METADATA:
                    if metadata is not None or order:
                        raise _member_error(name, "backup.json is not the first member")
                    metadata = json.loads(data)
                    continue
                if metadata is None:
                    raise _member_error(name, "it does not start with backup.json")
                if member.name == MANIFEST:
                    manifest = json.loads(data)
                    continue
                part = member.pax_headers.get("SYGMAX.part")
                kind = member.name.split("/", 1)[0]
                if not part or kind not in ("config", "database", "basebackup", "objects"):
                    raise _member_error(name, f"unexpected member {member.name}")
                if part not in hashes:
                    hashes[part] = hashlib.sha256()
                    sizes[part] = 0
                    order.append(part)
                hashes[part].update(data)
                sizes[part] += len(data)
                yield kind, part, data, dict(member.pax_headers)
    except tarfile.ReadError as exc:
        raise ArchiveRefused(f"{name} is corrupt or truncated: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _member_error(name, f"unreadable metadata ({exc})") from exc
    # The tar end marker is followed by padding: read to the authenticated last segment.
    while reader.read(CHUNK):
        pass
    if not reader.at_end():
        raise ArchiveRefused(f"{name} is truncated")
    if metadata is None or manifest is None:
        raise ArchiveRefused(f"{name} is truncated: {'backup.json' if metadata is None else 'manifest.json'} is missing")
    expected = manifest.get("parts", {})
    missing = sorted(set(expected) - set(hashes))
    extra = sorted(set(hashes) - set(expected))
    if missing or extra:
        raise _member_error(name, f"parts missing {missing[:5]} / not in the manifest {extra[:5]}")
    for part, entry in expected.items():
        if hashes[part].hexdigest() != entry["sha256"] or sizes[part] != entry["size"]:
            raise _member_error(name, f"the checksum of {part} does not match the manifest")
    return Contents(metadata, manifest, expected)
