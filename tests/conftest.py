"""Shared fixtures: real PostgreSQL and Redis per test session, a fresh database per test.

Per-test isolation copies a migrated template database (``CREATE DATABASE ... TEMPLATE``),
which takes tens of milliseconds and leaves no state behind between tests.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from sygmax.config import Settings, load_settings
from sygmax.db.migrations import migrate, plan
from sygmax.plugins import Plugin, discover_plugins, order_plugins
from tests.servers import PostgresServer, RedisServer

TEMPLATE_DB = "sygmax_template"
PROBLEM = "application/problem+json"
_counter = itertools.count()


def service_environ(database_url: str, redis_url: str, storage_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment a test process runs with: real servers, local storage, no rate limit."""
    environ = {
        "SYGMAX_DATABASE_URL": database_url,
        "SYGMAX_REDIS_URL": redis_url,
        "SYGMAX_STORAGE_URL": f"file://{storage_dir}",
        "SYGMAX_STORAGE_PRESIGN_SECRET": "test-presign-secret",
        "SYGMAX_AUTH_KEYS_DIR": str(storage_dir.parent / "keys"),
        "SYGMAX_LOG_ACCESS_LOG": "false",
        "SYGMAX_RATE_LIMIT_ENABLED": "false",
    }
    environ.update(overrides)
    return environ


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer().start()
    server.psql("postgres", f"CREATE DATABASE {TEMPLATE_DB}")
    plugins = order_plugins(discover_plugins())
    steps = plan([(plugin.name, plugin.migrations) for plugin in plugins])
    asyncio.run(migrate(server.url(TEMPLATE_DB), steps))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def database_url(postgres):
    name = f"test_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    postgres.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield postgres.url(name)
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def redis_url(redis_server):
    # Every test gets its own logical database index would run out at 16; flush instead.
    yield redis_server.url
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    except redis_sync.RedisError:
        pass  # a test may have stopped the server; the next test restarts it
    finally:
        client.close()


@pytest.fixture
def environ(database_url, redis_url, tmp_path) -> dict[str, str]:
    return service_environ(database_url, redis_url, tmp_path / "objects")


@pytest.fixture
def settings(environ, tmp_path) -> Settings:
    return load_settings(tmp_path / "absent.toml", environ=environ)


@dataclass
class ExampleUser:
    name: str
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def example_user(database_url):
    """``await example_user("alice", admin=True)``: a real account with a personal API token."""
    from sygmax.auth.tokens import create_user, issue_token

    connection = await asyncpg.connect(database_url)
    made: dict[str, ExampleUser] = {}

    async def make(name: str, admin: bool = False) -> ExampleUser:
        if name not in made:
            user_id = await create_user(connection, f"{name}@example.org", name.title(), is_admin=admin)
            made[name] = ExampleUser(name, user_id, await issue_token(connection, user_id, "tests"))
        return made[name]

    yield make
    await connection.close()


@pytest.fixture
def make_app(settings):
    """Build an app for profiles with the test settings and the installed (or given) plugins."""
    from sygmax.app import create_app

    def build(profiles: str = "api", plugins: dict[str, Plugin] | None = None, app_settings: Settings | None = None):
        installed = discover_plugins() if plugins is None else plugins
        return create_app(profiles, settings=app_settings or settings, plugins=installed)

    return build


@pytest.fixture
async def client(make_app):
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=make_app("api")) as test_client:
        yield test_client


@pytest.fixture
async def db(database_url):
    """A plain asyncpg connection to the test's database, for setup and "nothing changed" checks."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def assert_problem(response, status: int, slug: str) -> dict:
    """The response is an RFC 9457 problem of this status and type; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body = response.json()
    assert body["type"] == f"https://sygmax.dev/problems/{slug}", body
    assert body["status"] == status and body["detail"], body
    return body
