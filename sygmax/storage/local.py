"""Local-disk object storage for single-node installs and development.

Layout under the root: ``objects/<key>`` holds the bytes, ``meta/<key>.json`` the content type
and sha256, ``tmp/`` the in-progress uploads. Every write goes to ``tmp/`` first, is fsynced and
then renamed into place, so readers see the old object or the new one, never a torn one. Paths are
resolved (symlinks included) and must stay inside the root.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO
from urllib.parse import quote

from sygmax.storage.base import (
    CHUNK_SIZE,
    Data,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    as_chunks,
    check_declared_size,
    check_expiry,
    limited,
    validate_key,
    validate_prefix,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
OBJECTS_PATH = "/api/v1/storage/objects/"


def sign(secret: str, method: str, key: str, expires: int) -> str:
    """HMAC-SHA256 over method, key and expiry: a URL for one cannot be replayed for another."""
    if not secret:
        raise StorageError("storage.presign_secret is empty: set it to presign local-disk URLs")
    message = f"{method.upper()}\n{key}\n{expires}".encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, method: str, key: str, expires: int, signature: str, *, now: float | None = None
) -> bool:
    """True only for an unexpired URL signed with ``secret`` (constant-time comparison)."""
    if not secret or expires < (time.time() if now is None else now):
        return False
    expected = sign(secret, method, key, expires).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    def __init__(
        self,
        root: str | Path,
        *,
        max_object_size: int,
        presign_secret: str = "",
        public_base_url: str = "",
    ) -> None:
        self.root = Path(root)
        self.max_object_size = max_object_size
        self.presign_secret = presign_secret
        self.public_base_url = public_base_url.rstrip("/")
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._tmp = self.root / "tmp"

    # -- paths ---------------------------------------------------------------------------------

    def _inside(self, base: Path, key: str, suffix: str = "") -> Path:
        """The path for ``key`` under ``base``, refusing any that symlinks lead outside the root."""
        parts = key.split("/")
        path = base.joinpath(*parts[:-1], parts[-1] + suffix)
        if not path.resolve().is_relative_to(base.resolve()):
            raise InvalidKey(f"object key {key!r} resolves outside the storage root")
        return path

    def _data_path(self, key: str) -> Path:
        return self._inside(self._objects, validate_key(key))

    def _meta_path(self, key: str) -> Path:
        return self._inside(self._meta, key, ".json")

    def _prepare(self) -> None:
        for directory in (self._objects, self._meta, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)

    # -- blocking helpers (always run in a worker thread) ----------------------------------------

    def _install(self, tmp: Path, target: Path, key: str) -> None:
        """Rename a finished temp file into place; retry if a concurrent delete pruned the parent."""
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                _fsync_dir(target.parent)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
                raise StorageError(
                    f"cannot store {key!r}: it clashes with an existing key that is a prefix of it or has it "
                    "as a prefix (local disk cannot hold both 'a' and 'a/b')"
                ) from exc

    def _write_meta(self, key: str, content_type: str, sha256: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, suffix=".meta")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps({"content_type": content_type, "sha256": sha256}).encode())
                file.flush()
                os.fsync(file.fileno())
            self._install(Path(tmp), self._meta_path(key), key)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _info(self, key: str, stat: os.stat_result, *, with_type: bool) -> ObjectInfo:
        try:
            meta = json.loads(self._meta_path(key).read_bytes())
        except (OSError, ValueError):
            meta = {}
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=meta.get("sha256", ""),
            content_type=meta.get("content_type", DEFAULT_CONTENT_TYPE) if with_type else None,
            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def _stat(self, key: str) -> ObjectInfo:
        try:
            stat = os.stat(self._data_path(key))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        if not S_ISREG(stat.st_mode):
            raise ObjectNotFound(key)
        return self._info(key, stat, with_type=True)

    def _open(self, key: str) -> BinaryIO:
        path = self._data_path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def _delete(self, key: str) -> None:
        for path, base in ((self._data_path(key), self._objects), (self._meta_path(key), self._meta)):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            parent = path.parent
            while parent != base:  # prune now-empty directories so listings stay cheap
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def _walk(self, directory: Path, key_prefix: str, prefix: str) -> Iterator[ObjectInfo]:
        """Depth-first in S3 key order ('a-b' sorts before 'a/b'); symlinks are never listed."""
        try:
            with os.scandir(directory) as scan:
                entries = [(entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
                           for entry in scan]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in sorted(entries, key=lambda pair: pair[0]):
            key = key_prefix + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                yield self._info(key, entry.stat(follow_symlinks=False), with_type=False)

    # -- the contract ----------------------------------------------------------------------------

    async def put(
        self, key: str, data: Data, *, size: int | None = None, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        validate_key(key)
        check_declared_size(key, size, self.max_object_size)
        digest = hashlib.sha256()

        def write(file: BinaryIO, chunks: list[bytes]) -> None:
            for chunk in chunks:
                file.write(chunk)
                digest.update(chunk)

        def finish(file: BinaryIO, chunks: list[bytes]) -> os.stat_result:
            write(file, chunks)
            file.flush()
            os.fsync(file.fileno())
            return os.fstat(file.fileno())

        try:
            target = await asyncio.to_thread(self._data_path, key)
            await asyncio.to_thread(self._prepare)
            fd, tmp_name = await asyncio.to_thread(tempfile.mkstemp, dir=self._tmp)
        except OSError as exc:
            raise StorageError(f"cannot store {key!r} under {self.root}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in limited(key, as_chunks(data), self.max_object_size, size):
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= CHUNK_SIZE:  # batch small chunks into one thread hop
                        await asyncio.to_thread(write, file, pending)
                        pending, pending_size = [], 0
                stat = await asyncio.to_thread(finish, file, pending)
            await asyncio.to_thread(self._install, tmp, target, key)
            await asyncio.to_thread(self._write_meta, key, content_type, digest.hexdigest())
        except OSError as exc:
            raise StorageError(f"cannot store {key!r} under {self.root}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=digest.hexdigest(),
            content_type=content_type,
            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    async def get(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(self._open, key)
        try:
            while chunk := await asyncio.to_thread(file.read, chunk_size):
                yield chunk
        finally:
            file.close()

    async def stat(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat, key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        start_key = prefix.rpartition("/")[0]
        start = self._inside(self._objects, start_key) if start_key else self._objects
        walker = self._walk(start, start_key + "/" if start_key else "", prefix)
        while batch := await asyncio.to_thread(lambda: [*islice(walker, 256)]):
            for info in batch:
                yield info

    def _presign(self, method: str, key: str, expires: timedelta) -> str:
        validate_key(key)
        deadline = int(time.time()) + check_expiry(expires)
        signature = sign(self.presign_secret, method, key, deadline)
        return (
            f"{self.public_base_url}{OBJECTS_PATH}{quote(key, safe='/')}"
            f"?method={method}&expires={deadline}&signature={signature}"
        )

    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        return self._presign("GET", key, expires)

    async def presigned_put_url(self, key: str, expires: timedelta) -> str:
        return self._presign("PUT", key, expires)

    def verify(self, method: str, key: str, expires: int, signature: str) -> bool:
        """Check a presigned URL's signature against this store's secret."""
        return verify_signature(self.presign_secret, method, key, expires, signature)

    async def check(self) -> None:
        def probe() -> None:
            try:
                self._prepare()
                fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".probe")
                os.close(fd)
                os.unlink(name)
            except OSError as exc:
                raise StorageError(f"local storage root {self.root} is not writable: {exc}") from exc

        await asyncio.to_thread(probe)
