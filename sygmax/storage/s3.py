"""S3-compatible object storage (MinIO, Ceph, Garage, AWS) through the ``minio`` SDK.

The SDK is blocking, so every call runs in a worker thread. Uploads of unknown or large size go
through minio's multipart upload fed by :class:`_BlockingReader`, which pulls the async stream one
part at a time: memory stays around two parts whatever the object size.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from sygmax.config import StorageLocation
from sygmax.storage.base import (
    CHUNK_SIZE,
    Data,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    as_chunks,
    check_declared_size,
    check_expiry,
    limited,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")
_MISSING_OBJECT = ("NoSuchKey", "NoSuchObject")
_BUCKET_ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


class _BlockingReader:
    """A blocking ``read(n)`` over an async stream, for minio's ``put_object`` in a worker thread.

    Each read asks the event loop for chunks until ``n`` bytes are buffered, so at most one part
    (plus one chunk) is held here at a time.
    """

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._buffer = bytearray()
        self._eof = False
        self.total = 0
        self.cancelled = False

    async def _next(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            if self.cancelled:
                raise StorageError("upload cancelled")
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        count = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self.total += count
        return data


class S3ObjectStore(ObjectStore):
    def __init__(self, location: StorageLocation, *, max_object_size: int, multipart_threshold: int) -> None:
        if location.kind != "s3":
            raise StorageError(f"S3ObjectStore needs an s3:// location, got {location.kind!r}")
        self.max_object_size = max_object_size
        self.multipart_threshold = multipart_threshold
        self.endpoint = location.endpoint
        self.bucket = location.bucket
        # Bounded timeouts and retries (minio's defaults wait minutes) so /readyz answers promptly.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=120),
            maxsize=32,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            location.endpoint,
            access_key=location.access_key,
            secret_key=location.secret_key,
            secure=location.secure,
            region=location.region,
            http_client=self._http,
        )
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    def _where(self, key: str | None) -> str:
        return f"{self.endpoint}/{self.bucket}" + (f"/{key}" if key else "")

    async def _call(self, fn: Callable[..., T], /, *args: Any, obj: str | None = None, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread and translate its errors into the storage ones."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StorageError:
            raise
        except S3Error as exc:
            if obj is not None and exc.code in _MISSING_OBJECT:
                raise ObjectNotFound(obj) from exc
            raise StorageError(f"S3 {exc.code} for {self._where(obj)}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"S3 request to {self._where(obj)} failed: {exc}") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket on first use so a fresh install needs no manual step."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if self._bucket_ready:
                return
            if not await self._call(self._client.bucket_exists, self.bucket):
                try:
                    await self._call(self._client.make_bucket, self.bucket)
                except StorageError as exc:
                    cause = exc.__cause__
                    if not (isinstance(cause, S3Error) and cause.code in _BUCKET_ALREADY_THERE):
                        raise
            self._bucket_ready = True

    async def put(
        self, key: str, data: Data, *, size: int | None = None, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        validate_key(key)
        check_declared_size(key, size, self.max_object_size)
        await self.ensure_bucket()
        # Sequential parts (num_parallel_uploads=1): memory stays bounded and an abort cannot race a
        # part still in flight.
        upload = partial(
            self._client.put_object, self.bucket, key,
            content_type=content_type, part_size=self.multipart_threshold, num_parallel_uploads=1,
        )
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload = data if isinstance(data, bytes) else bytes(data)
            if len(payload) > self.max_object_size:
                raise ObjectTooLarge(key, self.max_object_size)
            if size is not None and size != len(payload):
                raise StorageError(f"object {key!r} is {len(payload)} bytes, not its declared size of {size}")
            result = await self._call(upload, io.BytesIO(payload), len(payload), obj=key)
            total = len(payload)
        else:
            # Limit and size errors raised by the reader make minio abort the multipart upload
            # before completing it, so nothing partial is stored.
            stream = limited(key, as_chunks(data), self.max_object_size, size)
            reader = _BlockingReader(stream, asyncio.get_running_loop())
            try:
                result = await self._call(upload, reader, -1, obj=key)
            except asyncio.CancelledError:
                reader.cancelled = True  # the worker thread outlives the task: make its next read fail
                raise
            except BaseException:
                await stream.aclose()
                raise
            await stream.aclose()
            total = reader.total
        return ObjectInfo(
            key=key,
            size=total,
            etag=(result.etag or "").strip('"'),
            content_type=content_type,
            modified=datetime.now(UTC),
        )

    async def get(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        validate_key(key)
        await self.ensure_bucket()
        response = await self._call(self._client.get_object, self.bucket, key, obj=key)
        try:
            chunks = response.stream(chunk_size)
            while (chunk := await self._call(next, chunks, None, obj=key)) is not None:
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        await self.ensure_bucket()
        found = await self._call(self._client.stat_object, self.bucket, key, obj=key)
        return ObjectInfo(
            key=key,
            size=found.size or 0,
            etag=(found.etag or "").strip('"'),
            content_type=found.content_type or "application/octet-stream",
            modified=found.last_modified or datetime.now(UTC),
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self.ensure_bucket()
        await self._call(self._client.remove_object, self.bucket, key, obj=key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        await self.ensure_bucket()
        objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        while batch := await self._call(lambda: [*islice(objects, 1000)]):
            for found in batch:
                yield ObjectInfo(
                    key=found.object_name or "",
                    size=found.size or 0,
                    etag=(found.etag or "").strip('"'),
                    content_type=None,
                    modified=found.last_modified or datetime.now(UTC),
                )

    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        validate_key(key)
        check_expiry(expires)
        await self.ensure_bucket()  # presigning may look up the bucket region
        return await self._call(self._client.presigned_get_object, self.bucket, key, expires=expires, obj=key)

    async def presigned_put_url(self, key: str, expires: timedelta) -> str:
        validate_key(key)
        check_expiry(expires)
        await self.ensure_bucket()
        return await self._call(self._client.presigned_put_object, self.bucket, key, expires=expires, obj=key)

    async def check(self) -> None:
        self._bucket_ready = False  # really ask the server, and recreate a bucket deleted behind our back
        await self.ensure_bucket()

    async def close(self) -> None:
        self._http.clear()
