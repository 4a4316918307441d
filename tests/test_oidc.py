"""OpenID Connect and OAuth2 login against a real provider the test runs itself
(tests/oidc_provider.py): the full authorization-code + PKCE flow, followed redirect by
redirect, then every refusal (state, nonce, audience, expiry, keys, e-mail linking rules)."""

from __future__ import annotations

import json
import uuid
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar.testing import AsyncTestClient

from sygmax.auth.oidc import pkce_challenge, safe_next
from sygmax.config import ConfigError, load_settings
from tests.conftest import assert_problem
from tests.oidc_provider import CLIENT_ID, OidcProviderServer
from tests.servers import free_port

BASE = "/api/v1/auth/oidc"


@pytest.fixture(scope="module")
def idp():
    server = OidcProviderServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_idp(idp):
    idp.misbehave.clear()
    idp.requests.clear()
    idp.user = {"sub": f"subject-{uuid.uuid4().hex[:8]}", "email": "new.person@example.org", "email_verified": True,
                "name": "New Person"}
    yield idp


def oidc_settings(environ, tmp_path, idp, registration: str = "open", **extra):
    providers = {"test": idp.provider_config(), "hub": idp.oauth2_config(),
                 "down": {"title": "Down", "issuer": f"http://127.0.0.1:{free_port()}", "client_id": "x"}}
    return load_settings(tmp_path / "absent.toml", environ={
        **environ, "SYGMAX_OIDC_PROVIDERS": json.dumps(providers), "SYGMAX_OIDC_ALLOW_INSECURE_HTTP": "true",
        "SYGMAX_OIDC_TIMEOUT_S": "3", "SYGMAX_AUTH_REGISTRATION": registration, **extra})


@pytest.fixture
def app_for(make_app, environ, tmp_path, idp):
    def build(registration: str = "open", **extra):
        return make_app("api", app_settings=oidc_settings(environ, tmp_path, idp, registration, **extra))
    return build


@asynccontextmanager
async def browser(app):
    """A test client that behaves like a browser tab on the web UI: https, cookies, redirects not followed."""
    async with AsyncTestClient(app=app, base_url="https://testserver.local") as client:
        client.follow_redirects = False
        yield client


@pytest.fixture
async def web(app_for):
    async with browser(app_for()) as client:
        yield client


async def start(web, provider: str = "test", next_path: str | None = None) -> str:
    """GET .../login; return the provider URL it redirects to."""
    url = f"{BASE}/{provider}/login" + (f"?next={next_path}" if next_path else "")
    response = await web.get(url)
    assert response.status_code == 302, response.text
    assert "sygmax_oidc=" in response.headers["set-cookie"]
    assert "samesite=lax" in response.headers["set-cookie"].lower()
    assert "httponly" in response.headers["set-cookie"].lower()
    return response.headers["location"]


async def at_provider(location: str) -> str:
    """The browser at the provider: it approves at once and sends us back; return our callback URL."""
    async with httpx.AsyncClient(timeout=10) as browser:
        response = await browser.get(location)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def login(web, provider: str = "test", next_path: str | None = None):
    callback = await at_provider(await start(web, provider, next_path))
    return await web.get(local(callback)), callback


async def snapshot(db) -> tuple:
    return (await db.fetchval("SELECT count(*) FROM sygmax_user"),
            await db.fetchval("SELECT count(*) FROM sygmax_oidc_identity"),
            await db.fetchval("SELECT count(*) FROM sygmax_session"),
            await db.fetchval("SELECT count(*) FROM sygmax_audit"))


# ---------------------------------------------------------------------------------------------


async def test_providers_are_listed_without_secrets(web):
    response = await web.get(f"{BASE}/providers")
    assert response.status_code == 200
    assert response.json() == [{"name": "down", "title": "Down"}, {"name": "hub", "title": "Test Hub"},
                               {"name": "test", "title": "Test IdP"}]
    assert "secret" not in response.text


async def test_full_code_flow_creates_an_account(web, idp, db, example_user):
    await example_user("existing")  # not the first account: no owner rights for the newcomer
    location = await start(web, next_path="/chats/general")
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(idp.issuer + "/authorize?")
    assert query["client_id"] == [CLIENT_ID] and query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["scope"] == ["openid email profile"] and query["nonce"] and query["state"]
    assert query["redirect_uri"] == ["http://localhost:8000/api/v1/auth/oidc/test/callback"]
    callback = await at_provider(location)
    response = await web.get(local(callback))
    assert response.status_code == 302, response.text
    assert response.headers["location"] == "/chats/general"
    cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("sygmax_access=") and "HttpOnly" in c for c in cookies)
    assert any(c.startswith("sygmax_refresh=") for c in cookies) and any(c.startswith("sygmax_csrf=") for c in cookies)
    assert any(c.startswith("sygmax_oidc=") and "Max-Age=0" in c for c in cookies)  # binding cookie cleared
    # The verifier the provider checked is the one whose challenge went out.
    token_request = next(fields for kind, fields in idp.requests if kind == "token")
    assert pkce_challenge(token_request["code_verifier"]) == query["code_challenge"][0]
    assert token_request["authorization"].startswith("Basic ")  # client_secret_basic, secret not in the form
    # Logged in: the session cookie authenticates the web UI.
    me = await web.get("/api/v1/users/me")
    assert me.status_code == 200 and me.json()["email"] == "new.person@example.org"
    user = await db.fetchrow("SELECT * FROM sygmax_user WHERE email = 'new.person@example.org'")
    assert user["display_name"] == "New Person" and user["email_verified_at"] is not None
    assert not user["is_admin"] and not user["is_owner"]
    link = await db.fetchrow("SELECT * FROM sygmax_oidc_identity")
    assert (link["provider"], link["subject"], link["user_id"]) == ("test", idp.user["sub"], user["id"])
    actions = [row["action"] for row in await db.fetch("SELECT action FROM sygmax_audit WHERE actor_id = $1 "
                                                        "ORDER BY seq", user["id"])]
    assert actions == ["user.register", "oidc.link", "session.create"]
    session = await db.fetchrow("SELECT source FROM sygmax_session WHERE user_id = $1", user["id"])
    assert session["source"] == "oidc:test"


async def test_first_account_becomes_owner(web, db):
    response, _ = await login(web)
    assert response.status_code == 302
    assert await db.fetchval("SELECT is_owner AND is_admin FROM sygmax_user") is True


async def test_returning_user_is_the_same_account(web, idp, db):
    first, _ = await login(web)
    assert first.status_code == 302
    idp.user = {**idp.user, "email": "changed@example.org", "name": "Renamed"}
    again, _ = await login(web)
    assert again.status_code == 302, again.text
    assert await db.fetchval("SELECT count(*) FROM sygmax_user") == 1
    assert await db.fetchval("SELECT email FROM sygmax_user") == "new.person@example.org"
    assert await db.fetchval("SELECT email FROM sygmax_oidc_identity") == "changed@example.org"
    assert await db.fetchval("SELECT count(*) FROM sygmax_session") == 2


async def test_verified_email_links_an_existing_account(app_for, idp, db, example_user):
    alice = await example_user("alice")
    idp.user = {"sub": "alice-at-idp", "email": "Alice@Example.org", "email_verified": True, "name": "Alice"}
    async with browser(app_for("closed")) as web:
        response, _ = await login(web)
        assert response.status_code == 302, response.text
        assert (await web.get("/api/v1/users/me")).json()["id"] == str(alice.id)
    assert await db.fetchval("SELECT user_id FROM sygmax_oidc_identity WHERE subject = 'alice-at-idp'") == alice.id
    assert await db.fetchval("SELECT count(*) FROM sygmax_user") == 1
    details = await db.fetchval("SELECT details FROM sygmax_audit WHERE action = 'oidc.link'")
    assert json.loads(details)["matched_by"] == "verified-email"


@pytest.mark.parametrize("claims", [{"email_verified": False}, {"email_verified": "false"}, {}])
async def test_unverified_email_never_links_an_existing_account(web, idp, db, example_user, claims):
    await example_user("alice")
    idp.user = {"sub": "mallory", "email": "alice@example.org", "name": "Mallory", **claims}
    before = await snapshot(db)
    response, _ = await login(web)
    assert_problem(response, 409, "oidc-email-unverified")
    assert "sygmax_access" not in response.headers.get("set-cookie", "")
    assert await snapshot(db) == before


async def test_id_token_without_email_is_completed_from_userinfo(web, idp, db):
    idp.misbehave.add("id-token-without-email")
    response, _ = await login(web)
    assert response.status_code == 302, response.text
    assert await db.fetchval("SELECT email_verified_at IS NOT NULL FROM sygmax_user "
                             "WHERE email = 'new.person@example.org'")
    assert any(kind == "authorize" for kind, _ in idp.requests)


@pytest.mark.parametrize("registration", ["invite", "closed"])
async def test_no_account_and_closed_registration(app_for, db, example_user, registration):
    await example_user("someone")
    before = await snapshot(db)
    async with browser(app_for(registration)) as web:
        response, _ = await login(web)
    assert_problem(response, 403, "registration-closed")
    assert await snapshot(db) == before


async def test_disabled_account_cannot_log_in(web, idp, db):
    first, _ = await login(web)
    assert first.status_code == 302
    await db.execute("UPDATE sygmax_user SET is_active = false")
    sessions = await db.fetchval("SELECT count(*) FROM sygmax_session")
    response, _ = await login(web)
    assert_problem(response, 403, "account-disabled")
    assert await db.fetchval("SELECT count(*) FROM sygmax_session") == sessions


# --- state: unknown, replayed, from another browser ---------------------------------------------


async def test_bad_and_replayed_state(web, db, app_for):
    callback = await at_provider(await start(web))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    for state in ("", "made-up-state", "x" * 129, "'; DROP TABLE sygmax_user--"):
        response = await web.get(f"{BASE}/test/callback", params={"code": code, "state": state})
        assert_problem(response, 400, "oidc-invalid-state")
    first = await web.get(local(callback))
    assert first.status_code == 302
    before = await snapshot(db)
    replay = await web.get(local(callback))
    assert_problem(replay, 400, "oidc-invalid-state")
    assert await snapshot(db) == before
    # Another browser (no binding cookie) cannot finish someone else's login (login CSRF)...
    callback = await at_provider(await start(web))
    async with browser(app_for()) as stranger:
        assert_problem(await stranger.get(local(callback)), 400, "oidc-invalid-state")
    # ...and the attempt burnt the state: the owner cannot use it afterwards either.
    assert_problem(await web.get(local(callback)), 400, "oidc-invalid-state")
    # A state made for one provider is not accepted on another's callback.
    callback = await at_provider(await start(web))
    assert_problem(await web.get(local(callback).replace("/test/", "/hub/")), 400, "oidc-invalid-state")
    assert await snapshot(db) == before


async def test_provider_error_and_bad_code(web, db):
    before = await snapshot(db)
    assert_problem(await web.get(f"{BASE}/test/callback?error=access_denied&state=x"), 400, "oidc-denied")
    callback = await at_provider(await start(web))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    response = await web.get(f"{BASE}/test/callback", params={"code": "forged-code", "state": state})
    assert_problem(response, 400, "oidc-exchange-failed")
    long_code = await web.get(f"{BASE}/test/callback", params={"code": "c" * 3000, "state": state})
    assert long_code.status_code == 400
    assert await snapshot(db) == before


# --- the ID token ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["wrong-nonce", "no-nonce", "wrong-audience", "extra-audience", "wrong-issuer",
                                   "expired", "bad-signature", "unknown-key", "hs256", "alg-none"])
async def test_invalid_id_tokens_are_refused(web, idp, db, fault):
    idp.misbehave.add(fault)
    before = await snapshot(db)
    response, _ = await login(web)
    assert_problem(response, 400, "oidc-invalid-token")
    assert "set-cookie" not in response.headers or "sygmax_access" not in response.headers["set-cookie"]
    assert await snapshot(db) == before


# --- plain OAuth2 (GitHub style) -------------------------------------------------------------


async def test_plain_oauth2_provider(web, idp, db, example_user):
    idp.user = {"id": 4242, "login": "octo", "name": "Octo Cat", "email": "octo@example.org"}
    location = await start(web, "hub")
    assert location.startswith(idp.issuer + "/oauth/authorize?") and "nonce=" not in location
    response = await web.get(local(await at_provider(location)))
    assert response.status_code == 302, response.text
    user = await db.fetchrow("SELECT * FROM sygmax_user WHERE email = 'octo@example.org'")
    assert user["display_name"] == "Octo Cat" and user["email_verified_at"] is None  # not verified by the provider
    assert await db.fetchval("SELECT subject FROM sygmax_oidc_identity WHERE provider = 'hub'") == "4242"
    token_request = next(fields for kind, fields in idp.requests if kind == "token")
    assert token_request["client_secret"] and token_request["code_verifier"]  # client_secret_post, PKCE
    # The provider's e-mail is unverified, so it cannot claim an existing account.
    await example_user("alice")
    idp.user = {"id": 777, "login": "mallory", "email": "alice@example.org"}
    before = await snapshot(db)
    assert_problem((await login(web, "hub"))[0], 409, "oidc-email-unverified")
    assert await snapshot(db) == before


# --- unknown or unreachable provider, redirects ------------------------------------------------


async def test_unknown_provider(web, db):
    before = await snapshot(db)
    for path in ("nope/login", "nope/callback?code=x&state=y", "%3Cscript%3E/login", "..%2F..%2Fetc/login"):
        response = await web.get(f"{BASE}/{path}")
        assert response.status_code == 404, (path, response.text)
    assert await snapshot(db) == before


async def test_unreachable_provider(web):
    assert_problem(await web.get(f"{BASE}/down/login"), 502, "oidc-provider-unavailable")


@pytest.mark.parametrize(("given", "expected"), [
    (None, "/"), ("/chats", "/chats"), ("//evil.example.net/x", "/"), ("https://evil.example.net", "/"),
    ("/\\evil.example.net", "/"), ("javascript:alert(1)", "/"), ("/ok?a=1#b", "/ok?a=1#b"), ("/x\r\nSet-Cookie:", "/"),
])
def test_next_is_a_local_path(given, expected):
    assert safe_next(given) == expected


async def test_login_redirect_only_goes_home(web):
    response, _ = await login(web, next_path="//evil.example.net/phish")
    assert response.status_code == 302 and response.headers["location"] == "/"


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "insecure", "needle"), [
    ({"title": "X", "issuer": "http://idp.example.org", "client_id": "c"}, "false", "must be an https:// URL"),
    ({"title": "X", "issuer": "https://idp.example.org", "client_id": "c",
      "authorization_endpoint": "https://idp.example.org/a"}, "false", "set all of"),
    ({"title": "X", "issuer": "https://idp.example.org"}, "false", "client_id"),
])
def test_provider_config_is_validated(environ, tmp_path, provider, insecure, needle):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml", environ={
            **environ, "SYGMAX_OIDC_PROVIDERS": json.dumps({"x": provider}),
            "SYGMAX_OIDC_ALLOW_INSECURE_HTTP": insecure})
    assert needle in str(caught.value)


def test_provider_names_are_validated(environ, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml", environ={**environ, "SYGMAX_OIDC_PROVIDERS": json.dumps(
            {"Bad Name": {"title": "X", "issuer": "https://idp.example.org", "client_id": "c"}})})
    assert "provider name" in str(caught.value)
