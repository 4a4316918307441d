"""The assembled application: plugins mounted per profile, problem details, auth, metrics, limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from litestar.testing import AsyncTestClient

from sygmax.config import load_settings
from sygmax.db.migrations import migrate, plan
from sygmax.plugins import discover_plugins
from tests.conftest import assert_problem
from tests.fixtures.sample_plugin import HANDLED, TICKS, SampleSettings, make_plugin



@pytest.fixture
async def sample(database_url, environ, tmp_path):
    """Settings and plugins with the sample plugin installed and migrated."""
    plugin = make_plugin()
    await migrate(database_url, plan([(plugin.name, plugin.migrations)]))
    plugins = {**discover_plugins(), "sample": plugin}

    def settings_with(**overrides: str):
        return load_settings(tmp_path / "absent.toml", environ={**environ, **overrides},
                             plugin_sections={"sample": SampleSettings})

    return plugins, settings_with


@pytest.fixture
async def sample_client(sample, make_app):
    plugins, settings_with = sample
    async with AsyncTestClient(app=make_app("api", plugins, settings_with())) as test_client:
        yield test_client


async def test_healthz_and_request_ids(client):
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert len(response.headers["x-request-id"]) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    hostile = await client.get("/healthz", headers={"X-Request-ID": "bad id\x7f<script>"})
    assert hostile.headers["x-request-id"] != "bad id\x7f<script>"


async def test_readyz_reports_each_dependency(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": {"ok": True}, "redis": {"ok": True}, "storage": {"ok": True}}


async def test_readyz_names_the_failed_dependency(make_app, settings, tmp_path, environ):
    broken = load_settings(tmp_path / "absent.toml",
                           environ={**environ, "SYGMAX_REDIS_URL": "redis://127.0.0.1:1/0"})
    async with AsyncTestClient(app=make_app("api", app_settings=broken)) as test_client:
        body = assert_problem(await test_client.get("/readyz"), 503, "not-ready")
    assert body["failed"] == ["redis"] and "redis" in body["detail"]
    assert body["checks"]["database"]["ok"] and not body["checks"]["redis"]["ok"]


async def test_unknown_route_and_method_are_problems(client):
    body = assert_problem(await client.get("/api/v1/nowhere"), 404, "not-found")
    assert body["instance"] == "/api/v1/nowhere" and body["request_id"]
    assert_problem(await client.delete("/healthz"), 405, "method-not-allowed")


async def test_authentication(client, example_user, database_url):
    alice = await example_user("alice")
    response = await client.get("/api/v1/users/me", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {"id": str(alice.id), "email": "alice@example.org", "display_name": "Alice",
                               "is_admin": False}
    missing = assert_problem(await client.get("/api/v1/users/me"), 401, "unauthenticated")
    assert "Bearer" in missing["detail"]
    for header in ("Bearer", "Basic abc", "Bearer syg_" + "x" * 43, "Bearer " + alice.token + "x",
                   "Bearer " + "syg_" + "a" * 500):
        response = await client.get("/api/v1/users/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"
    import asyncpg

    connection = await asyncpg.connect(database_url)
    await connection.execute("UPDATE sygmax_api_token SET revoked_at = now() WHERE user_id = $1", alice.id)
    await connection.close()
    assert_problem(await client.get("/api/v1/users/me", headers=alice.headers), 401, "invalid-token")


async def test_plugin_routes_mount_per_profile(sample, make_app, example_user):
    plugins, settings_with = sample
    alice = await example_user("alice")
    async with AsyncTestClient(app=make_app("api", plugins, settings_with())) as api:
        created = await api.post("/api/v1/sample/notes", json={"body": "hi"}, headers=alice.headers)
        assert created.status_code == 201, created.text
        note = created.json()
        fetched = await api.get(f"/api/v1/sample/notes/{note['id']}", headers=alice.headers)
        assert fetched.json() == note
        assert (await api.get("/api/v1/sample/greeting")).json() == {"greeting": "hello"}
        assert (await api.get("/ws/sample/echo")).status_code == 404
        listed = (await api.get("/api/v1/system/plugins", headers=alice.headers)).json()
        sample_entry = next(entry for entry in listed if entry["name"] == "sample")
        assert sample_entry["permissions"] == [{"code": "sample.write", "description": "Write notes"}]
        assert sample_entry["ui_pages"] == [{"path": "/sample", "title": "Sample", "icon": ""}]
    from sygmax.observability import WEBSOCKETS

    open_sockets = WEBSOCKETS.labels("sample")
    async with AsyncTestClient(app=make_app("realtime", plugins, settings_with())) as realtime:
        assert (await realtime.get("/api/v1/sample/greeting")).status_code == 404
        before = open_sockets._value.get()
        with await realtime.websocket_connect("/ws/sample/echo") as socket:
            socket.send_text("ping")
            assert socket.receive_text() == "ping"
            assert open_sockets._value.get() == before + 1
        for _ in range(50):  # the server side finishes just after the client closes
            if open_sockets._value.get() == before:
                break
            await asyncio.sleep(0.02)
    assert open_sockets._value.get() == before


async def test_plugin_settings_section_is_used(sample, make_app):
    plugins, settings_with = sample
    app = make_app("api", plugins, settings_with(SYGMAX_SAMPLE_GREETING="bonjour"))
    async with AsyncTestClient(app=app) as api:
        assert (await api.get("/api/v1/sample/greeting")).json() == {"greeting": "bonjour"}


async def test_disabled_plugin_is_gone(sample, make_app):
    from sygmax.app import load_configuration  # noqa: F401 - the same filter `sygmax run` uses

    plugins, settings_with = sample
    settings = settings_with(SYGMAX_PLUGINS_DISABLED="sample")
    enabled = {name: plugin for name, plugin in plugins.items() if settings.plugins.is_enabled(name)}
    async with AsyncTestClient(app=make_app("api", enabled, settings)) as api:
        assert (await api.get("/api/v1/sample/greeting")).status_code == 404
        assert (await api.get("/healthz")).status_code == 200


async def test_worker_and_scheduler_profiles_run_plugin_work(sample, make_app, example_user, database_url):
    plugins, settings_with = sample
    alice = await example_user("alice")
    HANDLED.clear()
    TICKS.clear()
    async with AsyncTestClient(app=make_app("api,worker,scheduler", plugins, settings_with())) as app:
        created = (await app.post("/api/v1/sample/notes", json={"body": "x"}, headers=alice.headers)).json()
        for _ in range(100):
            if HANDLED and len(TICKS) >= 2:
                break
            await asyncio.sleep(0.1)
    assert HANDLED == [created["id"]]
    assert len(TICKS) >= 2


async def test_validation_errors_name_the_field(sample_client, example_user):
    alice = await example_user("alice")
    url = "/api/v1/sample/notes"
    malformed = await sample_client.post(url, content=b'{"body": ', headers={**alice.headers,
                                                                            "content-type": "application/json"})
    assert_problem(malformed, 400, "malformed-body")
    wrong_type = assert_problem(await sample_client.post(url, json={"body": 5}, headers=alice.headers),
                                400, "validation-error")
    assert wrong_type["field"] == "body"
    unknown = await sample_client.post(url, json={"body": "x", "evil": 1}, headers=alice.headers)
    assert_problem(unknown, 400, "validation-error")
    blank = assert_problem(await sample_client.post(url, json={"body": "  "}, headers=alice.headers),
                           400, "validation-error")
    assert blank["field"] == "body"
    bad_id = await sample_client.get("/api/v1/sample/notes/not-a-uuid", headers=alice.headers)
    assert bad_id.status_code in (400, 404)
    assert_problem(await sample_client.get(f"/api/v1/sample/notes/{uuid.uuid4()}", headers=alice.headers),
                   404, "not-found")


async def test_unexpected_errors_reveal_nothing(sample_client):
    body = assert_problem(await sample_client.get("/api/v1/sample/boom"), 500, "internal-error")
    assert "secret" not in str(body) and body["request_id"]


async def test_oversized_body_is_refused(sample, make_app, example_user):
    plugins, settings_with = sample
    alice = await example_user("alice")
    app = make_app("api", plugins, settings_with(SYGMAX_SERVER_MAX_REQUEST_BODY="2048"))
    async with AsyncTestClient(app=app) as api:
        response = await api.post("/api/v1/sample/notes", json={"body": "x" * 5000}, headers=alice.headers)
        assert_problem(response, 413, "payload-too-large")


async def test_rate_limit_answers_429_with_retry_after(make_app, settings, tmp_path, environ):
    limited = load_settings(tmp_path / "absent.toml", environ={
        **environ, "SYGMAX_RATE_LIMIT_ENABLED": "true", "SYGMAX_RATE_LIMIT_PER_IP_PER_MINUTE": "5"})
    async with AsyncTestClient(app=make_app("api", app_settings=limited)) as api:
        statuses = [(await api.get("/healthz")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        response = await api.get("/healthz")
        body = assert_problem(response, 429, "rate-limited")
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-limit"] == "5"
        assert body["request_id"] == response.headers["x-request-id"]


async def test_metrics_count_requests_by_route_template(sample_client, example_user):
    alice = await example_user("alice")
    await sample_client.get(f"/api/v1/sample/notes/{uuid.uuid4()}", headers=alice.headers)
    await sample_client.get("/no/such/path/123")
    text = (await sample_client.get("/metrics")).text
    assert 'sygmax_http_request_duration_seconds_count{method="GET",route="/api/v1/sample/notes/{note_id}",' \
           'status="404"}' in text
    assert 'route="<unmatched>"' in text and "/no/such/path/123" not in text
    assert "sygmax_http_requests_in_flight" in text
    assert "sygmax_event_bus_lag" in text


async def test_openapi_describes_routes_and_errors(sample_client):
    schema = (await sample_client.get("/api/schema/openapi.json")).json()
    paths = schema["paths"]
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/users/me", "/api/v1/sample/notes",
            "/api/v1/sample/notes/{note_id}"} <= set(paths)
    create = paths["/api/v1/sample/notes"]["post"]
    assert "requestBody" in create and "201" in create["responses"] and "400" in create["responses"]
    assert "401" in paths["/api/v1/users/me"]["get"]["responses"]


async def test_clients_behind_a_trusted_proxy_get_their_own_bucket(make_app, tmp_path, environ):
    base = {**environ, "SYGMAX_RATE_LIMIT_ENABLED": "true", "SYGMAX_RATE_LIMIT_PER_IP_PER_MINUTE": "3"}
    behind_proxy = load_settings(tmp_path / "absent.toml", environ={**base, "SYGMAX_SERVER_TRUSTED_PROXIES": "testclient"})
    async with AsyncTestClient(app=make_app("api", app_settings=behind_proxy)) as api:
        # The test client's address plays Caddy: each forwarded client has its own budget.
        for client in ("203.0.113.1", "203.0.113.2"):
            statuses = [(await api.get("/healthz", headers={"X-Forwarded-For": f"10.9.9.9, {client}"})).status_code
                        for _ in range(4)]
            assert statuses == [200, 200, 200, 429], client
    direct = load_settings(tmp_path / "absent.toml", environ=base)
    async with AsyncTestClient(app=make_app("api", app_settings=direct)) as api:
        # Not a trusted proxy: a forged header changes nothing, the peer's own bucket applies.
        statuses = [(await api.get("/healthz", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
                    for n in range(4)]
        assert statuses == [200, 200, 200, 429]
