"""Schema-driven fuzzing: schemathesis generates requests from the app's own OpenAPI document
and sends them to a real `sygmax run api` process; no input may produce a 5xx, and answers
must match the documented responses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import TEMPLATE_DB, service_environ
from tests.servers import free_port
from tests.test_run_process import wait_until

SYGMAX = str(Path(sys.executable).parent / "sygmax")


@pytest.fixture(scope="module")
def fuzz_server(postgres, redis_server, tmp_path_factory):
    name = f"fuzz_{uuid.uuid4().hex[:8]}"
    postgres.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    database_url = postgres.url(name)

    async def make_token() -> str:
        from sygmax.auth.tokens import create_user, issue_token

        connection = await asyncpg.connect(database_url)
        try:
            user = await create_user(connection, "fuzzer@example.org", "Fuzzer", is_admin=True)
            return await issue_token(connection, user, "fuzz")
        finally:
            await connection.close()

    token = asyncio.run(make_token())
    directory = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {**os.environ, **service_environ(database_url, redis_server.url, directory / "objects"),
           "SYGMAX_CONFIG": str(directory / "absent.toml")}
    log = open(directory / "server.log", "wb")
    process = subprocess.Popen([SYGMAX, "run", "api", "--port", str(port)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready)
    yield base, token
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)
    log.close()
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def operations(base: str):
    schema = schemathesis.openapi.from_url(base + "/api/schema/openapi.json")
    # PostgreSQL text cannot hold NUL, and the kernel answers any NUL with a 400 problem (tested
    # in tests/test_gateway.py); OpenAPI has no way to say "any string but NUL" on every field.
    schema.config.generation.update(allow_x00=False)
    for result in schema.get_all_operations():
        yield result.ok()


def test_no_input_causes_a_server_error(fuzz_server):
    base, token = fuzz_server
    checked = []
    for operation in operations(base):
        for authenticated in (False, True):
            headers = {"Authorization": f"Bearer {token}"} if authenticated else {}

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(case) -> None:
                # Default checks: no 5xx, status codes and bodies as documented, content types right.
                if not case.operation.path.startswith("/api/v1/ai/"):
                    case.call_and_validate(headers=headers)
                    return
                # No ai process serves this server's database: the AI routes must answer their
                # documented 503 to valid input, and no other 5xx. Which 503 depends on whether an ai
                # process of an earlier test still heartbeats in the shared Redis: "not running",
                # or running but with no model registered in this database.
                response = case.call_and_validate(headers=headers, excluded_checks=[not_a_server_error])
                if response.status_code >= 500:
                    assert response.status_code == 503, response.text
                    assert response.json()["type"].rsplit("/", 1)[-1] in ("ai-unavailable", "no-model"), \
                        response.text

            fuzz()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert {"GET /healthz", "GET /readyz", "GET /api/v1/users/me", "GET /api/v1/system/plugins",
            "PUT /api/v1/storage/objects/{key}"} <= set(checked), checked
