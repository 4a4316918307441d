"""Fixtures of the chats tests: an API client acting as named users, a workspace with members,
and real ``sygmax run`` processes for the WebSocket tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import service_environ
from tests.servers import free_port
from tests.workspace_helpers import Api

SYGMAX = str(Path(sys.executable).parent / "sygmax")


@dataclass
class Team:
    """A workspace owned by alice with bob (editor), carol (editor) and victor (viewer); mallory is outside."""

    workspace_id: str
    alice: object
    bob: object
    carol: object
    victor: object
    mallory: object


@pytest.fixture
def chat_settings(environ, tmp_path):
    """``chat_settings(SYGMAX_CHATS_MESSAGES_PER_MINUTE="5")``: test settings with overrides."""
    from sygmax.config import load_settings
    from sygmax.plugins import discover_plugins

    sections = {name: plugin.settings for name, plugin in discover_plugins().items() if plugin.settings is not None}

    def build(**overrides: str):
        return load_settings(tmp_path / "absent.toml", environ={**environ, **overrides}, plugin_sections=sections)

    return build


@pytest.fixture
async def chat_api(make_app, chat_settings):
    """``async with chat_api(profiles="api", **env) as api``: an Api over an app with those settings."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_api(profiles: str = "api", **overrides: str):
        app = make_app(profiles, app_settings=chat_settings(**overrides))
        async with AsyncTestClient(app=app) as client:
            yield Api(client)

    return open_api


@pytest.fixture
async def api(chat_api):
    async with chat_api(SYGMAX_CHATS_MESSAGES_PER_MINUTE="100000") as opened:
        yield opened


async def make_team(api: Api, example_user) -> Team:
    alice, bob, carol = await example_user("alice"), await example_user("bob"), await example_user("carol")
    victor, mallory = await example_user("victor"), await example_user("mallory")
    workspace_id = await api.workspace(alice)
    await api.invite_and_join(alice, workspace_id, bob)
    await api.invite_and_join(alice, workspace_id, carol)
    await api.invite_and_join(alice, workspace_id, victor, role="viewer")
    return Team(workspace_id, alice, bob, carol, victor, mallory)


@pytest.fixture
async def team(api, example_user) -> Team:
    return await make_team(api, example_user)


async def channel(api: Api, user, team: Team, name: str = "general", private: bool = False) -> dict:
    return await api.ok(user, "POST", "/api/v1/chats/channels",
                        {"workspace_id": team.workspace_id, "name": name, "private": private})


async def post(api: Api, user, channel_id: str, text: str, **extra) -> dict:
    return await api.ok(user, "POST", f"/api/v1/chats/channels/{channel_id}/messages", {"text": text, **extra})


@pytest.fixture
def sygmax_process(database_url, redis_url, tmp_path):
    """``port, process = sygmax_process("realtime", **env)``: a real server; stopped at teardown."""
    started: list = []

    def start(profiles: str = "realtime", **overrides: str):
        port = free_port()
        env = {**os.environ, **service_environ(database_url, redis_url, tmp_path / "objects"),
               "SYGMAX_CONFIG": str(tmp_path / "absent.toml"), "SYGMAX_CHATS_MESSAGES_PER_MINUTE": "100000",
               **overrides}
        log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 - closed at teardown
        process = subprocess.Popen([SYGMAX, "run", profiles, "--port", str(port), "--workers", "1"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))
        _wait_ready(port, process, tmp_path / f"server-{port}.log")
        return port, process

    yield start
    for process, log in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _wait_ready(port: int, process, log_path: Path, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server on {port} not ready: {log_path.read_text()[-3000:]}")
