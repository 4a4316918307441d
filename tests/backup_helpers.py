"""Shared by the backup tests: a populated node (users, workspaces, objects, config, JWT keys) and
snapshots of the database and storage to compare before and after."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import asyncpg

from appliance.backup.settings import BackupSettings
from sygmax.config import Settings, load_settings
from sygmax.storage.base import open_store

KEY = "correct horse battery staple 42"


def run(coroutine):
    return asyncio.run(coroutine)


def node_settings(config: Path, environ: dict[str, str]) -> Settings:
    return load_settings(config, environ=environ, plugin_sections={"backup": BackupSettings})


async def _fetch(url: str, sql: str, *args):
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


def fetch(url: str, sql: str, *args):
    return run(_fetch(url, sql, *args))


def execute(url: str, sql: str) -> None:
    """Several statements at once (no parameters)."""

    async def go():
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    run(go())


def db_snapshot(url: str) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row, per table of the public schema."""
    tables = [row["tablename"] for row in fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    state = {}
    for table in sorted(tables):
        [row] = fetch(url, f'SELECT count(*) AS n, md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) '
                           f'AS digest FROM "{table}" t')
        state[table] = (row["n"], row["digest"])
    return state


def object_snapshot(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """sha256 and content type of every stored object."""

    async def collect():
        store = open_store(settings.storage)
        try:
            found = {}
            async for info in store.list(""):
                digest = hashlib.sha256()
                async for chunk in store.get(info.key):
                    digest.update(chunk)
                found[info.key] = (digest.hexdigest(), (await store.stat(info.key)).content_type)
            return found
        finally:
            await store.close()

    return run(collect())


def populate(settings: Settings, make_app, users: int = 3, extra_object: str = "") -> None:
    """Accounts, their workspaces (through the API), and objects of several sizes."""
    from litestar.testing import TestClient

    from sygmax.auth.tokens import create_user, issue_token

    async def accounts():
        connection = await asyncpg.connect(settings.database.url)
        try:
            made = []
            for number in range(users):
                tag = uuid.uuid4().hex[:8]
                user_id = await create_user(connection, f"user-{tag}@example.org", f"User {number}")
                made.append(await issue_token(connection, user_id, "tests"))
            return made
        finally:
            await connection.close()

    tokens = run(accounts())
    with TestClient(app=make_app("api")) as client:
        for number, token in enumerate(tokens):
            response = client.post("/api/v1/workspaces", json={"name": f"Workspace {number}"},
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 201, response.text

    async def objects():
        store = open_store(settings.storage)
        try:
            await store.put("avatars/1.png", b"\x89PNG" + bytes(range(256)) * 40, content_type="image/png")
            await store.put("docs/empty.txt", b"", content_type="text/plain")
            await store.put("docs/ünïcode name.md", b"# hello\n" * 100, content_type="text/markdown")
            # Larger than one archive member (4 MiB), so it spans several.
            await store.put("files/big.bin", hashlib.sha256(b"seed").digest() * (300 * 1024))
            if extra_object:
                await store.put(extra_object, extra_object.encode())
        finally:
            await store.close()

    run(objects())
