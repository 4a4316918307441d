"""`sygmax run api` as a real server process against real PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import service_environ
from tests.servers import RedisServer, free_port

SYGMAX = str(Path(sys.executable).parent / "sygmax")


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def readyz(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.HTTPError:
        return None


@pytest.fixture
def own_redis():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def server_process(database_url, own_redis, tmp_path):
    def start(asgi_server: str = "granian", workers: int = 1):
        port = free_port()
        env = {**os.environ, **service_environ(database_url, own_redis.url, tmp_path / "objects"),
               "SYGMAX_CONFIG": str(tmp_path / "absent.toml"), "SYGMAX_SERVER_ASGI_SERVER": asgi_server}
        log = open(tmp_path / f"server-{port}.log", "wb")
        process = subprocess.Popen([SYGMAX, "run", "api", "--port", str(port), "--workers", str(workers)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))
        return port, process

    started: list = []
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


@pytest.mark.parametrize("asgi_server", ["granian", "uvicorn"])
def test_readyz_follows_redis_without_a_restart(server_process, own_redis, asgi_server):
    port, process = server_process(asgi_server)
    response = wait_until(lambda: (r := readyz(port)) is not None and r.status_code == 200 and r)
    assert response.json()["checks"]["redis"] == {"ok": True}

    own_redis.stop()
    down = wait_until(lambda: (r := readyz(port)) is not None and r.status_code == 503 and r)
    body = down.json()
    assert body["failed"] == ["redis"] and "redis" in body["detail"]
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # alive, just not ready

    own_redis.start()  # same port
    wait_until(lambda: (r := readyz(port)) is not None and r.status_code == 200)
    assert process.poll() is None  # recovered in place, no restart


def test_metrics_sum_across_worker_processes(server_process):
    port, _ = server_process("granian", workers=2)
    wait_until(lambda: (r := readyz(port)) is not None and r.status_code == 200)
    with httpx.Client() as client:  # new connections so both workers see traffic
        for _ in range(40):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
        text = client.get(f"http://127.0.0.1:{port}/metrics").text
    line = next(line for line in text.splitlines()
                if line.startswith("sygmax_http_request_duration_seconds_count") and 'route="/healthz"' in line)
    assert float(line.rsplit(" ", 1)[1]) == 40.0
