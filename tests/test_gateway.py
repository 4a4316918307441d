"""API gateway: security headers, CORS, rate limits (IP, user, route, login), body limits,
API versioning (deprecation, retirement, canary), feature flags (rules, cache, admin API, CLI)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import msgspec
import pytest
from litestar import get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from cli.main import app as cli_app
from sygmax import flags
from sygmax.auth.tokens import Actor, CurrentActor
from sygmax.config import load_settings
from sygmax.kernel import Kernel
from sygmax.plugins import Plugin, discover_plugins
from sygmax.versioning import add_month, canary_bucket, in_canary
from tests.conftest import assert_problem

HOSTILE_NAMES = ["Bad", "'; DROP TABLE sygmax_feature_flag--", "<script>", "x" * 65, "1abc", "a b", "ä"]


def settings_with(environ, tmp_path, **overrides):
    return load_settings(tmp_path / "absent.toml", environ={**environ, **overrides})


# ---------------------------------------------------------------------------------------------
# Security headers and CORS


async def test_security_headers_on_every_response(client):
    for response in (await client.get("/healthz"), await client.get("/api/v1/nowhere"),
                     await client.get("/api/v1/users/me"), await client.delete("/healthz")):
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert "strict-transport-security" not in headers  # public URL is http://, request over http
        assert headers.get_list("x-frame-options") == ["DENY"]  # once, not duplicated
    docs = await client.get("/api/schema/swagger")
    assert docs.status_code == 200 and "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


async def test_hsts_only_for_https(make_app, environ, tmp_path):
    https = settings_with(environ, tmp_path, SYGMAX_SERVER_PUBLIC_URL="https://sygmax.example.org")
    async with AsyncTestClient(app=make_app("api", app_settings=https)) as api:
        hsts = (await api.get("/healthz")).headers["strict-transport-security"]
        assert hsts.startswith("max-age=31536000")
    async with AsyncTestClient(app=make_app("api"), base_url="https://testserver.local") as tls:
        assert "strict-transport-security" in (await tls.get("/healthz")).headers


async def test_cors_allowlist(make_app, environ, tmp_path):
    allowed = "https://app.example.org"
    cors = settings_with(environ, tmp_path, SYGMAX_CORS_ALLOW_ORIGINS=allowed)
    async with AsyncTestClient(app=make_app("api", app_settings=cors)) as api:
        ok = await api.get("/healthz", headers={"Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed
        assert ok.headers["access-control-allow-credentials"] == "true"
        assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
        denied = await api.get("/healthz", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in denied.headers
        lookalike = await api.get("/healthz", headers={"Origin": "https://app.example.org.evil.net"})
        assert "access-control-allow-origin" not in lookalike.headers
        preflight = await api.options("/api/v1/users/me", headers={
            "Origin": allowed, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-max-age"] == "600"
        assert "x-content-type-options" in preflight.headers
        bad_preflight = await api.options("/api/v1/users/me", headers={
            "Origin": "https://evil.example.net", "Access-Control-Request-Method": "PUT"})
        assert bad_preflight.status_code >= 400
        assert "access-control-allow-origin" not in bad_preflight.headers
    # No origins configured: same-origin only, never a wildcard.
    async with AsyncTestClient(app=make_app("api")) as api:
        response = await api.get("/healthz", headers={"Origin": allowed})
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["*", "https://app.example.org/path", "app.example.org", "https://*.example.org"])
def test_cors_config_refuses_inexact_origins(environ, tmp_path, origin):
    from sygmax.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings_with(environ, tmp_path, SYGMAX_CORS_ALLOW_ORIGINS=origin)
    assert "cors.allow_origins" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Rate limits


def limited(environ, tmp_path, **overrides):
    return settings_with(environ, tmp_path, SYGMAX_RATE_LIMIT_ENABLED="true",
                         SYGMAX_RATE_LIMIT_PER_IP_PER_MINUTE="100000", **overrides)


def assert_429(response, limit: int) -> None:
    body = assert_problem(response, 429, "rate-limited")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) >= 1
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_per_user_limit(make_app, environ, tmp_path, example_user, redis_url):
    alice, bob = await example_user("alice"), await example_user("bob")
    app = make_app("api", app_settings=limited(environ, tmp_path, SYGMAX_RATE_LIMIT_PER_USER_PER_MINUTE="3"))
    async with AsyncTestClient(app=app) as api:
        statuses = [(await api.get("/api/v1/users/me", headers=alice.headers)).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        assert_429(await api.get("/api/v1/flags/me", headers=alice.headers), 3)  # any route: the user's bucket
        assert (await api.get("/api/v1/users/me", headers=bob.headers)).status_code == 200  # bob has his own
        for _ in range(5):  # unauthenticated routes never touch a user bucket
            assert (await api.get("/healthz")).status_code == 200
    import redis as redis_sync

    keys = {key.decode() for key in redis_sync.Redis.from_url(redis_url).keys("sygmax:ratelimit:*")}
    assert {f"sygmax:ratelimit:user:{alice.id}", f"sygmax:ratelimit:user:{bob.id}"} <= keys
    assert all(key.startswith(("sygmax:ratelimit:ip:", "sygmax:ratelimit:user:")) for key in keys), keys


async def test_per_route_limit(make_app, environ, tmp_path, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    routes = json.dumps({"GET /api/v1/flags/*": 2, "/api/v1/auth/oidc/providers": 2})
    app = make_app("api", app_settings=limited(environ, tmp_path, SYGMAX_RATE_LIMIT_ROUTES=routes))
    async with AsyncTestClient(app=app) as api:
        assert [(await api.get("/api/v1/flags/me", headers=alice.headers)).status_code for _ in range(2)] == [200] * 2
        assert_429(await api.get("/api/v1/flags/me", headers=alice.headers), 2)
        assert (await api.get("/api/v1/users/me", headers=alice.headers)).status_code == 200  # other route
        assert (await api.get("/api/v1/flags/me", headers=bob.headers)).status_code == 200  # per caller
        # A route that does not authenticate is limited per client IP.
        assert [(await api.get("/api/v1/auth/oidc/providers")).status_code for _ in range(2)] == [200] * 2
        assert_429(await api.get("/api/v1/auth/oidc/providers"), 2)


def test_route_table_matching():
    from sygmax.ratelimit import _match

    table = {"/api/v1/chats/*": 10, "POST /api/v1/chats/*": 5, "/api/v1/chats/{id}/messages": 7}
    assert _match(table, "GET", "/api/v1/chats/{id}") == ("/api/v1/chats/*", 10)
    assert _match(table, "POST", "/api/v1/chats/{id}") == ("POST /api/v1/chats/*", 5)
    assert _match(table, "POST", "/api/v1/chats/{id}/messages") == ("/api/v1/chats/{id}/messages", 7)
    assert _match(table, "GET", "/api/v1/chatsx") is None
    assert _match(table, "GET", "/api/v1/chats") == ("/api/v1/chats/*", 10)


@pytest.mark.parametrize("routes", ['{"api/v1/x": 5}', '{"/api/v1/x": 0}', '{"GET POST /x": 3}', "not json"])
def test_route_table_config_is_validated(environ, tmp_path, routes):
    from sygmax.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        limited(environ, tmp_path, SYGMAX_RATE_LIMIT_ROUTES=routes)
    assert "rate_limit.routes" in str(caught.value) or "SYGMAX_RATE_LIMIT_ROUTES" in str(caught.value)


async def test_login_limit_is_stricter(make_app, environ, tmp_path, example_user):
    alice = await example_user("alice")
    app = make_app("api", app_settings=limited(environ, tmp_path, SYGMAX_AUTH_LOGIN_PER_IP_PER_MINUTE="3"))
    async with AsyncTestClient(app=app) as api:
        body = {"email": "alice@example.org", "password": "wrong password here"}
        for _ in range(3):
            assert (await api.post("/api/v1/auth/login", json=body)).status_code != 429
        assert_429(await api.post("/api/v1/auth/login", json=body), 3)
        # The same IP's login bucket covers registration and password resets too.
        assert_429(await api.post("/api/v1/auth/register", json={"email": "x@example.org"}), 3)
        assert_429(await api.post("/api/v1/auth/password/forgot", json={"email": "x@example.org"}), 3)
        # Other routes of that IP are not affected.
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/api/v1/users/me", headers=alice.headers)).status_code == 200


async def test_rate_limits_fail_open_without_redis(make_app, environ, tmp_path, example_user):
    alice = await example_user("alice")
    broken = limited(environ, tmp_path, SYGMAX_REDIS_URL="redis://127.0.0.1:1/0",
                     SYGMAX_RATE_LIMIT_PER_USER_PER_MINUTE="1")
    async with AsyncTestClient(app=make_app("api", app_settings=broken)) as api:
        for _ in range(3):
            assert (await api.get("/healthz")).status_code == 200
            assert (await api.get("/api/v1/flags/me", headers=alice.headers)).status_code == 200


# ---------------------------------------------------------------------------------------------
# Body size


async def test_oversized_bodies_are_refused(make_app, environ, tmp_path, example_user, db):
    admin = await example_user("root", admin=True)
    small = settings_with(environ, tmp_path, SYGMAX_SERVER_MAX_REQUEST_BODY="2048")
    async with AsyncTestClient(app=make_app("api", app_settings=small)) as api:
        response = await api.put("/api/v1/flags/big", headers=admin.headers,
                                 json={"enabled": True, "description": "x" * 5000})
        assert_problem(response, 413, "payload-too-large")
        graphql = await api.post("/api/graphql", headers=admin.headers,
                                 json={"query": "{ me { id } }", "padding": "x" * 5000})
        assert_problem(graphql, 413, "payload-too-large")
    assert await db.fetchval("SELECT count(*) FROM sygmax_feature_flag") == 0


# ---------------------------------------------------------------------------------------------
# API versioning


@get("/hello", summary="v1 greeting")
async def hello_v1(actor: CurrentActor) -> dict[str, str]:
    return {"version": "v1", "user": str(actor.user_id)}


@get("/hello", summary="v2 greeting")
async def hello_v2(actor: CurrentActor) -> dict[str, str]:
    return {"version": "v2", "user": str(actor.user_id)}


@get("/items/{item_id:int}", summary="v1 item")
async def item_v1(item_id: FromPath[int]) -> dict[str, object]:
    return {"version": "v1", "id": item_id}


@get("/items/{item_id:int}", summary="v2 item")
async def item_v2(item_id: FromPath[int]) -> dict[str, object]:
    return {"version": "v2", "id": item_id}


@get("/only-v1", summary="no successor")
async def only_v1() -> dict[str, str]:
    return {"version": "v1"}


def versioned_plugins() -> dict[str, Plugin]:
    demo = Plugin(name="demo", http_handlers=[hello_v1, item_v1, only_v1],
                  versioned_handlers={"v2": [hello_v2, item_v2]})
    return {**discover_plugins(), "demo": demo}


def test_plugin_versions_are_validated():
    from sygmax.plugins import PluginError

    with pytest.raises(PluginError):
        Plugin(name="demo", versioned_handlers={"v1": []})
    with pytest.raises(PluginError):
        Plugin(name="demo", versioned_handlers={"beta": []})


def test_sunset_is_one_calendar_month_later():
    assert add_month(date(2025, 3, 10)) == date(2025, 4, 10)
    assert add_month(date(2025, 1, 31)) == date(2025, 2, 28)
    assert add_month(date(2024, 1, 31)) == date(2024, 2, 29)
    assert add_month(date(2025, 12, 15)) == date(2026, 1, 15)


async def test_deprecated_version_headers(make_app, environ, tmp_path, example_user):
    alice = await example_user("alice")
    deprecated_on = datetime.now(timezone.utc).date() - timedelta(days=3)
    settings = settings_with(environ, tmp_path,
                             SYGMAX_GATEWAY_DEPRECATED_VERSIONS=json.dumps({"v1": deprecated_on.isoformat()}),
                             SYGMAX_GATEWAY_CANARY_PERCENT="0")
    async with AsyncTestClient(app=make_app("api", versioned_plugins(), settings)) as api:
        response = await api.get("/api/v1/demo/items/7?x=1")
        assert response.status_code == 200 and response.json() == {"version": "v1", "id": 7}
        start = datetime(deprecated_on.year, deprecated_on.month, deprecated_on.day, tzinfo=timezone.utc)
        assert response.headers["deprecation"] == f"@{int(start.timestamp())}"
        sunset = parsedate_to_datetime(response.headers["sunset"])
        assert sunset.date() == add_month(deprecated_on)
        assert response.headers["link"] == '</api/v2/demo/items/7>; rel="successor-version"'
        # A deprecated route without a twin links to the newest version.
        lonely = await api.get("/api/v1/demo/only-v1")
        assert lonely.status_code == 200 and lonely.headers["link"] == '</api/v2>; rel="successor-version"'
        assert "deprecation" in lonely.headers
        # Every v1 route carries the headers, kernel routes included; v2 does not.
        assert "deprecation" in (await api.get("/api/v1/users/me", headers=alice.headers)).headers
        newer = await api.get("/api/v2/demo/items/7")
        assert newer.json() == {"version": "v2", "id": 7} and "deprecation" not in newer.headers
        assert "deprecation" not in (await api.get("/healthz")).headers
        # Unknown paths under a deprecated version still get a plain 404 (with the headers).
        assert_problem(await api.get("/api/v1/demo/nowhere"), 404, "not-found")


async def test_retired_after_sunset(make_app, environ, tmp_path):
    deprecated_on = datetime.now(timezone.utc).date() - timedelta(days=62)
    settings = settings_with(environ, tmp_path,
                             SYGMAX_GATEWAY_DEPRECATED_VERSIONS=json.dumps({"v1": deprecated_on.isoformat()}))
    async with AsyncTestClient(app=make_app("api", versioned_plugins(), settings)) as api:
        gone = await api.get("/api/v1/demo/items/3")
        body = assert_problem(gone, 410, "api-version-retired")
        assert gone.headers["link"] == '</api/v2/demo/items/3>; rel="successor-version"'
        assert body["instance"] == "/api/v1/demo/items/3"
        assert gone.headers["x-frame-options"] == "DENY"
        # Without a successor nothing is removed.
        assert (await api.get("/api/v1/demo/only-v1")).status_code == 200
        assert (await api.get("/api/v2/demo/items/3")).json()["version"] == "v2"


def test_canary_bucket_is_stable_and_about_ten_percent():
    ids = [uuid.UUID(int=random.Random(7).getrandbits(128) ^ i) for i in range(20_000)]
    share = sum(in_canary(user_id, 10) for user_id in ids) / len(ids)
    assert 0.09 < share < 0.11, share
    assert all(canary_bucket(user_id) == canary_bucket(str(user_id)) for user_id in ids[:100])
    assert not any(in_canary(user_id, 0) for user_id in ids[:1000])
    assert all(in_canary(user_id, 100) for user_id in ids[:1000])
    # Raising the percentage only adds users.
    assert all(in_canary(user_id, 20) for user_id in ids if in_canary(user_id, 10))


async def test_canary_routes_some_users_to_v2(make_app, environ, tmp_path, db):
    from sygmax.auth.tokens import create_user, issue_token

    users = []
    for number in range(80):
        user_id = await create_user(db, f"canary{number}@example.org", f"Canary {number}")
        users.append((user_id, await issue_token(db, user_id, "canary")))
    settings = settings_with(environ, tmp_path, SYGMAX_GATEWAY_CANARY_PERCENT="25")
    async with AsyncTestClient(app=make_app("api", versioned_plugins(), settings)) as api:
        served = {}
        for user_id, token in users:
            response = await api.get("/api/v1/demo/hello", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            assert response.json()["user"] == str(user_id)
            served[user_id] = response.json()["version"]
            if served[user_id] == "v2":
                assert response.headers["sygmax-api-version"] == "v2"
            else:
                assert "sygmax-api-version" not in response.headers
        assert served == {user_id: "v2" if in_canary(user_id, 25) else "v1" for user_id, _ in users}
        assert 0 < list(served.values()).count("v2") < len(users)
        # Sticky: the same user lands on the same side every time.
        user_id, token = users[0]
        again = {(await api.get("/api/v1/demo/hello", headers={"Authorization": f"Bearer {token}"})).json()["version"]
                 for _ in range(5)}
        assert again == {served[user_id]}
        # Unauthenticated callers stay on the version they asked for (and get its 401).
        assert_problem(await api.get("/api/v1/demo/hello"), 401, "unauthenticated")
        # Routes without a twin are never rerouted; v2 callers stay on v2.
        assert (await api.get("/api/v1/demo/only-v1")).json() == {"version": "v1"}
        assert (await api.get("/api/v2/demo/hello", headers={"Authorization": f"Bearer {token}"})).json()[
            "version"] == "v2"


# ---------------------------------------------------------------------------------------------
# Feature flags: rules


def rule(enabled=True, percentage=0, users=(), workspaces=()):
    return flags._Compiled(enabled, percentage, frozenset(users), frozenset(workspaces))


def test_flag_rules():
    alice, bob, space = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert not flags.evaluate("f", None, alice)
    assert flags.evaluate("f", rule(percentage=100), alice) and flags.evaluate("f", rule(percentage=100), None)
    assert not flags.evaluate("f", rule(enabled=False, percentage=100, users=[alice]), alice)  # kill switch
    assert flags.evaluate("f", rule(users=[alice]), alice) and not flags.evaluate("f", rule(users=[alice]), bob)
    assert flags.evaluate("f", rule(workspaces=[space]), bob, space)
    assert not flags.evaluate("f", rule(workspaces=[space]), bob) and not flags.evaluate("f", rule(), alice)
    assert not flags.evaluate("f", rule(percentage=50), None)  # anonymous callers have no bucket
    ids = [uuid.UUID(int=i * 7919 + 1) for i in range(10_000)]
    share = sum(flags.evaluate("new-editor", rule(percentage=30), user_id) for user_id in ids) / len(ids)
    assert 0.28 < share < 0.32, share
    # Stable per flag and user, independent between flags.
    assert [flags.bucket("a", user_id) for user_id in ids[:50]] == [flags.bucket("a", user_id) for user_id in ids[:50]]
    assert [flags.bucket("a", user_id) for user_id in ids[:50]] != [flags.bucket("b", user_id) for user_id in ids[:50]]


# ---------------------------------------------------------------------------------------------
# Feature flags: admin API, /flags/me, audit, cache


@pytest.fixture
async def flag_api(make_app):
    async with AsyncTestClient(app=make_app("api")) as client:
        yield client


@asynccontextmanager
async def own_kernel(settings):
    """A kernel in the test's event loop (the test client runs the app in a loop of its own)."""
    kernel = Kernel.build(settings, discover_plugins())
    await kernel.start()
    try:
        yield kernel
    finally:
        await kernel.stop()


async def flag_rows(db) -> list:
    return [dict(row) for row in await db.fetch("SELECT * FROM sygmax_feature_flag ORDER BY name")]


async def test_flag_admin_api(flag_api, example_user, db):
    root, alice = await example_user("root", admin=True), await example_user("alice")
    url = "/api/v1/flags/new-editor"
    created = await flag_api.put(url, headers=root.headers, json={
        "enabled": True, "percentage": 10, "users": [str(alice.id)], "description": "The new editor"})
    assert created.status_code == 201, created.text
    flag = created.json()
    assert flag["name"] == "new-editor" and flag["percentage"] == 10 and flag["users"] == [str(alice.id)]
    assert flag["updated_by"] == str(root.id)
    replaced = await flag_api.put(url, headers=root.headers, json={"enabled": True, "percentage": 100})
    assert replaced.status_code == 200 and replaced.json()["users"] == [] and replaced.json()["description"] == ""
    listed = await flag_api.get("/api/v1/flags", headers=root.headers)
    assert [item["name"] for item in listed.json()] == ["new-editor"]
    assert (await flag_api.get(url, headers=root.headers)).json()["percentage"] == 100
    mine = await flag_api.get("/api/v1/flags/me", headers=alice.headers)
    assert mine.json() == {"flags": {"new-editor": True}, "workspace_id": None}
    assert (await flag_api.delete(url, headers=root.headers)).status_code == 204
    assert_problem(await flag_api.get(url, headers=root.headers), 404, "not-found")
    assert_problem(await flag_api.delete(url, headers=root.headers), 404, "not-found")
    assert (await flag_api.get("/api/v1/flags/me", headers=alice.headers)).json()["flags"] == {}
    audit = await db.fetch("SELECT actor_id, action, object_id, details FROM sygmax_audit "
                           "WHERE object_type = 'feature_flag' ORDER BY seq")
    assert [(row["action"], row["object_id"], row["actor_id"]) for row in audit] == [
        ("flag.set", "new-editor", root.id), ("flag.set", "new-editor", root.id),
        ("flag.delete", "new-editor", root.id)]
    second = json.loads(audit[1]["details"])
    assert second["before"]["percentage"] == 10 and second["after"]["percentage"] == 100


async def test_flag_admin_api_refuses_non_admins_and_bad_input(flag_api, example_user, db):
    root, alice = await example_user("root", admin=True), await example_user("alice")
    assert (await flag_api.put("/api/v1/flags/beta", headers=root.headers, json={"enabled": True})).status_code == 201
    before = await flag_rows(db)
    audit_before = await db.fetchval("SELECT count(*) FROM sygmax_audit")
    for method, url, body in (("GET", "/api/v1/flags", None), ("GET", "/api/v1/flags/beta", None),
                              ("PUT", "/api/v1/flags/beta", {"enabled": False}),
                              ("PUT", "/api/v1/flags/other", {"enabled": True}),
                              ("DELETE", "/api/v1/flags/beta", None), ("DELETE", "/api/v1/flags/nope", None)):
        response = await flag_api.request(method, url, headers=alice.headers, json=body)
        assert_problem(response, 403, "forbidden")
        assert_problem(await flag_api.request(method, url, json=body), 401, "unauthenticated")
    bad_bodies = [{"enabled": "yes"}, {"enabled": True, "percentage": 101}, {"enabled": True, "percentage": -1},
                  {"enabled": True, "evil": 1}, {"percentage": 5}, {"enabled": True, "users": ["not-a-uuid"]},
                  {"enabled": True, "description": "x" * 501}, {"enabled": True, "users": [str(alice.id)] * 1001},
                  {"enabled": True, "description": "nul \u0000 inside"},  # PostgreSQL text cannot hold NUL
                  [1, 2], "text"]
    for body in bad_bodies:
        response = await flag_api.put("/api/v1/flags/beta", headers=root.headers, json=body)
        assert response.status_code == 400, (body, response.text)
    for field in ("users", "workspaces"):  # ids of nothing: 404 naming the list
        unknown = await flag_api.put("/api/v1/flags/beta", headers=root.headers,
                                     json={"enabled": True, field: [str(uuid.uuid4())]})
        assert assert_problem(unknown, 404, "not-found")["field"] == field
    malformed = await flag_api.put("/api/v1/flags/beta", headers={**root.headers, "content-type": "application/json"},
                                   content=b'{"enabled": ')
    assert_problem(malformed, 400, "malformed-body")
    for name in HOSTILE_NAMES:
        response = await flag_api.put(f"/api/v1/flags/{name}", headers=root.headers, json={"enabled": True})
        assert response.status_code in (400, 404), (name, response.text)
    assert (await flag_api.put("/api/v1/flags/me", headers=root.headers, json={"enabled": True})).status_code == 405
    assert await flag_rows(db) == before
    assert await db.fetchval("SELECT count(*) FROM sygmax_audit") == audit_before


async def test_flags_me_with_workspaces(flag_api, example_user, db, settings):
    from sygmax.auth.workspaces import do_create_workspace

    root, alice, bob = (await example_user("root", admin=True), await example_user("alice"),
                        await example_user("bob"))
    actor = Actor(alice.id, "alice@example.org", "Alice", False)
    space = (await do_create_workspace(actor, db, "Acme")).id
    other = (await do_create_workspace(Actor(bob.id, "bob@example.org", "Bob", False), db, "Other")).id
    await flag_api.put("/api/v1/flags/ws-only", headers=root.headers,
                       json={"enabled": True, "workspaces": [str(space)]})
    await flag_api.put("/api/v1/flags/bob-only", headers=root.headers, json={"enabled": True, "users": [str(bob.id)]})
    await flag_api.put("/api/v1/flags/killed", headers=root.headers, json={"enabled": False, "percentage": 100})
    plain = (await flag_api.get("/api/v1/flags/me", headers=alice.headers)).json()
    assert plain["flags"] == {"bob-only": False, "killed": False, "ws-only": False}
    inside = (await flag_api.get(f"/api/v1/flags/me?workspace_id={space}", headers=alice.headers)).json()
    assert inside == {"flags": {"bob-only": False, "killed": False, "ws-only": True}, "workspace_id": str(space)}
    # Another workspace's id (IDOR) or an unknown one: 404, nothing evaluated.
    assert_problem(await flag_api.get(f"/api/v1/flags/me?workspace_id={other}", headers=alice.headers),
                   404, "not-found")
    assert_problem(await flag_api.get(f"/api/v1/flags/me?workspace_id={uuid.uuid4()}", headers=alice.headers),
                   404, "not-found")
    assert (await flag_api.get("/api/v1/flags/me?workspace_id=x'--", headers=alice.headers)).status_code == 400
    assert (await flag_api.get("/api/v1/flags/me", headers=bob.headers)).json()["flags"]["bob-only"] is True
    # is_enabled, the in-process API every module uses
    async with own_kernel(settings) as kernel:
        alice_actor = Actor(alice.id, "alice@example.org", "Alice", False)
        assert await flags.is_enabled(kernel, "ws-only", alice_actor, space)
        assert not await flags.is_enabled(kernel, "ws-only", alice_actor)
        assert not await flags.is_enabled(kernel, "no-such-flag", alice_actor)
        assert not await flags.is_enabled(kernel, "bob-only", None)
        assert await flags.is_enabled(kernel, "bob-only", Actor(bob.id, "bob@example.org", "Bob", False))


async def test_flag_cache(make_app, environ, tmp_path, example_user, db):
    alice = await example_user("alice")
    actor = Actor(alice.id, "alice@example.org", "Alice", False)
    cached = settings_with(environ, tmp_path, SYGMAX_GATEWAY_FLAG_CACHE_S="300")
    async with own_kernel(cached) as kernel:
        assert not await flags.is_enabled(kernel, "beta", actor)
        # Written behind this process's back (another node): cached until the TTL runs out...
        await flags.do_set_flag(None, db, "beta", flags.FlagIn(enabled=True, percentage=100))
        assert not await flags.is_enabled(kernel, "beta", actor)
        flags.cache_of(kernel).invalidate()  # ...which is what the TTL does
        assert await flags.is_enabled(kernel, "beta", actor)
        # A change made through this process is seen at once.
        await flags.do_delete_flag(None, kernel.db.pool, "beta", kernel=kernel)
        assert not await flags.is_enabled(kernel, "beta", actor)


# ---------------------------------------------------------------------------------------------
# Feature flags: CLI


runner = CliRunner()


@pytest.fixture
def cli_env(environ, tmp_path) -> dict[str, str]:
    return {**environ, "SYGMAX_CONFIG": str(tmp_path / "sygmax.toml")}


async def flags_cli(args: list[str], env: dict[str, str]):
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(runner.invoke, cli_app, ["flags", *args], env=env)


async def test_flags_cli(cli_env, example_user, db):
    alice, bob = await example_user("alice"), await example_user("bob")
    assert (await flags_cli(["list"], cli_env)).output.strip() == "no feature flags"
    result = await flags_cli(["set", "beta", "--percentage", "10", "--user", str(alice.id), "--description", "Beta UI"],
                       cli_env)
    assert result.exit_code == 0, result.output
    assert "created flag beta: on for 10% of users, 1 user(s)" in result.output
    result = await flags_cli(["set", "beta", "--off"], cli_env)
    assert result.exit_code == 0 and "off (kill switch)" in result.output
    row = await db.fetchrow("SELECT * FROM sygmax_feature_flag WHERE name = 'beta'")
    assert not row["enabled"] and row["percentage"] == 10 and row["users"] == [alice.id]  # rules kept
    assert row["description"] == "Beta UI"
    result = await flags_cli(["set", "beta", "--user", str(bob.id), "--user", str(alice.id)], cli_env)
    assert result.exit_code == 0 and "on for 10% of users, 2 user(s)" in result.output
    assert (await flags_cli(["set", "beta", "--on"], cli_env)).output.count("on for everyone") == 1
    listed = await flags_cli(["list", "--json"], cli_env)
    assert listed.exit_code == 0
    [entry] = json.loads(listed.output)
    assert entry["name"] == "beta" and entry["percentage"] == 100 and entry["enabled"]
    assert set(entry["users"]) == {str(alice.id), str(bob.id)}
    assert "beta" in (await flags_cli(["list"], cli_env)).output
    assert (await flags_cli(["delete", "beta"], cli_env)).exit_code == 0
    actions = [row["action"] for row in await db.fetch(
        "SELECT action, actor_id FROM sygmax_audit WHERE object_type = 'feature_flag' ORDER BY seq")]
    assert actions == ["flag.set"] * 4 + ["flag.delete"]
    assert await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE object_type = 'feature_flag' "
                             "AND actor_id IS NOT NULL") == 0


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["set", "Bad Name", "--on"], 2, "not a flag name"),
    (["set", "'; DROP TABLE sygmax_feature_flag--", "--on"], 2, "not a flag name"),
    (["set", "beta", "--user", "not-a-uuid"], 2, "not a UUID"),
    (["set", "beta", "--user", "00000000-0000-0000-0000-000000000001"], 2, "unknown id"),
    (["set", "beta", "--workspace", "00000000-0000-0000-0000-000000000001"], 2, "unknown id"),
    (["set", "beta", "--percentage", "101"], 2, "less than or equal to 100"),
    (["set", "beta", "--on", "--percentage", "10"], 2, "--on means everyone"),
    (["set", "beta", "--user", "00000000-0000-0000-0000-000000000001", "--clear-users"], 2, "not both"),
    (["delete", "nope"], 1, "No feature flag named nope"),
    (["delete", "<script>"], 2, "name:"),
])
async def test_flags_cli_refusals(cli_env, db, args, code, needle):
    result = await flags_cli(args, cli_env)
    assert result.exit_code == code, result.output
    assert needle in result.output, result.output
    assert await db.fetchval("SELECT count(*) FROM sygmax_feature_flag") == 0
    assert await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE object_type = 'feature_flag'") == 0


async def test_flags_cli_without_database(cli_env):
    env = {**cli_env, "SYGMAX_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = await flags_cli(["list"], env)
    assert result.exit_code == 1 and "cannot reach the database (database.url)" in result.output


def test_flag_struct_round_trip():
    data = msgspec.json.decode(b'{"enabled": true, "percentage": 5}', type=flags.FlagIn)
    assert data.percentage == 5 and data.users == [] and data.description == ""
