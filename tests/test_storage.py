"""One contract for both object store backends: local disk and S3 (moto's S3 server)."""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from litestar.testing import create_test_client

from sygmax.config import StorageSettings
from sygmax.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    open_store,
    validate_key,
)
from sygmax.storage.local import LocalObjectStore, sign, verify_signature
from sygmax.storage.routes import storage_routes
from sygmax.storage.s3 import S3ObjectStore
from tests.servers import S3Server, free_port

MiB = 1024 * 1024
SECRET = "test-presign-secret"
BAD_KEYS = [
    "",
    "../x",
    "a/../../b",
    "/abs",
    "a//b",
    "a\\b",
    "nul\x00byte",
    "tab\there",
    ".",
    "..",
    "a/./b",
    "trailing/",
    "k" * 1025,
]

StoreFactory = Callable[..., ObjectStore]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Stores of the parametrized backend; each S3 store gets a fresh bucket."""
    stores: list[ObjectStore] = []

    def factory(**overrides: object) -> ObjectStore:
        if request.param == "local":
            url = f"file://{tmp_path}/store-{len(stores)}"
        else:
            url = request.getfixturevalue("s3_server").url(f"test-{uuid.uuid4().hex[:16]}")
        defaults = {"multipart_threshold": 5 * MiB, "max_object_size": 64 * MiB, "presign_secret": SECRET}
        settings = StorageSettings(url=url, **{**defaults, **overrides})
        store = open_store(settings, public_base_url="http://testserver")
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> ObjectStore:
    return make_store()


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def random_stream(total: int, seed: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    rng = random.Random(seed)
    sent = 0
    while sent < total:
        part = rng.randbytes(min(chunk, total - sent))
        sent += len(part)
        yield part


async def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key async for info in store.list(prefix)]


# -- round trips -----------------------------------------------------------------------------------


async def test_put_and_get_bytes(store: ObjectStore) -> None:
    info = await store.put("docs/hello.txt", b"hello world", content_type="text/plain")
    assert (info.key, info.size, info.content_type) == ("docs/hello.txt", 11, "text/plain")
    assert await store.read("docs/hello.txt") == b"hello world"
    assert b"".join([chunk async for chunk in store.get("docs/hello.txt", chunk_size=4)]) == b"hello world"
    stat = await store.stat("docs/hello.txt")
    assert (stat.size, stat.content_type, stat.etag) == (11, "text/plain", info.etag)
    assert stat.etag
    assert stat.modified.tzinfo is not None
    assert abs(stat.modified - datetime.now(UTC)) < timedelta(minutes=1)


async def test_put_streamed_chunks(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    info = await store.put("stream/known", chunks_of(data, 7_000), size=len(data))
    assert info.size == len(data)
    await store.put("stream/unknown", chunks_of(data, 65_536))
    for key in ("stream/known", "stream/unknown"):
        assert await store.read(key) == data
        assert (await store.stat(key)).content_type == "application/octet-stream"


async def test_empty_object_and_overwrite(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.read("empty") == b""
    assert (await store.stat("empty")).size == 0
    await store.put("empty", b"now full", content_type="text/plain")
    assert await store.read("empty") == b"now full"
    assert (await store.stat("empty")).content_type == "text/plain"


async def test_unicode_key_round_trip(store: ObjectStore) -> None:
    key = "ünï/файл name+1 (copy)?#.txt"
    validate_key(key)
    await store.put(key, b"unicode")
    assert await store.read(key) == b"unicode"
    assert await keys(store) == [key]


async def test_large_stream_uses_multipart_and_round_trips(store: ObjectStore) -> None:
    total = 12 * MiB + 12_345
    expected = hashlib.sha256()
    async for part in random_stream(total, seed=7):
        expected.update(part)
    info = await store.put("big/blob.bin", random_stream(total, seed=7))
    assert info.size == total
    received = hashlib.sha256()
    size = 0
    async for chunk in store.get("big/blob.bin"):
        received.update(chunk)
        size += len(chunk)
    assert (size, received.hexdigest()) == (total, expected.hexdigest())
    assert (await store.stat("big/blob.bin")).size == total
    if isinstance(store, S3ObjectStore):
        assert info.etag.endswith("-3")  # three 5 MiB-threshold parts: it really went multipart


async def test_partial_read_then_stop(store: ObjectStore) -> None:
    await store.put("partial", os.urandom(3 * MiB))
    stream = store.get("partial", chunk_size=MiB)
    first = await anext(stream)
    assert len(first) <= MiB
    await stream.aclose()
    assert (await store.stat("partial")).size == 3 * MiB


# -- stat, exists, delete, list ----------------------------------------------------------------------


async def test_stat_exists_delete(store: ObjectStore) -> None:
    await store.put("a/b/c", b"x")
    assert await store.exists("a/b/c")
    assert not await store.exists("a/b")
    assert not await store.exists("a/b/c/d")
    await store.delete("a/b/c")
    assert not await store.exists("a/b/c")
    await store.delete("a/b/c")  # idempotent
    await store.delete("never/existed")
    assert await keys(store) == []


async def test_list_in_key_order_with_prefixes(store: ObjectStore) -> None:
    for key in ("docs/b/c.txt", "other", "docs-x", "docs/a.txt", "docs/b.txt"):
        await store.put(key, key.encode())
    assert await keys(store) == ["docs-x", "docs/a.txt", "docs/b.txt", "docs/b/c.txt", "other"]
    assert await keys(store, "docs") == ["docs-x", "docs/a.txt", "docs/b.txt", "docs/b/c.txt"]
    assert await keys(store, "docs/") == ["docs/a.txt", "docs/b.txt", "docs/b/c.txt"]
    assert await keys(store, "docs/b") == ["docs/b.txt", "docs/b/c.txt"]
    assert await keys(store, "docs/b/") == ["docs/b/c.txt"]
    assert await keys(store, "nothing/") == []
    listed = {info.key: info async for info in store.list("docs/a")}
    assert listed["docs/a.txt"].size == len(b"docs/a.txt")
    assert listed["docs/a.txt"].etag == (await store.stat("docs/a.txt")).etag


async def test_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        await store.stat("nope")
    with pytest.raises(ObjectNotFound):
        await store.read("nope")
    with pytest.raises(ObjectNotFound):
        async for _ in store.get("dir/nope"):
            pass


# -- limits --------------------------------------------------------------------------------------------


async def test_max_object_size_for_bytes_and_streams(make_store: StoreFactory) -> None:
    store = make_store(max_object_size=1000)
    await store.put("kept", b"old")
    with pytest.raises(ObjectTooLarge, match="1000 bytes"):
        await store.put("big", b"x" * 1001)
    with pytest.raises(ObjectTooLarge):
        await store.put("big", chunks_of(b"x" * 1001, 100))
    with pytest.raises(ObjectTooLarge):
        await store.put("big", chunks_of(b"x" * 10, 5), size=1001)  # refused before reading
    with pytest.raises(ObjectTooLarge):
        await store.put("kept", chunks_of(b"y" * 5000, 300))
    assert await store.put("exact", b"x" * 1000)
    assert await keys(store) == ["exact", "kept"]
    assert await store.read("kept") == b"old"  # a failed put leaves the previous object alone
    if isinstance(store, LocalObjectStore):
        assert list((store.root / "tmp").iterdir()) == []


async def test_oversized_multipart_stream_is_aborted(make_store: StoreFactory) -> None:
    store = make_store(max_object_size=7 * MiB)
    with pytest.raises(ObjectTooLarge):
        await store.put("huge", random_stream(12 * MiB, seed=1))
    assert not await store.exists("huge")
    assert await keys(store) == []


async def test_declared_size_must_match(store: ObjectStore) -> None:
    with pytest.raises(StorageError, match="shorter than its declared size"):
        await store.put("short", chunks_of(b"12345", 2), size=10)
    with pytest.raises(StorageError, match="longer than its declared size"):
        await store.put("long", chunks_of(b"12345", 2), size=3)
    with pytest.raises(StorageError):
        await store.put("bytes", b"12345", size=3)
    assert await keys(store) == []


async def test_stream_must_yield_bytes(store: ObjectStore) -> None:
    async def strings() -> AsyncIterator[str]:
        yield "not bytes"

    with pytest.raises(StorageError, match="must yield bytes"):
        await store.put("typed", strings())  # type: ignore[arg-type]
    assert not await store.exists("typed")


# -- key validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda key: repr(key)[:24])
async def test_bad_keys_are_refused_by_every_method(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"data")
    with pytest.raises(InvalidKey):
        await store.put(key, chunks_of(b"data", 2))
    with pytest.raises(InvalidKey):
        async for _ in store.get(key):
            pass
    for call in (store.read, store.stat, store.exists, store.delete):
        with pytest.raises(InvalidKey):
            await call(key)
    for presign in (store.presigned_get_url, store.presigned_put_url):
        with pytest.raises(InvalidKey):
            await presign(key, timedelta(minutes=5))
    assert await keys(store) == []


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", "/abs", "a//", "a\\b", "x\x00"])
async def test_bad_list_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await keys(store, prefix)


def test_validate_key_accepts_ordinary_names() -> None:
    for key in ("a", "a/b/c.txt", "..a", "a..", ".hidden/x", "k" * 1024, "ü" * 512, "sp ace/é+%20"):
        assert validate_key(key) == key
    with pytest.raises(InvalidKey, match="1024 bytes"):
        validate_key("ü" * 513)


# -- presigned URLs --------------------------------------------------------------------------------------


async def test_presigned_get_url(store: ObjectStore) -> None:
    key = "shared/report 1+ü.txt"
    await store.put(key, b"presigned body", content_type="text/plain")
    url = await store.presigned_get_url(key, timedelta(minutes=5))
    if isinstance(store, LocalObjectStore):
        parts = urlsplit(url)
        assert url.startswith("http://testserver/api/v1/storage/objects/")
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        path_key = unquote(parts.path.removeprefix("/api/v1/storage/objects/"))
        assert path_key == key and query["method"] == "GET"
        assert verify_signature(SECRET, "GET", key, int(query["expires"]), query["signature"])
        assert not verify_signature(SECRET, "PUT", key, int(query["expires"]), query["signature"])
        assert not verify_signature(SECRET, "GET", "shared/other", int(query["expires"]), query["signature"])
    else:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"presigned body"


async def test_presigned_put_url(store: ObjectStore) -> None:
    url = await store.presigned_put_url("upload/by-url", timedelta(minutes=5))
    assert "upload/by-url" in unquote(url)
    if isinstance(store, S3ObjectStore):
        async with httpx.AsyncClient() as client:
            response = await client.put(url, content=b"uploaded")
        assert response.status_code == 200
        assert await store.read("upload/by-url") == b"uploaded"


@pytest.mark.parametrize("expires", [timedelta(0), timedelta(seconds=-5), timedelta(days=8)])
async def test_presign_expiry_bounds(store: ObjectStore, expires: timedelta) -> None:
    with pytest.raises(StorageError, match="between 1 second and 7 days"):
        await store.presigned_get_url("k", expires)


def test_signature_expiry_tampering_and_secret() -> None:
    expires = int(time.time()) + 60
    good = sign(SECRET, "GET", "a/b", expires)
    assert verify_signature(SECRET, "GET", "a/b", expires, good)
    assert not verify_signature(SECRET, "GET", "a/b", expires, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not verify_signature(SECRET, "GET", "a/b", expires + 1, good)
    assert not verify_signature("other-secret", "GET", "a/b", expires, good)
    assert not verify_signature(SECRET, "GET", "a/b", expires, "ünicode-garbage")
    assert not verify_signature(SECRET, "GET", "a/b", expires, good, now=expires + 1)
    assert not verify_signature("", "GET", "a/b", expires, good)
    with pytest.raises(StorageError, match="presign_secret"):
        sign("", "GET", "a/b", expires)


async def test_local_presign_needs_a_secret(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, max_object_size=MiB)
    with pytest.raises(StorageError, match="presign_secret is empty"):
        await store.presigned_get_url("k", timedelta(minutes=1))


# -- local presigned routes ---------------------------------------------------------------------------------


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_local_routes_upload_download_and_refuse(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, max_object_size=1000, presign_secret=SECRET)
    key = "route/ü file.txt"
    put_url = store._presign("PUT", key, timedelta(minutes=5))
    get_url = store._presign("GET", key, timedelta(minutes=5))
    with create_test_client(route_handlers=storage_routes(store)) as client:
        assert client.get(_path_and_query(get_url)).status_code == 404
        headers = {"content-type": "text/plain"}
        created = client.put(_path_and_query(put_url), content=b"via route", headers=headers)
        assert created.status_code == 200, created.text
        assert created.json()["size"] == 9

        response = client.get(_path_and_query(get_url))
        assert response.status_code == 200
        assert response.content == b"via route"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["content-length"] == "9"

        tampered = get_url.replace("signature=", "signature=00")
        past = int(time.time()) - 1
        expired_signature = sign(SECRET, "GET", "route/x", past)
        expired = f"/api/v1/storage/objects/route/x?method=GET&expires={past}&signature={expired_signature}"
        unsigned = get_url.split("?")[0]
        other_key = get_url.replace("/route/", "/other/")
        for url in (tampered, expired, put_url, unsigned, other_key):
            refused = client.get(_path_and_query(url) if "://" in url else url)
            assert refused.status_code == 403, url
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["status"] == 403
        assert client.put(_path_and_query(get_url), content=b"nope").status_code == 403

        too_big = client.put(_path_and_query(put_url), content=b"x" * 1001)
        assert too_big.status_code == 413
        assert client.get(_path_and_query(get_url)).content == b"via route"


def test_s3_store_needs_no_routes() -> None:
    settings = StorageSettings(url=f"s3://k:s@127.0.0.1:{free_port()}/bucket")
    assert storage_routes(open_store(settings)) == []


# -- local disk safety --------------------------------------------------------------------------------------


async def test_symlinks_do_not_lead_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    store = LocalObjectStore(tmp_path / "root", max_object_size=MiB, presign_secret=SECRET)
    await store.put("inside/ok", b"fine")
    (store.root / "objects" / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "objects" / "file-link").symlink_to(outside / "secret")

    for key in ("link/secret", "file-link"):
        with pytest.raises(InvalidKey, match="outside the storage root"):
            await store.read(key)
        with pytest.raises(InvalidKey):
            await store.stat(key)
        with pytest.raises(InvalidKey):
            await store.delete(key)
    with pytest.raises(InvalidKey):
        await store.put("link/planted", b"evil")
    with pytest.raises(InvalidKey):
        await keys(store, "link/")
    assert sorted(path.name for path in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"top secret"
    assert await keys(store) == ["inside/ok"]


async def test_local_key_prefix_clash_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, max_object_size=MiB)
    await store.put("a/b", b"1")
    with pytest.raises(StorageError, match="clashes"):
        await store.put("a", b"2")
    await store.put("c", b"3")
    with pytest.raises(StorageError, match="clashes"):
        await store.put("c/d", b"4")
    assert await keys(store) == ["a/b", "c"]


async def test_local_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, max_object_size=MiB)
    await store.put("deep/er/file", b"x")
    await store.delete("deep/er/file")
    assert list((tmp_path / "objects").iterdir()) == []
    assert list((tmp_path / "meta").iterdir()) == []


# -- wiring and readiness ------------------------------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    local = open_store(StorageSettings(url=f"file://{tmp_path}", max_object_size=123, presign_secret="s"))
    assert isinstance(local, LocalObjectStore)
    assert (local.root, local.max_object_size, local.presign_secret) == (tmp_path, 123, "s")
    remote = open_store(StorageSettings(url="s3://key:secret@minio.internal:9000/sygmax?region=eu-west-1"))
    assert isinstance(remote, S3ObjectStore)
    assert (remote.endpoint, remote.bucket) == ("minio.internal:9000", "sygmax")


async def test_check_passes_for_reachable_backends(store: ObjectStore) -> None:
    await store.check()


async def test_s3_check_fails_when_nothing_listens() -> None:
    store = open_store(StorageSettings(url=f"s3://key:secret@127.0.0.1:{free_port()}/bucket"))
    started = time.monotonic()
    with pytest.raises(StorageError, match="127.0.0.1"):
        await store.check()
    assert time.monotonic() - started < 10
    await store.close()


async def test_local_check_fails_when_root_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    store = LocalObjectStore(tmp_path / "a-file", max_object_size=MiB)
    with pytest.raises(StorageError, match="not writable"):
        await store.check()
    with pytest.raises(StorageError, match="cannot store"):
        await store.put("k", b"v")
