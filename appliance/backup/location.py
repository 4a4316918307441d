"""Where archives live: a local directory or an S3 bucket/prefix (minio SDK), behind one interface.

Writing is streamed both ways. On disk an archive is written to ``.<name>.partial`` and
renamed when complete, so a listing never shows a half-written archive. On S3 the archive is
a multipart upload fed through a bounded queue from the writing thread; a failed backup makes
the reader raise, which aborts the upload instead of completing a truncated object.
"""

from __future__ import annotations

import os
import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import certifi
import urllib3

from appliance.backup.errors import BackupError

SUFFIX = ".sygbak"
PART_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    size: int
    location: str  # what `sygmax backup verify` / `restore` accept for it


class Sink(ABC):
    """An archive being written: ``write`` bytes, then ``commit`` or ``abort``."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        ...

    @abstractmethod
    def commit(self) -> None:
        ...

    @abstractmethod
    def abort(self) -> None:
        ...


class Location(ABC):
    """Where archives live: a directory on this host, or an s3:// bucket and prefix."""

    @abstractmethod
    def open_sink(self, name: str) -> Sink:
        ...

    @abstractmethod
    def open(self, name: str) -> BinaryIO:
        ...

    @abstractmethod
    def entries(self) -> list[ArchiveEntry]:
        ...

    @abstractmethod
    def delete(self, name: str) -> None:
        ...

    @abstractmethod
    def describe(self, name: str) -> str:
        ...


class _FileSink(Sink):
    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = target.with_name(f".{target.name}.partial")
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.file = os.fdopen(fd, "wb", buffering=1024 * 1024)

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.partial.replace(self.target)

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


class DirectoryLocation(Location):
    def __init__(self, path: Path) -> None:
        self.path = path

    def open_sink(self, name: str) -> Sink:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackupError(f"cannot create the backup directory {self.path}: {exc}") from exc
        return _FileSink(self.path / name)

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path / name, "rb")
        except OSError as exc:
            raise BackupError(f"cannot open {self.path / name}: {exc.strerror}") from exc

    def entries(self) -> list[ArchiveEntry]:
        if not self.path.is_dir():
            return []
        return sorted(
            (ArchiveEntry(p.name, p.stat().st_size, str(p)) for p in self.path.glob(f"*{SUFFIX}")),
            key=lambda entry: entry.name,
        )

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def describe(self, name: str) -> str:
        return str(self.path / name)


class _QueueReader:
    """What minio's put_object reads from: chunks a writer thread hands over, or its failure."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.current = b""
        self.offset = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        parts = []
        while size != 0 and not self.finished:
            if self.offset >= len(self.current):
                item = self.queue.get()
                if item is None:
                    self.finished = True
                    break
                if isinstance(item, BaseException):
                    self.finished = True
                    raise OSError(f"backup aborted: {item}")
                self.current, self.offset = item, 0
                continue
            take = len(self.current) - self.offset if size < 0 else min(size, len(self.current) - self.offset)
            parts.append(self.current[self.offset:self.offset + take])
            self.offset += take
            if size > 0:
                size -= take
        return b"".join(parts)


class _S3Sink(Sink):
    def __init__(self, client, bucket: str, key: str) -> None:
        self.reader = _QueueReader()
        self.error: BaseException | None = None
        self.buffer = bytearray()

        def upload() -> None:
            try:
                client.put_object(bucket, key, self.reader, length=-1, part_size=PART_SIZE,
                                  content_type="application/octet-stream")
            except Exception as exc:  # noqa: BLE001 - any failure is reported by commit()
                self.error = exc
                # Drain, so a writer blocked on the full queue is released.
                while not self.reader.finished:
                    try:
                        item = self.reader.queue.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if item is None or isinstance(item, BaseException):
                        break

        self.thread = threading.Thread(target=upload, name="backup-s3-upload", daemon=True)
        self.thread.start()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise BackupError(f"upload to S3 failed: {self.error}")
        self.buffer += data
        if len(self.buffer) >= 1024 * 1024:
            self.reader.queue.put(bytes(self.buffer))
            self.buffer.clear()

    def commit(self) -> None:
        if self.buffer:
            self.reader.queue.put(bytes(self.buffer))
        self.reader.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise BackupError(f"upload to S3 failed: {self.error}")

    def abort(self) -> None:
        self.reader.queue.put(BackupError("aborted"))
        self.thread.join()


class S3Location(Location):
    """``s3://ACCESS:SECRET@host:port/bucket/prefix[?secure=true&region=...]``."""

    def __init__(self, url: str) -> None:
        from minio import Minio

        parts = urlsplit(url)
        path = parts.path.strip("/")
        if not parts.hostname or not path or not parts.username or not parts.password:
            raise BackupError("S3 backup locations look like s3://ACCESS:SECRET@host:port/bucket[/prefix]")
        self.bucket, _, prefix = path.partition("/")
        self.prefix = f"{prefix.rstrip('/')}/" if prefix else ""
        secure = "secure=true" in parts.query or "secure=1" in parts.query
        endpoint = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        region = None
        for pair in parts.query.split("&"):
            if pair.startswith("region="):
                region = pair[len("region="):]
        # Bounded retries (minio's defaults retry for minutes), as in sygmax.storage.s3.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(endpoint, access_key=unquote(parts.username), secret_key=unquote(parts.password),
                            secure=secure, region=region, http_client=http)
        self.display = f"s3://{endpoint}/{self.bucket}/{self.prefix}"

    def _call(self, what: str, fn, *args, **kwargs):
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except (MinioException, HTTPError, OSError) as exc:
            raise BackupError(f"S3 {what} failed at {self.display}: {exc}") from exc

    def open_sink(self, name: str) -> Sink:
        if not self._call("bucket check", self.client.bucket_exists, self.bucket):
            self._call("bucket creation", self.client.make_bucket, self.bucket)
        return _S3Sink(self.client, self.bucket, self.prefix + name)

    def open(self, name: str) -> BinaryIO:
        response = self._call("download", self.client.get_object, self.bucket, self.prefix + name)
        return _ResponseFile(response)

    def entries(self) -> list[ArchiveEntry]:
        if not self._call("bucket check", self.client.bucket_exists, self.bucket):
            return []
        found = []
        for item in self._call("listing", lambda: list(self.client.list_objects(self.bucket, self.prefix))):
            name = item.object_name[len(self.prefix):]
            if name.endswith(SUFFIX) and "/" not in name:
                found.append(ArchiveEntry(name, item.size or 0, self.describe(name)))
        return sorted(found, key=lambda entry: entry.name)

    def delete(self, name: str) -> None:
        self._call("delete", self.client.remove_object, self.bucket, self.prefix + name)

    def describe(self, name: str) -> str:
        return f"{self.display}{name}"


class _ResponseFile:
    def __init__(self, response) -> None:
        self.response = response

    def read(self, size: int = -1) -> bytes:
        return self.response.read(None if size < 0 else size)

    def close(self) -> None:
        self.response.close()
        self.response.release_conn()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_location(target: str | Path) -> Location:
    text = str(target)
    if text.startswith("s3://"):
        return S3Location(text)
    return DirectoryLocation(Path(text))


def split_archive(path: str | Path) -> tuple[Location, str]:
    """``/dir/name.sygbak`` or ``s3://.../prefix/name.sygbak`` -> (its location, its name)."""
    text = str(path)
    if text.startswith("s3://"):
        parts = urlsplit(text)
        head, _, name = parts.path.rpartition("/")
        base = parts._replace(path=head).geturl()
        return S3Location(base), name
    file = Path(text)
    return DirectoryLocation(file.parent), file.name

