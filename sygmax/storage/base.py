"""The object storage contract shared by the local-disk and S3 backends.

Keys are S3-style names (``"avatars/42.png"``). They are validated identically for both backends
so a key that works in development on local disk also works in production on S3, and so no key
can ever name a path outside the local storage root.
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sygmax.config import StorageSettings

CHUNK_SIZE = 1024 * 1024
MAX_KEY_BYTES = 1024
MAX_PRESIGN_EXPIRY = timedelta(days=7)

Data = bytes | bytearray | memoryview | AsyncIterable[bytes]


class StorageError(Exception):
    """Any storage failure: the backend is unreachable, misconfigured or refused the operation."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"object {key!r} not found")


class ObjectTooLarge(StorageError):
    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.limit = limit
        super().__init__(f"object {key!r} exceeds the maximum object size of {limit} bytes")


class InvalidKey(StorageError, ValueError):
    """The key is malformed or would address something outside the store."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about a stored object.

    ``etag`` is the sha256 hex digest on local disk and the S3 ETag on S3. ``content_type`` is
    ``None`` in :meth:`ObjectStore.list` results because S3 listings do not carry it.
    """

    key: str
    size: int
    etag: str
    content_type: str | None
    modified: datetime


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object name, else raise :class:`InvalidKey` saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is longer than {MAX_KEY_BYTES} bytes of UTF-8")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in key):
        raise InvalidKey(f"object key {key!r} contains a control character or lone surrogate")
    if "\\" in key:
        raise InvalidKey(f"object key {key!r} contains a backslash; use '/' as the separator")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} must not start with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"object key {key!r} has an empty, '.' or '..' path segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A list prefix is a key, a key with a trailing '/', or empty (everything)."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def check_expiry(expires: timedelta) -> int:
    """Presigned URLs live between one second and seven days (the S3 limit) on both backends."""
    seconds = int(expires.total_seconds())
    if not 1 <= seconds <= MAX_PRESIGN_EXPIRY.total_seconds():
        raise StorageError(f"presigned URL expiry must be between 1 second and 7 days, got {expires}")
    return seconds


def check_declared_size(key: str, size: int | None, limit: int) -> None:
    """Refuse up front when the caller already says the object is too large."""
    if size is not None and size < 0:
        raise StorageError(f"declared size of {key!r} must not be negative, got {size}")
    if size is not None and size > limit:
        raise ObjectTooLarge(key, limit)


async def as_chunks(data: Data, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Present bytes or an async byte stream as one async stream (bytes are sliced, not copied)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), chunk_size):
            yield view[start:start + chunk_size]
        return
    async for chunk in data:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise StorageError(f"object streams must yield bytes, got {type(chunk).__name__}")
        yield chunk


async def limited(
    key: str, chunks: AsyncIterable[bytes], limit: int, size: int | None
) -> AsyncIterator[bytes]:
    """Pass a stream through, failing as soon as it outgrows ``limit`` or differs from ``size``."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ObjectTooLarge(key, limit)
        if size is not None and total > size:
            raise StorageError(f"object {key!r} is longer than its declared size of {size} bytes")
        if chunk:
            yield chunk
    if size is not None and total != size:
        raise StorageError(f"object {key!r} is {total} bytes, shorter than its declared size of {size} bytes")


class ObjectStore(ABC):
    """Async object storage; every method validates keys with :func:`validate_key`.

    A failed ``put`` never leaves a partial object: the previous object under the key, if any,
    stays as it was.
    """

    max_object_size: int

    @abstractmethod
    async def put(
        self, key: str, data: Data, *, size: int | None = None, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store ``data`` (bytes or an async stream of chunks) under ``key``, replacing any object there."""

    @abstractmethod
    def get(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream an object's bytes; :class:`ObjectNotFound` surfaces on the first iteration."""

    async def read(self, key: str) -> bytes:
        """The whole object in memory: only for objects known to be small."""
        return b"".join([chunk async for chunk in self.get(key)])

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size, etag, content type and modification time, or :class:`ObjectNotFound`."""

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, fetched lazily."""

    @abstractmethod
    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A URL anyone holding it can download the object from until it expires."""

    @abstractmethod
    async def presigned_put_url(self, key: str, expires: timedelta) -> str:
        """A URL anyone holding it can upload the object to (HTTP PUT) until it expires."""

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`StorageError` unless the backend is reachable and writable (readiness)."""

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""


def open_store(settings: StorageSettings, *, public_base_url: str = "") -> ObjectStore:
    """Build the backend named by ``settings.url``; ``public_base_url`` prefixes local presigned URLs."""
    location = settings.location
    if location.kind == "file":
        from sygmax.storage.local import LocalObjectStore

        return LocalObjectStore(
            location.path,
            max_object_size=settings.max_object_size,
            presign_secret=settings.presign_secret,
            public_base_url=public_base_url,
        )
    from sygmax.storage.s3 import S3ObjectStore

    return S3ObjectStore(
        location,
        max_object_size=settings.max_object_size,
        multipart_threshold=settings.multipart_threshold,
    )
