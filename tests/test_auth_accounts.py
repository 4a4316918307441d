"""Accounts: registration policies, e-mail verification and reset through a real SMTP server,
login with brute-force limits, refresh rotation, cookies and CSRF, disabling, GDPR export
and erasure; hostile input refused with nothing changed."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile

import pytest

from sygmax.auth import accounts
from sygmax.auth.audit import Source, verify_chain
from sygmax.errors import Problem
from tests.auth_helpers import (  # noqa: F401
    PASSWORD,
    assert_problem,
    auth_client,
    auth_settings,
    bearer,
    kernel_for,
    link_token,
    login,
    register,
    smtp_server,
    snapshot,
)

SOURCE = Source("203.0.113.7", "test")


async def owner_and_client(client, email: str = "owner@example.org") -> dict:
    response = await register(client, email, name="Owner")
    assert response.status_code == 202, response.text
    return await login(client, email)


# --- registration -----------------------------------------------------------------------------

async def test_first_account_is_owner_and_verifies_by_mail(auth_client, db, smtp_server):
    async with auth_client() as client:  # default mode: invite
        response = await register(client, "Owner@Example.org", name="Olga Owner")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "accepted"
        user = await db.fetchrow("SELECT * FROM sygmax_user")
        assert user["email"] == "owner@example.org" and user["is_owner"] and user["is_admin"]
        assert user["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert user["email_verified_at"] is None

        [message] = await smtp_server.wait(1)
        assert message["To"] == "owner@example.org" and "Confirm" in message["Subject"]
        assert "https://sygmax.example.org/verify-email#token=" in message.get_body(("plain",)).get_content()
        token = link_token(message)
        stored = await db.fetchval("SELECT token_hash FROM sygmax_email_link")
        assert token.encode() not in bytes(stored)  # only the digest is stored

        wrong = await client.post("/api/v1/auth/verify-email", json={"token": token[:-2] + "xx"})
        assert_problem(wrong, 404, "invalid-link")
        ok = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert ok.status_code == 200 and ok.json()["status"] == "verified"
        assert await db.fetchval("SELECT email_verified_at IS NOT NULL FROM sygmax_user")
        again = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert_problem(again, 404, "invalid-link")  # single use

        second = await register(client, "second@example.org")
        assert_problem(second, 403, "invite-required")
        assert await db.fetchval("SELECT count(*) FROM sygmax_user") == 1
        actions = [row["action"] for row in await db.fetch("SELECT action FROM sygmax_audit ORDER BY seq")]
        assert actions == ["user.register", "user.verify_email"]


async def test_resend_verification_voids_the_old_link(auth_client, db, smtp_server):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        first = link_token((await smtp_server.wait(1))[0])
        resent = await client.post("/api/v1/auth/verify-email/resend", headers=bearer(pair["access_token"]))
        assert resent.status_code == 202 and resent.json()["status"] == "sent"
        second = link_token((await smtp_server.wait(2))[1])
        assert second != first
        assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": first}), 404, "invalid-link")
        assert (await client.post("/api/v1/auth/verify-email", json={"token": second})).status_code == 200
        again = await client.post("/api/v1/auth/verify-email/resend", headers=bearer(pair["access_token"]))
        assert again.status_code == 202 and again.json()["status"] == "already-verified"
        assert len(smtp_server.messages) == 2


async def test_registration_modes(auth_client, db, smtp_server):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="closed") as client:
        assert (await register(client, "first@example.org")).status_code == 202  # the first may always
        assert_problem(await register(client, "second@example.org"), 403, "registration-closed")
        assert_problem(await register(client, "third@example.org", invite_token="x" * 30), 403,
                       "registration-closed")
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        assert (await register(client, "second@example.org", name="Sam")).status_code == 202
        users = {row["email"]: row for row in await db.fetch("SELECT * FROM sygmax_user")}
        assert not users["second@example.org"]["is_admin"] and not users["second@example.org"]["is_owner"]
        # An address that has an account: the same answer (no enumeration), a notice to its owner.
        before = await db.fetchrow("SELECT * FROM sygmax_user WHERE email = 'second@example.org'")
        duplicate = await register(client, "SECOND@example.org", password="another password 1")
        fresh = await register(client, "third@example.org")
        assert duplicate.status_code == fresh.status_code == 202
        assert duplicate.json() == fresh.json()
        assert await db.fetch("SELECT * FROM sygmax_user WHERE lower(email) = 'second@example.org'") == [before]
        await smtp_server.wait(4)
        notice = smtp_server.to("second@example.org")[-1]
        assert "already has" in notice.get_body(("plain",)).get_content()


@pytest.mark.parametrize("mode", ["invite", "open", "closed"])
async def test_concurrent_first_registrations_make_exactly_one_owner(kernel_for, db, mode):
    kernel = await kernel_for(SYGMAX_AUTH_REGISTRATION=mode)

    async def attempt(index: int):
        try:
            return await accounts.do_register(kernel, f"racer{index}@example.org", PASSWORD, f"Racer {index}", None,
                                              SOURCE)
        except Problem as problem:
            return problem.slug

    results = await asyncio.gather(*(attempt(index) for index in range(8)))
    owners = await db.fetch("SELECT id FROM sygmax_user WHERE is_owner")
    assert len(owners) == 1 and await db.fetchval("SELECT count(*) FROM sygmax_user WHERE is_admin") == 1
    created = [result for result in results if isinstance(result, uuid.UUID)]
    assert owners[0]["id"] in created
    if mode == "open":
        assert len(created) == 8
    else:
        assert len(created) == 1
        assert sorted(set(results) - set(created)) == [{"invite": "invite-required", "closed": "registration-closed"}[mode]]


async def test_invite_registration_claims_the_invitation(auth_client, db, smtp_server):
    async with auth_client() as client:
        owner = await owner_and_client(client)
        headers = bearer(owner["access_token"])
        workspace = await client.post("/api/v1/workspaces", json={"name": "Acme"}, headers=headers)
        assert workspace.status_code == 201, workspace.text
        invite = await client.post(f"/api/v1/workspaces/{workspace.json()['id']}/invites",
                                   json={"role": "editor", "email": "newbie@example.org"}, headers=headers)
        assert invite.status_code == 201, invite.text
        token = invite.json()["token"]

        before = await db.fetchval("SELECT count(*) FROM sygmax_user")
        wrong_mail = await register(client, "someone-else@example.org", invite_token=token)
        assert wrong_mail.status_code in (400, 403, 404), wrong_mail.text
        bogus = await register(client, "newbie@example.org", invite_token="A" * 43)
        assert bogus.status_code in (400, 404), bogus.text
        assert await db.fetchval("SELECT count(*) FROM sygmax_user") == before

        joined = await register(client, "newbie@example.org", name="Newbie", invite_token=token)
        assert joined.status_code == 202, joined.text
        user_id = await db.fetchval("SELECT id FROM sygmax_user WHERE email = 'newbie@example.org'")
        assert await db.fetchval("SELECT count(*) FROM sygmax_membership WHERE user_id = $1", user_id) == 1
        reused = await register(client, "newbie2@example.org", invite_token=token)
        assert reused.status_code in (400, 404)


HOSTILE_TEXT = ["'; DROP TABLE sygmax_user;--", "<script>alert(1)</script>", "a" * 5000, "\u0000", "line\r\nBcc: x@y.z",
                "", "   "]


@pytest.mark.parametrize("field", ["email", "display_name", "password", "invite_token"])
@pytest.mark.parametrize("value", HOSTILE_TEXT + [123, None, ["list"], {"obj": 1}])
async def test_register_refuses_hostile_input(auth_client, db, field, value):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        assert (await register(client, "owner@example.org")).status_code == 202
        before = await snapshot(db)
        body = {"email": "new@example.org", "password": PASSWORD, "display_name": "New", field: value}
        if field == "invite_token" and value is None:
            return  # a null invitation is simply no invitation
        if field == "password" and isinstance(value, str) and 10 <= len(value) <= 256 and "\u0000" not in value \
                and "\r" not in value:
            return  # any printable text is a fine password (it is only ever hashed)
        response = await client.post("/api/v1/auth/register", json=body)
        assert response.status_code in (400, 403), (field, value, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await snapshot(db) == before


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"email": 5}', b'{"email":"a@b.org","password":"x",'
                                     b'"display_name":"y","admin":true}', b"\xff\xfe", b"null"])
async def test_malformed_bodies_are_400(auth_client, db, content):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        before = await snapshot(db)
        for url in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
                    "/api/v1/auth/password/forgot", "/api/v1/auth/password/reset", "/api/v1/auth/verify-email"):
            response = await client.post(url, content=content, headers={"content-type": "application/json"})
            assert response.status_code == 400, (url, content, response.text)
        assert await snapshot(db) == before


async def test_password_policy(auth_client, db):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        for password, slug in (("short", "validation-error"), ("x" * 257, "validation-error"),
                               ("me@example.org", "weak-password"), ("ME@example.org ", "weak-password"),
                               ("tab\there is bad", "validation-error"), ("123456789", "validation-error")):
            response = await register(client, "me@example.org", password=password)
            assert response.status_code == 400, (password, response.text)
            assert response.json()["field"] == "password"
        assert await db.fetchval("SELECT count(*) FROM sygmax_user") == 0
        assert (await register(client, "me@example.org", password="x" * 256)).status_code == 202


# --- login and brute force --------------------------------------------------------------------

async def test_login_does_not_reveal_accounts(auth_client, db):
    async with auth_client() as client:
        await owner_and_client(client)
        wrong = await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": "wrong pass 1"})
        unknown = await client.post("/api/v1/auth/login", json={"email": "nobody@example.org", "password": "wrong pass 1"})
        bodies = []
        for response in (wrong, unknown):
            body = assert_problem(response, 401, "invalid-credentials")
            bodies.append({key: value for key, value in body.items() if key != "request_id"})
        assert bodies[0] == bodies[1]
        assert wrong.headers.keys() == unknown.headers.keys()


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "'; DROP TABLE sygmax_user;--", "password": "whatever 123"}, "email"),
    ({"email": "<script>alert(1)</script>@x.org", "password": "whatever 123"}, "email"),
    ({"email": "a" * 255, "password": "whatever 123"}, "email"),
    ({"email": "owner@example.org", "password": "p" * 1025}, "password"),
    ({"email": "owner@example.org", "password": ""}, "password"),
    ({"email": "owner@example.org"}, None),
    ({"email": ["owner@example.org"], "password": "whatever 123"}, "email"),
])
async def test_login_refuses_malformed_input(auth_client, db, body, field):
    async with auth_client() as client:
        await owner_and_client(client)
        before = await snapshot(db)
        for url in ("/api/v1/auth/login", "/api/v1/auth/session"):
            response = await client.post(url, json=body)
            assert response.status_code == 400, (url, response.text)
            assert field is None or response.json()["field"] == field
        if field == "email":
            assert_problem(await client.post("/api/v1/auth/password/forgot", json={"email": body["email"]}), 400,
                           "validation-error")
        assert await snapshot(db) == before
        listed = await client.get("/api/v1/auth/lockouts", headers=bearer((await login(client, "owner@example.org"))
                                                                          ["access_token"]))
        assert listed.json() == []  # malformed attempts are not even counted


async def test_lockout_then_429_for_known_and_unknown_accounts(auth_client, db):
    async with auth_client(SYGMAX_AUTH_LOGIN_FAILURES_BEFORE_LOCKOUT="3", SYGMAX_AUTH_LOCKOUT_S="600") as client:
        owner = await owner_and_client(client)
        # A second, ordinary account (same password as the owner's) gets locked.
        await db.execute("INSERT INTO sygmax_user (id, email, display_name, password_hash) "
                         "SELECT $1, 'victim@example.org', 'Victim', password_hash FROM sygmax_user", uuid.uuid4())
        for email in ("victim@example.org", "ghost@example.org"):
            for _ in range(3):
                response = await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong pass 1"})
                assert_problem(response, 401, "invalid-credentials")
        locked = await client.post("/api/v1/auth/login", json={"email": "victim@example.org", "password": PASSWORD})
        ghost = await client.post("/api/v1/auth/login", json={"email": "ghost@example.org", "password": PASSWORD})
        for response in (locked, ghost):
            body = assert_problem(response, 429, "login-locked")
            assert 590 <= int(response.headers["retry-after"]) <= 600 and body["retry_after"] > 0
        assert {key: value for key, value in locked.json().items() if key not in ("request_id",)} == \
            {key: value for key, value in ghost.json().items() if key not in ("request_id",)}

        # Admins see and clear lockouts; others may not.
        listed = await client.get("/api/v1/auth/lockouts", headers=bearer(owner["access_token"]))
        assert listed.status_code == 200
        keys = {entry["key"]: entry for entry in listed.json()}
        assert {"account:victim@example.org", "account:ghost@example.org"} <= set(keys)
        assert keys["account:victim@example.org"]["failures"] == 3 and keys["account:victim@example.org"]["locked"]
        victim_id = await db.fetchval("SELECT id FROM sygmax_user WHERE email = 'victim@example.org'")
        await db.execute("UPDATE sygmax_user SET is_admin = false WHERE id = $1", victim_id)
        from sygmax.auth.tokens import issue_token

        victim_token = await issue_token(db, victim_id, "t")
        assert_problem(await client.get("/api/v1/auth/lockouts", headers=bearer(victim_token)), 403, "forbidden")
        assert_problem(await client.delete("/api/v1/auth/lockouts/account:victim@example.org",
                                           headers=bearer(victim_token)), 403, "forbidden")
        assert_problem(await client.delete("/api/v1/auth/lockouts/account:nobody@example.org",
                                           headers=bearer(owner["access_token"])), 404, "not-found")
        cleared = await client.delete("/api/v1/auth/lockouts/account:victim@example.org",
                                      headers=bearer(owner["access_token"]))
        assert cleared.status_code == 204
        assert (await client.post("/api/v1/auth/login",
                                  json={"email": "victim@example.org", "password": PASSWORD})).status_code == 200
        audit = await db.fetchrow("SELECT * FROM sygmax_audit WHERE action = 'lockout.clear'")
        assert audit["object_id"] == str(victim_id) and "victim@" not in json.dumps(dict(audit), default=str)


async def test_exponential_backoff_before_lockout(auth_client):
    async with auth_client(SYGMAX_AUTH_LOGIN_FAILURES_BEFORE_LOCKOUT="8") as client:  # 4 free failures
        await owner_and_client(client)
        for _ in range(4):
            assert_problem(await client.post("/api/v1/auth/login",
                                             json={"email": "owner@example.org", "password": "wrong pass 1"}),
                           401, "invalid-credentials")
        fifth = await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": "wrong pass 1"})
        assert_problem(fifth, 401, "invalid-credentials")  # counted: now a 1 s wait
        waiting = await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": PASSWORD})
        assert_problem(waiting, 429, "login-locked")
        assert waiting.headers["retry-after"] == "1"


async def test_per_ip_limit(auth_client):
    async with auth_client(SYGMAX_AUTH_LOGIN_PER_IP_PER_MINUTE="3") as client:
        await owner_and_client(client)
        for index in range(4):  # four different accounts, one address
            assert_problem(await client.post("/api/v1/auth/login",
                                             json={"email": f"spray{index}@example.org", "password": "wrong pass 1"}),
                           401, "invalid-credentials")
        blocked = await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": PASSWORD})
        assert_problem(blocked, 429, "login-locked")
        assert int(blocked.headers["retry-after"]) == 60


async def test_rehash_on_login_when_parameters_change(auth_client, db):
    async with auth_client(SYGMAX_AUTH_ARGON2_TIME_COST="1", SYGMAX_AUTH_ARGON2_MEMORY_KIB="8192") as client:
        await register(client, "owner@example.org")
        old = await db.fetchval("SELECT password_hash FROM sygmax_user")
        assert "m=8192,t=1,p=1" in old
        await login(client, "owner@example.org")
        assert await db.fetchval("SELECT password_hash FROM sygmax_user") == old  # unchanged parameters: kept
    async with auth_client() as client:
        await login(client, "owner@example.org")
        new = await db.fetchval("SELECT password_hash FROM sygmax_user")
        assert new != old and "m=19456,t=2,p=1" in new
        assert await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE action = 'user.password_rehash'") == 1
        await login(client, "owner@example.org")
        assert await db.fetchval("SELECT password_hash FROM sygmax_user") == new


# --- sessions ---------------------------------------------------------------------------------

async def test_refresh_rotation_and_reuse_revokes_the_family(auth_client, db):
    async with auth_client() as client:
        first = await owner_and_client(client)
        assert first["token_type"] == "bearer" and first["expires_in"] == 900
        me = await client.get("/api/v1/users/me", headers=bearer(first["access_token"]))
        assert me.status_code == 200 and me.json()["email"] == "owner@example.org"

        second = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200 and second.headers["cache-control"] == "no-store"
        second = second.json()
        assert second["refresh_token"] != first["refresh_token"]
        third = (await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()

        # The first token again: reuse. The whole family ends, the newest tokens included.
        reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert_problem(reused, 401, "refresh-token-reused")
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}),
                       401, "invalid-refresh-token")
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(third["access_token"])), 401, "invalid-token")
        session = await db.fetchrow("SELECT * FROM sygmax_session")
        assert session["revoked_reason"] == "refresh-token-reused"
        assert await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE action = 'session.revoke'") == 1
        for bad in ("sygr_" + "A" * 43, "nonsense", "x" * 200):
            assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": bad}), 401,
                           "invalid-refresh-token")
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 201}), 400,
                       "validation-error")


async def test_logout_ends_the_session(auth_client, db):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        other = await login(client, "owner@example.org")
        assert (await client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))).status_code == 204
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(pair["access_token"])), 401, "invalid-token")
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401,
                       "invalid-refresh-token")
        assert (await client.get("/api/v1/users/me", headers=bearer(other["access_token"]))).status_code == 200
        # By refresh token, without an access token.
        assert (await client.post("/api/v1/auth/logout",
                                  json={"refresh_token": other["refresh_token"]})).status_code == 204
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(other["access_token"])), 401,
                       "invalid-token")
        assert_problem(await client.post("/api/v1/auth/logout"), 401, "unauthenticated")
        assert await db.fetchval("SELECT count(*) FROM sygmax_session WHERE revoked_at IS NULL") == 0


async def test_sessions_list_and_end(auth_client, db):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        pair = await owner_and_client(client)
        other = await login(client, "owner@example.org")
        sessions = (await client.get("/api/v1/users/me/sessions", headers=bearer(pair["access_token"]))).json()
        assert len(sessions) == 2 and sum(item["current"] for item in sessions) == 1
        foreign = next(item["id"] for item in sessions if not item["current"])
        await register(client, "eve@example.org", name="Eve")
        eve = await login(client, "eve@example.org")
        assert_problem(await client.delete(f"/api/v1/users/me/sessions/{foreign}", headers=bearer(eve["access_token"])),
                       404, "not-found")
        assert (await client.get("/api/v1/users/me", headers=bearer(other["access_token"]))).status_code == 200
        assert (await client.delete(f"/api/v1/users/me/sessions/{foreign}",
                                    headers=bearer(pair["access_token"]))).status_code == 204
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(other["access_token"])), 401,
                       "invalid-token")


# --- cookies and CSRF -------------------------------------------------------------------------

def _set_cookies(response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


async def test_cookie_session_and_csrf(auth_client, db):
    async with auth_client(SYGMAX_AUTH_COOKIE_SECURE="true") as client:
        await register(client, "owner@example.org", name="Owner")
        response = await client.post("/api/v1/auth/session", json={"email": "owner@example.org", "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"csrf_token", "expires_in", "token_type"} and body["token_type"] == "cookie"
        cookies = _set_cookies(response)
        access, refresh, csrf = cookies["sygmax_access"], cookies["sygmax_refresh"], cookies["sygmax_csrf"]
        for header in (access, refresh):
            assert "HttpOnly" in header and "Secure" in header and "samesite=strict" in header.lower()
        assert "Path=/api/v1/auth;" in refresh + ";" and "Path=/;" in access + ";"
        assert "HttpOnly" not in csrf and "samesite=strict" in csrf.lower() and "Secure" in csrf
        assert client.cookies.get("sygmax_csrf") == body["csrf_token"]

        me = await client.get("/api/v1/users/me")
        assert me.status_code == 200 and me.json()["display_name"] == "Owner"
        before = await snapshot(db)
        assert_problem(await client.patch("/api/v1/users/me", json={"display_name": "Mallory"}), 403, "csrf-failed")
        assert_problem(await client.patch("/api/v1/users/me", json={"display_name": "Mallory"},
                                          headers={"X-CSRF-Token": "0" * 43}), 403, "csrf-failed")
        # Cookie tossing: a planted csrf cookie matching the header still fails (bound to the access token).
        planted = client.cookies.get("sygmax_csrf")
        client.cookies.set("sygmax_csrf", "attacker-chosen-value", domain="testserver.local", path="/")
        assert_problem(await client.patch("/api/v1/users/me", json={"display_name": "Mallory"},
                                          headers={"X-CSRF-Token": "attacker-chosen-value"}), 403, "csrf-failed")
        client.cookies.set("sygmax_csrf", planted, domain="testserver.local", path="/")
        assert await snapshot(db) == before
        changed = await client.patch("/api/v1/users/me", json={"display_name": "Olga"},
                                     headers={"X-CSRF-Token": body["csrf_token"]})
        assert changed.status_code == 200 and changed.json()["display_name"] == "Olga"

        # Refresh from the cookie (CSRF checked too), then logout clears the cookies and ends the session.
        assert_problem(await client.post("/api/v1/auth/session/refresh"), 403, "csrf-failed")
        refreshed = await client.post("/api/v1/auth/session/refresh", headers={"X-CSRF-Token": body["csrf_token"]})
        assert refreshed.status_code == 200, refreshed.text
        new_csrf = refreshed.json()["csrf_token"]
        assert new_csrf != body["csrf_token"] and client.cookies.get("sygmax_csrf") == new_csrf
        assert_problem(await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]}), 403,
                       "csrf-failed")
        out = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": new_csrf})
        assert out.status_code == 204
        assert all("Max-Age=0" in header for header in _set_cookies(out).values())
        assert await db.fetchval("SELECT count(*) FROM sygmax_session WHERE revoked_at IS NULL") == 0


async def test_bearer_requests_need_no_csrf(auth_client):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        response = await client.patch("/api/v1/users/me", json={"display_name": "Renamed"},
                                      headers=bearer(pair["access_token"]))
        assert response.status_code == 200 and response.json()["display_name"] == "Renamed"


# --- e-mail flows -----------------------------------------------------------------------------

async def test_forgot_and_reset_password(auth_client, db, smtp_server):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        await smtp_server.wait(1)  # the verification mail
        unknown = await client.post("/api/v1/auth/password/forgot", json={"email": "nobody@example.org"})
        known = await client.post("/api/v1/auth/password/forgot", json={"email": "OWNER@example.org"})
        assert unknown.status_code == known.status_code == 202
        assert unknown.json() == known.json()
        assert_problem(await client.post("/api/v1/auth/password/forgot", json={"email": "<script>"}), 400,
                       "validation-error")
        messages = await smtp_server.wait(2)
        reset = messages[1]
        assert reset["To"] == "owner@example.org" and "password" in reset["Subject"]
        token = link_token(reset)
        assert "/reset-password#token=" in reset.get_body(("plain",)).get_content()
        # A second request within a minute sends nothing more.
        assert (await client.post("/api/v1/auth/password/forgot", json={"email": "owner@example.org"})).status_code == 202

        before = await snapshot(db)
        assert_problem(await client.post("/api/v1/auth/password/reset", json={"token": token, "password": "short"}),
                       400, "validation-error")
        assert_problem(await client.post("/api/v1/auth/password/reset",
                                         json={"token": token, "password": "owner@example.org"}), 400, "weak-password")
        assert_problem(await client.post("/api/v1/auth/password/reset",
                                         json={"token": "A" * 43, "password": "a new password"}), 404, "invalid-link")
        assert await snapshot(db) == before

        done = await client.post("/api/v1/auth/password/reset", json={"token": token, "password": "a new password"})
        assert done.status_code == 200, done.text
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401,
                       "invalid-refresh-token")
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(pair["access_token"])), 401, "invalid-token")
        assert_problem(await client.post("/api/v1/auth/password/reset",
                                         json={"token": token, "password": "another password"}), 404, "invalid-link")
        assert_problem(await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": PASSWORD}),
                       401, "invalid-credentials")
        await login(client, "owner@example.org", "a new password")
        assert len(smtp_server.messages) == 2  # nothing for the unknown address
        assert await db.fetchval("SELECT email_verified_at IS NOT NULL FROM sygmax_user")


async def test_reset_link_expires(auth_client, db, smtp_server):
    async with auth_client() as client:
        await owner_and_client(client)
        await client.post("/api/v1/auth/password/forgot", json={"email": "owner@example.org"})
        token = link_token((await smtp_server.wait(2))[1])
        await db.execute("UPDATE sygmax_email_link SET expires_at = now() - interval '1 second'")
        assert_problem(await client.post("/api/v1/auth/password/reset",
                                         json={"token": token, "password": "a new password"}), 404, "invalid-link")


async def test_change_password(auth_client, db):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        other = await login(client, "owner@example.org")
        headers = bearer(pair["access_token"])
        before = await snapshot(db)
        assert_problem(await client.post("/api/v1/users/me/password",
                                         json={"current_password": "wrong pass 1", "new_password": "a new password"},
                                         headers=headers), 403, "invalid-credentials")
        assert_problem(await client.post("/api/v1/users/me/password",
                                         json={"current_password": PASSWORD, "new_password": "owner@example.org"},
                                         headers=headers), 400, "weak-password")
        assert (await snapshot(db))["sygmax_user"] == before["sygmax_user"]
        done = await client.post("/api/v1/users/me/password",
                                 json={"current_password": PASSWORD, "new_password": "a new password"}, headers=headers)
        assert done.status_code == 204, done.text
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200  # this session stays
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(other["access_token"])), 401,
                       "invalid-token")
        await login(client, "owner@example.org", "a new password")


@pytest.mark.parametrize("name", ["'; DROP TABLE sygmax_user;--", "<script>alert(1)</script>", "x" * 101, "",
                                  "   ", " leading", "tab\tname", "null\u0000byte", "bidi\u202eevil", 'quote"d',
                                  "{{template}}", "back\\slash"])
async def test_profile_update_refuses_hostile_names(auth_client, db, name):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        before = await snapshot(db)
        response = await client.patch("/api/v1/users/me", json={"display_name": name},
                                      headers=bearer(pair["access_token"]))
        assert response.status_code == 400, response.text
        assert response.json()["field"] == "display_name"
        assert await snapshot(db) == before
        ok = await client.patch("/api/v1/users/me", json={"display_name": "Zoë O'Brien-Smith"},
                                headers=bearer(pair["access_token"]))
        assert ok.status_code == 200 and ok.json()["display_name"] == "Zoë O'Brien-Smith"


# --- account state ----------------------------------------------------------------------------

async def test_disabled_user_is_refused_everywhere(auth_client, kernel_for, db):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        from sygmax.auth.tokens import issue_token

        user_id = await db.fetchval("SELECT id FROM sygmax_user")
        token = await issue_token(db, user_id, "cli")
        kernel = await kernel_for()
        assert await accounts.do_disable_user(None, kernel, user_id)
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(pair["access_token"])), 401, "invalid-token")
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(token)), 401, "invalid-token")
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401,
                       "invalid-refresh-token")
        assert_problem(await client.post("/api/v1/auth/login", json={"email": "owner@example.org", "password": PASSWORD}),
                       403, "account-disabled")
        assert_problem(await client.post("/api/v1/auth/login",
                                         json={"email": "owner@example.org", "password": "wrong pass 1"}),
                       401, "invalid-credentials")
        assert await accounts.do_enable_user(None, kernel, user_id)
        again = await login(client, "owner@example.org")
        assert (await client.get("/api/v1/users/me", headers=bearer(again["access_token"]))).status_code == 200
        assert (await client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
        actions = [row["action"] for row in await db.fetch("SELECT action FROM sygmax_audit ORDER BY seq")]
        assert "user.disable" in actions and "user.enable" in actions


async def test_disabled_user_cannot_refresh_a_live_session(auth_client, db):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        await db.execute("UPDATE sygmax_user SET is_active = false")  # as if disabled by another path
        assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 403,
                       "account-disabled")


# --- GDPR ---------------------------------------------------------------------------------------

async def test_export_contains_everything_and_no_secrets(auth_client, db):
    async with auth_client() as client:
        pair = await owner_and_client(client)
        headers = bearer(pair["access_token"])
        created = await client.post("/api/v1/auth/tokens", json={"name": "ci", "scopes": ["*"]}, headers=headers)
        plaintext = created.json()["token"]
        workspace = await client.post("/api/v1/workspaces", json={"name": "Acme"}, headers=headers)
        assert workspace.status_code == 201
        response = await client.get("/api/v1/users/me/export", headers=headers)
        assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
        assert "attachment" in response.headers["content-disposition"]
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        names = set(archive.namelist())
        assert {"README.txt", "profile.json", "api_tokens.json", "sessions.json", "audit.json"} <= names
        profile = json.loads(archive.read("profile.json"))
        assert profile["email"] == "owner@example.org" and profile["has_password"] is True
        tokens = json.loads(archive.read("api_tokens.json"))
        assert [token["name"] for token in tokens] == ["ci"] and "token_hash" not in tokens[0]
        assert len(json.loads(archive.read("sessions.json"))) == 1
        actions = {entry["action"] for entry in json.loads(archive.read("audit.json"))}
        assert {"user.register", "session.create", "api_token.create"} <= actions
        memberships = json.loads(archive.read("related/sygmax_membership.json"))
        assert memberships["rows"][0]["workspace_id"] == workspace.json()["id"]
        everything = b"".join(archive.read(name) for name in names)
        assert plaintext.encode() not in everything and pair["refresh_token"].encode() not in everything
        assert b"argon2" not in everything and b"password_hash" not in everything


async def test_erasure(auth_client, db):
    async with auth_client(SYGMAX_AUTH_REGISTRATION="open") as client:
        owner = await owner_and_client(client)
        await register(client, "leaver@example.org", name="Leaver")
        pair = await login(client, "leaver@example.org")
        headers = bearer(pair["access_token"])
        token = (await client.post("/api/v1/auth/tokens", json={"name": "ci", "scopes": ["*"]},
                                   headers=headers)).json()["token"]
        user_id = await db.fetchval("SELECT id FROM sygmax_user WHERE email = 'leaver@example.org'")
        audit_before = await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE actor_id = $1", user_id)

        before = await snapshot(db)
        assert_problem(await client.request("DELETE", "/api/v1/users/me", json={"password": "wrong pass 1"},
                                            headers=headers), 403, "invalid-credentials")
        assert_problem(await client.request("DELETE", "/api/v1/users/me", json={}, headers=headers), 400,
                       "validation-error")
        assert await snapshot(db) == before
        # The last administrator cannot erase themself.
        assert_problem(await client.request("DELETE", "/api/v1/users/me", json={"password": PASSWORD},
                                            headers=bearer(owner["access_token"])), 409, "last-admin")

        done = await client.request("DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=headers)
        assert done.status_code == 204, done.text
        row = await db.fetchrow("SELECT * FROM sygmax_user WHERE id = $1", user_id)
        assert row["email"] == f"erased-{user_id}@invalid" and row["display_name"] == "Deleted user"
        assert row["password_hash"] is None and row["erased_at"] is not None and not row["is_active"]
        assert await db.fetchval("SELECT count(*) FROM sygmax_api_token WHERE user_id = $1 AND revoked_at IS NULL",
                                 user_id) == 0
        assert await db.fetchval("SELECT count(*) FROM sygmax_session WHERE user_id = $1 AND "
                                 "(revoked_at IS NULL OR created_ip IS NOT NULL)", user_id) == 0
        assert await db.fetchval("SELECT count(*) FROM sygmax_audit WHERE actor_id = $1", user_id) == audit_before + 1
        assert (await verify_chain(db)).ok
        assert_problem(await client.get("/api/v1/users/me", headers=headers), 401, "invalid-token")
        assert_problem(await client.get("/api/v1/users/me", headers=bearer(token)), 401, "invalid-token")
        assert_problem(await client.post("/api/v1/auth/login",
                                         json={"email": "leaver@example.org", "password": PASSWORD}),
                       401, "invalid-credentials")
        # The address is free again.
        assert (await register(client, "leaver@example.org", name="Comeback")).status_code == 202
        assert await db.fetchval("SELECT count(*) FROM sygmax_user WHERE email = 'leaver@example.org'") == 1
