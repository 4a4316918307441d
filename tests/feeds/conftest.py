"""Fixtures of the feeds tests: the local feed server, settings with the ``[feeds]`` section
(private addresses allowed so the loopback server can be reached, short timeouts, a small
body cap), an API client and a started Kernel for calling actions and jobs directly."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from litestar.testing import AsyncTestClient

from sygmax.config import load_settings
from sygmax.kernel import Kernel
from sygmax.plugins import discover_plugins
from plugins.feeds.settings import FeedsSettings
from tests.feeds.support import FeedServer
from tests.workspace_helpers import Api


@pytest.fixture
def feed_server():
    server = FeedServer().start()
    yield server
    server.stop()


@pytest.fixture
def feeds_settings(environ, tmp_path):
    """``feeds_settings(SYGMAX_FEEDS_...="...")``: test settings with the feeds section."""

    def build(**overrides: str):
        env = {**environ, "SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES": "true", "SYGMAX_FEEDS_TIMEOUT_S": "1",
               "SYGMAX_FEEDS_MAX_BODY_BYTES": str(512 * 1024), "SYGMAX_FEEDS_MIN_INTERVAL_S": "60",
               "SYGMAX_FEEDS_RETENTION_DAYS": "36500",
               "SYGMAX_SERVER_PUBLIC_URL": "https://sygmax.example.org", **overrides}
        return load_settings(tmp_path / "absent.toml", environ=env, plugin_sections={"feeds": FeedsSettings})

    return build


@pytest.fixture
async def feeds_api(make_app, feeds_settings):
    """``async with feeds_api(**overrides) as api``: an Api over an app with those settings."""

    @asynccontextmanager
    async def open_api(**overrides: str):
        app = make_app("api", app_settings=feeds_settings(**overrides))
        async with AsyncTestClient(app=app) as client:
            yield Api(client)

    return open_api


@pytest.fixture
async def api(feeds_api):
    async with feeds_api() as opened:
        yield opened


@pytest.fixture
async def kernel(feeds_settings):
    kernels: list[Kernel] = []

    async def build(**overrides: str) -> Kernel:
        built = Kernel.build(feeds_settings(**overrides), discover_plugins())
        await built.start()
        kernels.append(built)
        return built

    yield build
    for built in kernels:
        await built.stop()
