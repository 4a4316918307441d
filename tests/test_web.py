"""The api profile serves the web UI: index.html for client routes (no-cache), hashed assets
with long cache headers, problems for unknown API paths, and a start-up without a build."""

from __future__ import annotations

import os

import pytest
from litestar.testing import AsyncTestClient

from sygmax.web import spa
from tests.conftest import assert_problem

INDEX = b'<!doctype html><html><head><script type="module" src="/assets/index-abc123.js"></script></head></html>'
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def static_dir(tmp_path, monkeypatch):
    """A build output as Vite writes it, in a temporary folder the app serves instead of the package's."""
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_bytes(INDEX)
    (static / "assets" / "index-abc123.js").write_text("console.log('sygmax')")
    (static / "assets" / "index-abc123.css").write_text("body{}")
    monkeypatch.setattr(spa, "STATIC_DIR", static)
    return static


async def test_client_routes_get_index_html(make_app, static_dir):
    async with AsyncTestClient(app=make_app("api")) as client:
        for path in ("/", "/signin", "/settings", "/chats/3f2a/thread?x=1", "/admin/system"):
            response = await client.get(path, headers=HTML)
            assert response.status_code == 200, path
            assert response.content == INDEX
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            # Served inside the gateway: the same strict CSP as the API, no inline script allowed.
            csp = response.headers["content-security-policy"]
            assert csp.startswith("default-src 'self'") and "unsafe-inline" not in csp
        head = await client.head("/settings", headers=HTML)
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(INDEX))
        # "/" is the UI even without an Accept header (curl, a load balancer's probe of the site).
        assert (await client.get("/")).content == INDEX


async def test_assets_are_cached_for_a_year(make_app, static_dir):
    async with AsyncTestClient(app=make_app("api")) as client:
        script = await client.get("/assets/index-abc123.js")
        assert script.status_code == 200 and script.text == "console.log('sygmax')"
        assert "javascript" in script.headers["content-type"]
        cache = script.headers["cache-control"]
        assert "max-age=31536000" in cache and "immutable" in cache and "public" in cache
        style = await client.get("/assets/index-abc123.css", headers=HTML)
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        missing = await client.get("/assets/index-gone.js", headers=HTML)
        assert missing.status_code == 404 and missing.content != INDEX
        (static_dir / "secret.txt").write_text("outside assets")
        for escape in ("/assets/%2e%2e/secret.txt", "/assets/..%2fsecret.txt", "/assets/%2e%2e/%2e%2e/pyproject.toml"):
            response = await client.get(escape)
            assert response.status_code == 404 and b"outside assets" not in response.content, escape


async def test_server_paths_are_never_the_ui(make_app, static_dir):
    async with AsyncTestClient(app=make_app("api")) as client:
        assert_problem(await client.get("/api/v1/nowhere", headers=HTML), 404, "not-found")
        assert_problem(await client.get("/api", headers=HTML), 404, "not-found")
        assert_problem(await client.get("/ws/chats", headers=HTML), 404, "not-found")
        assert (await client.get("/healthz", headers=HTML)).json() == {"status": "ok"}
        assert (await client.get("/api/v1/system/public", headers=HTML)).json() == {"registration": "invite"}
        # Not a browser navigation (an image, a script, an API client): the 404 problem, not HTML.
        assert_problem(await client.get("/favicon.ico", headers={"Accept": "image/avif,image/*"}), 404, "not-found")
        assert_problem(await client.get("/some/page"), 404, "not-found")
        # Unsafe methods never get the page.
        assert (await client.post("/settings", headers=HTML)).status_code in (404, 405)


async def test_realtime_profile_does_not_serve_the_ui(make_app, static_dir):
    async with AsyncTestClient(app=make_app("realtime")) as client:
        assert_problem(await client.get("/settings", headers=HTML), 404, "not-found")
        assert_problem(await client.get("/assets/index-abc123.js"), 404, "not-found")


async def test_without_a_build_the_api_starts_and_says_how_to_build(make_app, tmp_path, monkeypatch):
    monkeypatch.setattr(spa, "STATIC_DIR", tmp_path / "never-built")
    async with AsyncTestClient(app=make_app("api")) as client:
        page = await client.get("/", headers=HTML)
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert b"npm ci" in page.content and b"npm run build" in page.content and b"<script" not in page.content
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/v1/system/public")).status_code == 200


async def test_a_rebuild_is_served_without_a_restart(make_app, static_dir):
    async with AsyncTestClient(app=make_app("api")) as client:
        assert (await client.get("/", headers=HTML)).content == INDEX
        rebuilt = INDEX.replace(b"abc123", b"def456")
        index = static_dir / "index.html"
        index.write_bytes(rebuilt)
        stat = index.stat()
        os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a later build
        assert (await client.get("/settings", headers=HTML)).content == rebuilt


# ---------------------------------------------------------------------------------------------
# The system module's endpoints behind the sign-in and admin pages


async def test_public_info_reports_the_registration_policy(make_app, environ, tmp_path):
    from sygmax.config import load_settings

    for policy in ("open", "invite", "closed"):
        settings = load_settings(tmp_path / "absent.toml", environ={**environ, "SYGMAX_AUTH_REGISTRATION": policy})
        async with AsyncTestClient(app=make_app("api", app_settings=settings)) as client:
            response = await client.get("/api/v1/system/public")  # no credentials needed
            assert response.status_code == 200 and response.json() == {"registration": policy}


async def test_admin_overviews_of_users_and_workspaces(client, example_user, db):
    admin, alice = await example_user("root", admin=True), await example_user("alice")
    created = await client.post("/api/v1/workspaces", json={"name": "Alice's place"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    users = await client.get("/api/v1/system/users", headers=admin.headers)
    assert users.status_code == 200
    by_email = {user["email"]: user for user in users.json()}
    assert by_email["alice@example.org"]["workspaces"] == 1 and not by_email["alice@example.org"]["is_admin"]
    assert by_email["root@example.org"]["is_admin"] and by_email["root@example.org"]["is_active"]
    assert len((await client.get("/api/v1/system/users?limit=1", headers=admin.headers)).json()) == 1
    workspaces = (await client.get("/api/v1/system/workspaces", headers=admin.headers)).json()
    assert [(w["name"], w["members"], w["owners"]) for w in workspaces] == [("Alice's place", 1, ["alice@example.org"])]


async def test_admin_overviews_refuse_everybody_else(client, example_user, db):
    from sygmax.auth.tokens import issue_token

    alice, admin = await example_user("alice"), await example_user("root", admin=True)
    narrow = await issue_token(db, admin.id, "chats only", scopes=["workspace.read"])
    for path in ("/api/v1/system/users", "/api/v1/system/workspaces"):
        assert_problem(await client.get(path), 401, "unauthenticated")
        assert_problem(await client.get(path, headers=alice.headers), 403, "forbidden")
        # An admin's token without system.view is refused too: tokens never exceed their scopes.
        assert_problem(await client.get(path, headers={"Authorization": f"Bearer {narrow}"}), 403, "forbidden")
        for bad in ("0", "1001", "many"):
            assert_problem(await client.get(f"{path}?limit={bad}", headers=admin.headers), 400, "validation-error")
