"""Access tokens (JWT, Ed25519) cannot be forged; signing keys rotate; personal API tokens are
scoped and private to their owner; outgoing mail is header-injection safe."""

from __future__ import annotations

import base64
import json
import stat
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import AsyncTestClient

from sygmax.auth import keys as keys_module
from sygmax.auth.keys import (
    InvalidAccessToken,
    add_key,
    keyring,
    mint_access_token,
    read_keys,
    verify_access_token,
)
from sygmax.auth.tokens import CurrentActor, csrf_for
from sygmax.config import SmtpSettings
from sygmax.mail import MailError, send_mail
from sygmax.plugins import Plugin, discover_plugins
from tests.auth_helpers import (  # noqa: F401
    PASSWORD,
    assert_problem,
    auth_client,
    auth_settings,
    bearer,
    kernel_for,
    login,
    register,
    smtp_server,
    snapshot,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature)])


async def _owner(client) -> tuple[dict, dict]:
    assert (await register(client, "owner@example.org", name="Owner")).status_code == 202
    pair = await login(client, "owner@example.org")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return pair, claims


async def test_access_token_shape(auth_client, auth_settings):
    async with auth_client() as client:
        pair, claims = await _owner(client)
        header = jwt.get_unverified_header(pair["access_token"])
        settings = auth_settings().auth
        [key] = read_keys(Path(settings.keys_dir))
        assert header == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
        assert set(claims) == {"sub", "sid", "email", "name", "adm", "iss", "iat", "exp", "typ", "jti"}
        assert claims["iss"] == "sygmax" and claims["typ"] == "access" and claims["adm"] is True
        assert claims["exp"] - claims["iat"] == settings.access_token_ttl_s
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(settings.keys_dir).stat().st_mode) == 0o700


async def test_forged_access_tokens_are_refused(auth_client, auth_settings, db):
    async with auth_client() as client:
        pair, claims = await _owner(client)
        settings = auth_settings().auth
        [key] = read_keys(Path(settings.keys_dir))
        public_pem = key.public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        public_raw = key.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        header, payload, signature = pair["access_token"].split(".")
        now = int(time.time())
        other_key = ed25519.Ed25519PrivateKey.generate()
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        import hashlib
        import hmac

        def hs256(secret: bytes, body: dict, kid: str = key.kid) -> str:
            signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}." \
                            f"{_b64(json.dumps(body).encode())}"
            return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())

        admin_claims = {**claims, "adm": True, "email": "mallory@example.org"}
        tampered_payload = _b64(json.dumps({**claims, "sub": str(uuid.uuid4())}).encode())
        forgeries = {
            "alg none": _forge({"alg": "none", "kid": key.kid}, admin_claims),
            "alg none, no kid": _forge({"alg": "none"}, admin_claims),
            "HS256 keyed with the PEM public key": hs256(public_pem, admin_claims),
            "HS256 keyed with the raw public key": hs256(public_raw, admin_claims),
            "RS256": jwt.encode(admin_claims, rsa_key, algorithm="RS256", headers={"kid": key.kid}),
            "ES256": jwt.encode(admin_claims, ec_key, algorithm="ES256", headers={"kid": key.kid}),
            "another Ed25519 key, our kid": jwt.encode(admin_claims, other_key, algorithm="EdDSA",
                                                       headers={"kid": key.kid}),
            "unknown kid": jwt.encode(admin_claims, other_key, algorithm="EdDSA", headers={"kid": "nope"}),
            "no kid": jwt.encode(admin_claims, key.private, algorithm="EdDSA"),
            "expired": jwt.encode({**claims, "iat": now - 4000, "exp": now - 3000}, key.private, algorithm="EdDSA",
                                  headers={"kid": key.kid}),
            "tampered claims": f"{header}.{tampered_payload}.{signature}",
            "signature stripped": f"{header}.{payload}.",
            "wrong issuer": jwt.encode({**claims, "iss": "evil"}, key.private, algorithm="EdDSA",
                                       headers={"kid": key.kid}),
            "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key.private, algorithm="EdDSA",
                                 headers={"kid": key.kid}),
            "no iat": jwt.encode({k: v for k, v in claims.items() if k != "iat"}, key.private, algorithm="EdDSA",
                                 headers={"kid": key.kid}),
            "no sub": jwt.encode({k: v for k, v in claims.items() if k != "sub"}, key.private, algorithm="EdDSA",
                                 headers={"kid": key.kid}),
            "not an access token": jwt.encode({**claims, "typ": "refresh"}, key.private, algorithm="EdDSA",
                                              headers={"kid": key.kid}),
            "sub not a uuid": jwt.encode({**claims, "sub": "'; DROP TABLE sygmax_user;--"}, key.private,
                                         algorithm="EdDSA", headers={"kid": key.kid}),
            "garbage": "eyJ.eyJ.sig",
            "huge": "a." + "b" * 5000 + ".c",
        }
        before = await snapshot(db)
        for name, token in forgeries.items():
            response = await client.get("/api/v1/users/me", headers=bearer(token))
            assert_problem(response, 401, "invalid-token")
            assert response.headers["www-authenticate"] == "Bearer", name
            # The same forgery in the web UI's cookie is refused too.
            client.cookies.set("sygmax_access", token, domain="testserver.local")
            assert (await client.get("/api/v1/users/me")).status_code == 401, name
            client.cookies.clear()
            if name != "sub not a uuid":  # a valid signature; the actor lookup refuses the subject
                with pytest.raises(InvalidAccessToken):
                    verify_access_token(settings, token)
        assert await snapshot(db) == before
        # A token signed properly with our key (what only the server can do) is accepted.
        good = jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})
        assert (await client.get("/api/v1/users/me", headers=bearer(good))).status_code == 200


async def test_key_rotation(auth_client, auth_settings):
    async with auth_client() as client:
        pair, claims = await _owner(client)
        settings = auth_settings().auth
        directory = Path(settings.keys_dir)
        [old] = read_keys(directory)
        new, removed = add_key(directory)
        assert removed == [] and new.kid != old.kid
        keyring(settings)._checked = 0.0  # skip the few-second re-check interval for the test
        fresh = await login(client, "owner@example.org")
        assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new.kid  # newest signs
        assert (await client.get("/api/v1/users/me", headers=bearer(pair["access_token"]))).status_code == 200
        assert (await client.get("/api/v1/users/me", headers=bearer(fresh["access_token"]))).status_code == 200
        _, removed = add_key(directory, keep=2)
        assert removed == [old.path]
        keyring(settings)._checked = 0.0
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(pair["access_token"])), 401, "invalid-token")
        assert (await client.get("/api/v1/users/me", headers=bearer(fresh["access_token"]))).status_code == 200
        # The old session refreshes into a token signed by the current key.
        renewed = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert renewed.status_code == 200
        assert (await client.get("/api/v1/users/me", headers=bearer(renewed.json()["access_token"]))).status_code == 200


def test_a_key_readable_by_others_is_refused(tmp_path):
    directory = tmp_path / "keys"
    key, _ = add_key(directory)
    key.path.chmod(0o644)
    with pytest.raises(keys_module.KeyDirectoryError, match="chmod 600"):
        read_keys(directory)


def test_concurrent_first_use_creates_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    directory = tmp_path / "keys"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: keys_module.ensure_key(directory)[0].kid, range(16)))
    assert len(set(results)) == 1 and len(read_keys(directory)) == 1


def test_mint_and_verify_directly(auth_settings):
    settings = auth_settings().auth
    token = mint_access_token(settings, {"sub": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "email": "a@b.org",
                                         "name": "A", "adm": False})
    assert verify_access_token(settings, token)["email"] == "a@b.org"
    leeway_expired = mint_access_token(settings, {"sub": "x", "sid": "y"}, now=time.time() - 900 - 2)
    assert verify_access_token(settings, leeway_expired)["sub"] == "x"  # within the 5 s leeway
    expired = mint_access_token(settings, {"sub": "x", "sid": "y"}, now=time.time() - 900 - 60)
    with pytest.raises(InvalidAccessToken):
        verify_access_token(settings, expired)
    # Two tokens of one session in the same second still differ, and so do their CSRF tokens.
    now, claims = time.time(), {"sub": "x", "sid": "y"}
    first, second = mint_access_token(settings, claims, now=now), mint_access_token(settings, claims, now=now)
    assert first != second and csrf_for(first) != csrf_for(second)


# --- personal API tokens ----------------------------------------------------------------------

async def test_personal_tokens(auth_client, db):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        pair, _ = await _owner(client)
        headers = bearer(pair["access_token"])
        created = await client.post("/api/v1/auth/tokens",
                                    json={"name": "CI deploy", "scopes": ["system.view", "workspace.read"],
                                          "expires_in_days": 30}, headers=headers)
        assert created.status_code == 201, created.text
        body = created.json()
        token = body["token"]
        assert token.startswith("syg_") and body["scopes"] == ["system.view", "workspace.read"]
        assert body["expires_at"] is not None and created.headers["cache-control"] == "no-store"
        listed = (await client.get("/api/v1/auth/tokens", headers=headers)).json()
        assert [item["name"] for item in listed] == ["CI deploy"] and "token" not in listed[0]
        stored = await db.fetchrow("SELECT * FROM sygmax_api_token")
        assert token.encode() not in bytes(stored["token_hash"]) and list(stored["scopes"]) == body["scopes"]

        me = await client.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["email"] == "owner@example.org"
        assert await db.fetchval("SELECT last_used_at IS NOT NULL FROM sygmax_api_token")
        # A scoped token manages nothing about the account and cannot mint a wider token.
        assert_problem(await client.patch("/api/v1/users/me", json={"display_name": "X"}, headers=bearer(token)),
                       403, "insufficient-scope")
        assert_problem(await client.post("/api/v1/auth/tokens", json={"name": "wider", "scopes": ["*"]},
                                         headers=bearer(token)), 403, "insufficient-scope")
        narrower = await client.post("/api/v1/auth/tokens", json={"name": "narrow", "scopes": ["system.view"]},
                                     headers=bearer(token))
        assert narrower.status_code == 201, narrower.text

        # Another user cannot see or revoke it: 404, as for an unknown id.
        await register(client, "eve@example.org", name="Eve")
        eve = await login(client, "eve@example.org")
        before = await snapshot(db)
        for token_id in (body["id"], str(uuid.uuid4())):
            assert_problem(await client.delete(f"/api/v1/auth/tokens/{token_id}", headers=bearer(eve["access_token"])),
                           404, "not-found")
        assert (await client.get("/api/v1/auth/tokens", headers=bearer(eve["access_token"]))).json() == []
        assert_problem(await client.delete("/api/v1/auth/tokens/not-a-uuid", headers=headers), 404, "not-found")
        assert await snapshot(db) == before

        assert (await client.delete(f"/api/v1/auth/tokens/{body['id']}", headers=headers)).status_code == 204
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(token)), 401, "invalid-token")
        assert_problem(await client.delete(f"/api/v1/auth/tokens/{body['id']}", headers=headers), 404, "not-found")
        actions = [row["action"] for row in await db.fetch("SELECT action FROM sygmax_audit ORDER BY seq")]
        assert actions.count("api_token.create") == 2 and actions.count("api_token.revoke") == 1
        # Logout with a personal token is not a thing: revoke the token instead.
        assert_problem(await client.post("/api/v1/auth/logout", headers=bearer(narrower.json()["token"])), 409,
                       "not-a-session")


@pytest.mark.parametrize("body", [
    {"name": "x", "scopes": []},
    {"name": "x", "scopes": ["'; DROP TABLE sygmax_api_token;--"]},
    {"name": "x", "scopes": ["*", "<script>"]},
    {"name": "<script>alert(1)</script>", "scopes": ["*"]},
    {"name": "'; DROP TABLE sygmax_api_token;--", "scopes": ["*"]},
    {"name": "x" * 101, "scopes": ["*"]},
    {"name": "x", "scopes": ["a" * 101]},
    {"name": "x", "scopes": ["*"] * 101},
    {"name": "x", "scopes": "*"},
    {"name": "x", "scopes": ["*"], "expires_in_days": 0},
    {"name": "x", "scopes": ["*"], "expires_in_days": 100000},
    {"name": "x", "scopes": ["*"], "expires_in_days": "soon"},
    {"name": "x", "scopes": ["*"], "owner": "someone-else"},
    {"scopes": ["*"]},
])
async def test_token_creation_refuses_bad_input(auth_client, db, body):
    async with auth_client() as client:
        pair, _ = await _owner(client)
        before = await snapshot(db)
        response = await client.post("/api/v1/auth/tokens", json=body, headers=bearer(pair["access_token"]))
        assert response.status_code == 400, (body, response.text)
        assert await snapshot(db) == before


async def test_unknown_scope_is_refused(auth_client, db):
    async with auth_client() as client:
        pair, _ = await _owner(client)
        before = await snapshot(db)
        for scopes in (["nosuch.permission"], ["system.view", "nosuch.*"]):
            response = await client.post("/api/v1/auth/tokens", json={"name": "x", "scopes": scopes},
                                         headers=bearer(pair["access_token"]))
            body = assert_problem(response, 403, "unknown-scope")
            assert body["field"] == "scopes" and body["unknown"] == [scopes[-1]]
        assert await snapshot(db) == before
        for scopes in (["system.*"], ["workspace.read", "members.manage"], ["*"]):
            ok = await client.post("/api/v1/auth/tokens", json={"name": "x", "scopes": scopes},
                                   headers=bearer(pair["access_token"]))
            assert ok.status_code == 201, ok.text


async def test_expired_personal_token_is_refused(auth_client, db):
    async with auth_client() as client:
        pair, _ = await _owner(client)
        created = (await client.post("/api/v1/auth/tokens", json={"name": "t", "scopes": ["*"]},
                                     headers=bearer(pair["access_token"]))).json()
        await db.execute("UPDATE sygmax_api_token SET expires_at = now() - interval '1 second'")
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(created["token"])), 401, "invalid-token")


async def test_unauthenticated_requests(auth_client):
    async with auth_client() as client:
        for method, url in (("GET", "/api/v1/auth/tokens"), ("POST", "/api/v1/auth/tokens"),
                            ("GET", "/api/v1/users/me/export"), ("DELETE", "/api/v1/users/me"),
                            ("PATCH", "/api/v1/users/me"), ("GET", "/api/v1/auth/lockouts"),
                            ("POST", "/api/v1/users/me/password")):
            response = await client.request(method, url, json={})
            assert response.status_code == 401, (method, url, response.text)


# --- mail ---------------------------------------------------------------------------------------

async def test_send_mail(smtp_server):
    settings = SmtpSettings(host="127.0.0.1", port=smtp_server.port, sender="Sygmax <noreply@example.org>")
    await send_mail(settings, "bob@example.org", "Hällo", "plain body ü", html="<p>html body</p>")
    [message] = await smtp_server.wait(1)
    assert message["To"] == "bob@example.org" and message["Subject"] == "Hällo"
    assert message["From"] == "Sygmax <noreply@example.org>" and message["Message-ID"]
    assert "plain body ü" in message.get_body(("plain",)).get_content()
    assert "html body" in message.get_body(("html",)).get_content()
    assert smtp_server.envelopes == [("noreply@example.org", ["bob@example.org"])]


@pytest.mark.parametrize(("to", "subject"), [
    ("bob@example.org\r\nBcc: eve@example.org", "hi"),
    ("bob@example.org\nBcc: eve@example.org", "hi"),
    ("bob@example.org", "hi\r\nBcc: eve@example.org"),
    ("bob@example.org", "hi\nX-Injected: 1"),
    ("Bob <bob@example.org>", "hi"),
    ("bob@example.org, eve@example.org", "hi"),
    ("not an address", "hi"),
    ("bob@example.org", "x" * 999),
])
async def test_send_mail_refuses_header_injection(smtp_server, to, subject):
    settings = SmtpSettings(host="127.0.0.1", port=smtp_server.port, sender="noreply@example.org")
    with pytest.raises(MailError):
        await send_mail(settings, to, subject, "body")
    assert smtp_server.messages == []


async def test_send_mail_failures_are_mail_errors():
    from tests.servers import free_port

    unreachable = SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=2)
    with pytest.raises(MailError, match="smtp.host"):
        await send_mail(unreachable, "bob@example.org", "hi", "body")
    with pytest.raises(MailError, match="exclusive"):
        await send_mail(SmtpSettings(use_tls=True, starttls=True), "bob@example.org", "hi", "body")
    with pytest.raises(MailError, match="smtp.sender"):
        await send_mail(SmtpSettings(sender="broken\r\nBcc: x@y.z"), "bob@example.org", "hi", "body")


# --- WebSockets -------------------------------------------------------------------------------

@websocket("/whoami")
async def whoami(socket: WebSocket, actor: CurrentActor) -> None:
    await socket.accept()
    await socket.send_text(actor.email)
    await socket.close()


async def test_cookie_websocket_needs_our_origin(auth_client, make_app, auth_settings):
    async with auth_client() as client:
        await register(client, "owner@example.org")
        session = await client.post("/api/v1/auth/session", json={"email": "owner@example.org", "password": PASSWORD})
        assert session.status_code == 200
        access = client.cookies.get("sygmax_access")
    plugins = {**discover_plugins(), "wsprobe": Plugin(name="wsprobe", websocket_handlers=[whoami])}
    app = make_app("realtime", plugins=plugins, app_settings=auth_settings())
    async with AsyncTestClient(app=app) as realtime:
        cookie = {"cookie": f"sygmax_access={access}"}
        with await realtime.websocket_connect("/ws/wsprobe/whoami",
                                              headers={**cookie, "origin": "https://sygmax.example.org"}) as socket:
            assert socket.receive_text() == "owner@example.org"
        for origin in ({"origin": "https://evil.example.com"}, {}):
            with pytest.raises(WebSocketDisconnect):
                with await realtime.websocket_connect("/ws/wsprobe/whoami", headers={**cookie, **origin}) as socket:
                    socket.receive_text()
        # A bearer token needs no origin check (a browser cannot attach one to a WebSocket by itself).
        with await realtime.websocket_connect("/ws/wsprobe/whoami",
                                              headers={"authorization": f"Bearer {access}"}) as socket:
            assert socket.receive_text() == "owner@example.org"
