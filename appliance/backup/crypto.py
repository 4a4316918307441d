"""Chunked authenticated encryption of a whole archive (the STREAM construction).

File layout::

    b"SYGMAXBK" | u32 header length | header JSON | sha256(header JSON) | segment | segment | ...

The header (plaintext, so ``sygmax backup list`` can show what an archive is without the key)
carries the format version, the scrypt salt and cost, a 7-byte nonce prefix, a key check and
a little metadata (Sygmax version, creation time, reason). Every segment is AES-256-GCM over
up to ``SEGMENT`` bytes of plaintext with the nonce ``prefix | u32 counter | last flag`` and the
header's sha256 as associated data. Hence:

- a wrong key fails the key check before any segment is read;
- a flipped byte anywhere fails the GCM tag of its segment (or the header checksum);
- reordered or dropped segments fail (the counter is part of the nonce);
- a truncated archive ends without a segment whose last flag is set.

Key derivation: scrypt (n=2**15, r=8, p=1; the parameters are stored, so they can be raised
later) turns the operator's key into a master secret; HKDF-SHA256 derives from it the AES
key and the key check, which are therefore independent of each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from base64 import b64decode, b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.backup.errors import ArchiveRefused

MAGIC = b"SYGMAXBK"
FORMAT = 1
SEGMENT = 1024 * 1024
TAG = 16
MAX_HEADER = 64 * 1024
SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def _derive(key: str, salt: bytes, params: dict) -> tuple[bytes, bytes]:
    master = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"]).derive(key.encode())

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return hkdf(b"sygmax-backup/1/aes-256-gcm"), hkdf(b"sygmax-backup/1/key-check")


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A write-only file object: plaintext in, header and sealed segments out to ``sink``."""

    def __init__(self, sink: Callable[[bytes], None], key: str, metadata: dict) -> None:
        self._sink = sink
        salt, self._prefix = os.urandom(16), os.urandom(7)
        aes_key, check = _derive(key, salt, SCRYPT)
        self._aead = AESGCM(aes_key)
        header = {
            "format": FORMAT,
            "kdf": {"name": "scrypt", "salt": b64encode(salt).decode(), **SCRYPT},
            "cipher": "AES-256-GCM-STREAM",
            "segment": SEGMENT,
            "nonce_prefix": b64encode(self._prefix).decode(),
            "key_check": b64encode(check).decode(),
            "metadata": metadata,
        }
        text = json.dumps(header, sort_keys=True).encode()
        self._aad = hashlib.sha256(text).digest()
        sink(MAGIC + struct.pack(">I", len(text)) + text + self._aad)
        self._buffer = bytearray()
        self._counter = 0
        self.closed = False
        self.written = 0  # plaintext bytes

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.written += len(data)
        # Keep one full segment back: only close() knows which segment is the last.
        while len(self._buffer) > SEGMENT:
            self._seal(bytes(self._buffer[:SEGMENT]), last=False)
            del self._buffer[:SEGMENT]
        return len(data)

    def _seal(self, plaintext: bytes, last: bool) -> None:
        self._sink(self._aead.encrypt(_nonce(self._prefix, self._counter, last), plaintext, self._aad))
        self._counter += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self.closed = True

    def flush(self) -> None:
        """tarfile calls it; segments leave as soon as they are full."""


@dataclass(frozen=True)
class Header:
    data: dict
    aad: bytes
    size: int  # bytes before the first segment

    @property
    def metadata(self) -> dict:
        return self.data.get("metadata", {})


def _read_exact(source: BinaryIO, size: int) -> bytes:
    chunks = []
    while size:
        chunk = source.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_header(source: BinaryIO, name: str = "archive") -> Header:
    """Parse and check the plaintext header; :class:`ArchiveRefused` if it is not a sound one."""
    start = _read_exact(source, len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or start[: len(MAGIC)] != MAGIC:
        raise ArchiveRefused(f"{name} is not a Sygmax backup archive (no SYGMAXBK header)")
    (length,) = struct.unpack(">I", start[len(MAGIC):])
    if length > MAX_HEADER:
        raise ArchiveRefused(f"{name} is corrupt: its header claims {length} bytes")
    text = _read_exact(source, length)
    digest = _read_exact(source, 32)
    if len(text) < length or len(digest) < 32:
        raise ArchiveRefused(f"{name} is truncated: it ends inside its header")
    if hashlib.sha256(text).digest() != digest:
        raise ArchiveRefused(f"{name} is corrupt: its header checksum does not match")
    data = json.loads(text)
    if data.get("format") != FORMAT:
        raise ArchiveRefused(
            f"{name} uses archive format {data.get('format')}; this Sygmax reads format {FORMAT} "
            "(upgrade Sygmax to restore it)"
        )
    return Header(data, digest, len(MAGIC) + 4 + length + 32)


class DecryptingReader:
    """A read-only file object over the plaintext of an archive; refuses anything not authentic."""

    def __init__(self, source: BinaryIO, key: str, name: str = "archive") -> None:
        self._source = source
        self._name = name
        self.header = read_header(source, name)
        data = self.header.data
        kdf = data["kdf"]
        aes_key, check = _derive(key, b64decode(kdf["salt"]), kdf)
        if not constant_time.bytes_eq(check, b64decode(data["key_check"])):
            raise ArchiveRefused(f"wrong backup key for {name} (the key check does not match)")
        self._aead = AESGCM(aes_key)
        self._prefix = b64decode(data["nonce_prefix"])
        self._segment = int(data["segment"])
        self._counter = 0
        self._done = False
        self._current = b""
        self._offset = 0
        self._position = 0
        self._pending = _read_exact(source, self._segment + TAG)
        self.consumed = self.header.size  # archive bytes read so far, for progress bars

    def _next_segment(self) -> bytes:
        if self._done:
            return b""
        current = self._pending
        if not current:
            raise ArchiveRefused(f"{self._name} is truncated: it ends after segment {self._counter}")
        following = _read_exact(self._source, self._segment + TAG)
        last = not following
        try:
            plaintext = self._aead.decrypt(_nonce(self._prefix, self._counter, last), current, self.header.aad)
        except InvalidTag:
            offset = self.header.size + self._counter * (self._segment + TAG)
            if last:
                raise ArchiveRefused(
                    f"{self._name} is truncated or corrupt: its final segment (from byte {offset}) "
                    "does not authenticate"
                ) from None
            raise ArchiveRefused(
                f"{self._name} is corrupt: segment {self._counter} (bytes {offset}-"
                f"{offset + self._segment + TAG - 1}) fails its authentication check"
            ) from None
        self.consumed += len(current)
        self._counter += 1
        self._pending = following
        self._done = last
        return plaintext

    def read(self, size: int = -1) -> bytes:
        # Slices of the current segment, never a growing buffer: tarfile reads in small blocks.
        parts = []
        need = -1 if size is None or size < 0 else size
        while need != 0:
            if self._offset >= len(self._current):
                if self._done:
                    break
                self._current, self._offset = self._next_segment(), 0
                continue
            available = len(self._current) - self._offset
            take = available if need < 0 else min(need, available)
            parts.append(self._current[self._offset:self._offset + take])
            self._offset += take
            if need > 0:
                need -= take
        data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def at_end(self) -> bool:
        """True when every segment, the last included, has been read and authenticated."""
        return self._done and self._offset >= len(self._current)
