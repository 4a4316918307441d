"""Workspaces, members, invitations, teams and custom roles over HTTP: full flows, refusals,
last-owner protection, privilege escalation, hostile input and cross-workspace ids (IDOR)."""

from __future__ import annotations

import asyncio
import email
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller

from sygmax.auth.invites import claim_invite, hash_invite_token, new_invite_token
from sygmax.auth.tokens import issue_token
from sygmax.config import load_settings
from sygmax.errors import Problem
from sygmax.plugins import discover_plugins
from tests import workspace_helpers
from tests.servers import free_port
from tests.workspace_helpers import DOCS, Api, snapshot

# Fixtures shared with the other identity tests.
api = workspace_helpers.api

W = "/api/v1/workspaces"


async def audit_actions(connection, workspace_id) -> list[str]:
    rows = await connection.fetch("SELECT action FROM sygmax_audit WHERE workspace_id = $1 ORDER BY seq",
                                  uuid.UUID(str(workspace_id)))
    return [row["action"] for row in rows]


# ---------------------------------------------------------------------------------------------
# claim_invite (used by registration as well as the accept route)


async def _insert_invite(connection, workspace_id, *, email=None, role="editor", expires_in=timedelta(days=1)):
    token = new_invite_token()
    await connection.execute(
        "INSERT INTO sygmax_invite (id, workspace_id, token_hash, email, role, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        uuid.uuid4(), workspace_id, hash_invite_token(token), email, role, datetime.now(timezone.utc) + expires_in)
    return token


async def test_claim_invite_validates_everything(api, db, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    workspace_id = uuid.UUID(await api.workspace(alice))
    addressed = await _insert_invite(db, workspace_id, email="Bob@Example.org")
    expired = await _insert_invite(db, workspace_id, expires_in=timedelta(seconds=-1))

    async def refused(token, mail, status):
        before = await snapshot(db)
        with pytest.raises(Problem) as caught:
            await claim_invite(db, token, mail, bob.id)
        assert caught.value.status_code == status and caught.value.slug == "invalid-invite"
        assert await snapshot(db) == before

    await refused(addressed, "mallory@example.org", 400)
    await refused(expired, "bob@example.org", 400)
    await refused(new_invite_token(), "bob@example.org", 404)
    await refused("not-a-token", "bob@example.org", 404)
    await refused("syi_" + "x" * 300, "bob@example.org", 404)

    await claim_invite(db, addressed, "bob@example.org", bob.id)  # case-insensitive address match
    assert await db.fetchval("SELECT role FROM sygmax_membership WHERE workspace_id = $1 AND user_id = $2",
                             workspace_id, bob.id) == "editor"
    assert (await audit_actions(db, workspace_id))[-1] == "invite.accept"
    await refused(addressed, "bob@example.org", 400)  # single use

    again = await _insert_invite(db, workspace_id)
    with pytest.raises(Problem) as caught:
        await claim_invite(db, again, "bob@example.org", bob.id)
    assert caught.value.status_code == 409 and caught.value.slug == "already-member"


async def test_concurrent_accepts_of_one_link_admit_one(api, db, example_user, database_url):
    import asyncpg

    alice = await example_user("alice")
    users = [await example_user(f"user{number}") for number in range(4)]
    workspace_id = uuid.UUID(await api.workspace(alice))
    token = await _insert_invite(db, workspace_id)

    async def attempt(user):
        connection = await asyncpg.connect(database_url)
        try:
            await claim_invite(connection, token, f"{user.name}@example.org", user.id)
            return "ok"
        except Problem as exc:
            return exc.status_code
        finally:
            await connection.close()

    results = await asyncio.gather(*(attempt(user) for user in users))
    assert results.count("ok") == 1 and results.count(400) == 3
    assert await db.fetchval("SELECT count(*) FROM sygmax_membership WHERE workspace_id = $1", workspace_id) == 2


# ---------------------------------------------------------------------------------------------
# Workspaces


async def test_workspace_lifecycle(api, db, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    created = await api.ok(alice, "POST", W, {"name": "  Acme Research  "})
    workspace_id = created["id"]
    assert created["name"] == "Acme Research" and created["role"] == "owner"
    assert {"workspace.delete", "docs.publish", "acl.manage"} <= set(created["permissions"])

    mine = await api.ok(alice, "GET", W)
    assert [item["id"] for item in mine] == [workspace_id]
    assert await api.ok(bob, "GET", W) == []

    renamed = await api.ok(alice, "PATCH", f"{W}/{workspace_id}", {"name": "Acme"})
    assert renamed["name"] == "Acme" and renamed["updated_at"] >= created["updated_at"]
    assert (await api.ok(alice, "GET", f"{W}/{workspace_id}"))["name"] == "Acme"

    # Editors read but cannot rename or delete; the answer names the missing permission.
    await api.invite_and_join(alice, workspace_id, bob, "editor")
    seen = await api.ok(bob, "GET", f"{W}/{workspace_id}")
    assert seen["role"] == "editor" and "docs.edit" in seen["permissions"] and "docs.publish" not in seen["permissions"]
    body = await api.problem(bob, "PATCH", f"{W}/{workspace_id}", 403, "forbidden", json={"name": "Mine"})
    assert "workspace.update" in body["detail"]
    await api.problem(bob, "DELETE", f"{W}/{workspace_id}", 403, "forbidden")

    # Admins cannot delete either: deleting is for owners alone.
    await api.ok(alice, "PATCH", f"{W}/{workspace_id}/members/{bob.id}", {"role": "admin"})
    await api.problem(bob, "DELETE", f"{W}/{workspace_id}", 403, "forbidden")

    await api.ok(alice, "DELETE", f"{W}/{workspace_id}")
    await api.problem(alice, "GET", f"{W}/{workspace_id}", 404, "not-found")
    for table in ("sygmax_workspace", "sygmax_membership", "sygmax_invite"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
    assert await audit_actions(db, workspace_id) == [
        "workspace.create", "workspace.update", "invite.create", "invite.accept", "member.role_change",
        "workspace.delete"]


async def test_unauthenticated_requests_are_refused(api, example_user):
    alice = await example_user("alice")
    workspace_id = await api.workspace(alice)
    for method, url in (("GET", W), ("POST", W), ("GET", f"{W}/{workspace_id}"),
                        ("GET", f"{W}/{workspace_id}/members"), ("GET", "/api/v1/permissions"),
                        ("GET", "/api/v1/audit"), ("POST", "/api/v1/invites/syi_x/accept")):
        await api.problem(None, method, url, 401)


# ---------------------------------------------------------------------------------------------
# Members and roles


async def test_member_roles_and_last_owner_protection(api, db, example_user):
    alice, bob, carol = [await example_user(name) for name in ("alice", "bob", "carol")]
    workspace_id = await api.workspace(alice)
    members_url = f"{W}/{workspace_id}/members"
    await api.invite_and_join(alice, workspace_id, bob, "admin")
    await api.invite_and_join(alice, workspace_id, carol, "viewer")
    listed = await api.ok(carol, "GET", members_url)
    assert {(m["email"], m["role"]) for m in listed} == {
        ("alice@example.org", "owner"), ("bob@example.org", "admin"), ("carol@example.org", "viewer")}

    # The last owner cannot be demoted, removed, or leave.
    await api.problem(alice, "PATCH", f"{members_url}/{alice.id}", 409, "last-owner", json={"role": "admin"})
    await api.problem(alice, "POST", f"{W}/{workspace_id}/leave", 409, "last-owner")
    # An admin cannot touch an owner, nor make anyone owner.
    await api.problem(bob, "DELETE", f"{members_url}/{alice.id}", 403, "forbidden")
    await api.problem(bob, "PATCH", f"{members_url}/{alice.id}", 403, "forbidden", json={"role": "viewer"})
    await api.problem(bob, "PATCH", f"{members_url}/{bob.id}", 403, "forbidden", json={"role": "owner"})
    await api.problem(bob, "PATCH", f"{members_url}/{carol.id}", 403, "forbidden", json={"role": "owner"})
    # ... but manages everyone else.
    assert (await api.ok(bob, "PATCH", f"{members_url}/{carol.id}", {"role": "editor"}))["role"] == "editor"
    # A viewer or editor manages nobody.
    await api.problem(carol, "PATCH", f"{members_url}/{carol.id}", 403, "forbidden", json={"role": "admin"})
    await api.problem(carol, "DELETE", f"{members_url}/{bob.id}", 403, "forbidden")
    # Unknown roles and members.
    await api.problem(alice, "PATCH", f"{members_url}/{carol.id}", 400, "unknown-role", json={"role": "boss"})
    await api.problem(alice, "PATCH", f"{members_url}/{uuid.uuid4()}", 404, "not-found", json={"role": "viewer"})

    # Two owners: now either may step down or leave, but not both.
    await api.ok(alice, "PATCH", f"{members_url}/{bob.id}", {"role": "owner"})
    await api.ok(bob, "PATCH", f"{members_url}/{alice.id}", {"role": "admin"})
    await api.problem(bob, "POST", f"{W}/{workspace_id}/leave", 409, "last-owner")
    await api.problem(alice, "DELETE", f"{members_url}/{bob.id}", 403, "forbidden")  # admin vs owner
    await api.ok(carol, "POST", f"{W}/{workspace_id}/leave", status=204)
    await api.problem(carol, "GET", f"{W}/{workspace_id}", 404, "not-found")
    await api.problem(carol, "POST", f"{W}/{workspace_id}/leave", 404, "not-found")
    await api.ok(bob, "DELETE", f"{members_url}/{alice.id}")
    assert [m["email"] for m in await api.ok(bob, "GET", members_url)] == ["bob@example.org"]
    actions = await audit_actions(db, workspace_id)
    assert actions.count("member.role_change") == 3 and actions[-2:] == ["member.leave", "member.remove"]


async def test_concurrent_demotions_keep_an_owner(api, db, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    workspace_id = await api.workspace(alice)
    await api.invite_and_join(alice, workspace_id, bob, "owner")
    results = await asyncio.gather(
        api.call(alice, "PATCH", f"{W}/{workspace_id}/members/{alice.id}", {"role": "editor"}),
        api.call(bob, "PATCH", f"{W}/{workspace_id}/members/{bob.id}", {"role": "editor"}))
    assert sorted(response.status_code for response in results) == [200, 409]
    assert await db.fetchval("SELECT count(*) FROM sygmax_membership WHERE role = 'owner'") == 1


async def test_custom_roles(api, db, example_user):
    alice, bob, carol = [await example_user(name) for name in ("alice", "bob", "carol")]
    workspace_id = await api.workspace(alice)
    roles_url = f"{W}/{workspace_id}/roles"

    everything = await api.ok(alice, "GET", "/api/v1/permissions")
    codes = {item["code"]: item for item in everything}
    assert {"workspace.read", "members.manage", "acl.manage", "audit.read", "docs.read", "docs.publish",
            "system.view"} <= set(codes)
    assert codes["docs.read"]["declared_by"] == "docs" and "viewer" in codes["docs.read"]["roles"]
    assert codes["workspace.delete"]["roles"] == ["owner"]

    body = await api.problem(alice, "POST", roles_url, 400, "unknown-permission",
                             json={"name": "Reviewer", "permissions": ["docs.read", "docs.fly", "nope.thing"]})
    assert body["field"] == "permissions" and body["unknown"] == ["docs.fly", "nope.thing"]
    await api.problem(alice, "POST", roles_url, 400, "owner-only-permission",
                      json={"name": "Reviewer", "permissions": ["workspace.delete"]})
    for name in ("admin", "Owner", str(uuid.uuid4()), "<b>", "x" * 65, " ", "a;DROP TABLE sygmax_role--"):
        await api.problem(alice, "POST", roles_url, 400, json={"name": name, "permissions": []})

    role = await api.ok(alice, "POST", roles_url, {"name": "Reviewer", "description": "reads and invites",
                                                   "permissions": ["docs.read", "workspace.read", "invites.manage",
                                                                   "docs.read"]})
    assert role["permissions"] == ["docs.read", "invites.manage", "workspace.read"] and not role["builtin"]
    await api.problem(alice, "POST", roles_url, 409, "conflict", json={"name": "reviewer", "permissions": []})
    listed = await api.ok(alice, "GET", roles_url)
    assert [item["name"] for item in listed] == ["owner", "admin", "editor", "viewer", "Reviewer"]
    assert await api.ok(alice, "GET", f"{roles_url}/{role['id']}") == role

    # A member with the custom role holds exactly its permissions (by id or by name).
    await api.invite_and_join(alice, workspace_id, bob, role["id"])
    seen = await api.ok(bob, "GET", f"{W}/{workspace_id}")
    assert seen["role"] == "Reviewer" and seen["role_id"] == role["id"]
    assert seen["permissions"] == ["docs.read", "invites.manage", "workspace.read"]
    await api.problem(bob, "GET", f"{W}/{workspace_id}/members", 403, "forbidden")
    # It may invite, but only with roles it covers: not as editor (docs.edit, members.read...).
    await api.problem(bob, "POST", f"{W}/{workspace_id}/invites", 403, "forbidden", json={"role": "editor"})
    await api.ok(bob, "POST", f"{W}/{workspace_id}/invites", {"role": "Reviewer"})

    # Admins define roles, but only from permissions they hold; editors cannot define roles.
    await api.invite_and_join(alice, workspace_id, carol, "editor")
    await api.problem(carol, "POST", roles_url, 403, "forbidden", json={"name": "Mine", "permissions": []})
    updated = await api.ok(alice, "PATCH", f"{roles_url}/{role['id']}",
                           {"permissions": ["docs.read", "workspace.read", "members.read"], "name": "Reader"})
    assert updated["name"] == "Reader" and updated["member_count"] == 1
    assert "members.read" in (await api.ok(bob, "GET", f"{W}/{workspace_id}"))["permissions"]
    await api.ok(bob, "GET", f"{W}/{workspace_id}/members")

    # A role in use (by a member or a pending invitation) cannot be deleted.
    await api.problem(alice, "DELETE", f"{roles_url}/{role['id']}", 409, "role-in-use")
    await api.ok(alice, "PATCH", f"{W}/{workspace_id}/members/{bob.id}", {"role": "viewer"})
    await api.problem(alice, "DELETE", f"{roles_url}/{role['id']}", 409, "role-in-use")  # bob's pending invite
    for invite in await api.ok(alice, "GET", f"{W}/{workspace_id}/invites"):
        if invite["status"] == "pending":
            await api.ok(alice, "DELETE", f"{W}/{workspace_id}/invites/{invite['id']}")
    await api.ok(alice, "DELETE", f"{roles_url}/{role['id']}")
    await api.problem(alice, "GET", f"{roles_url}/{role['id']}", 404, "not-found")
    actions = await audit_actions(db, workspace_id)
    assert {"role.create", "role.update", "role.delete", "invite.delete"} <= set(actions)


async def test_admin_cannot_escalate_through_custom_roles(api, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    workspace_id = await api.workspace(alice)
    await api.invite_and_join(alice, workspace_id, bob, "admin")
    roles_url = f"{W}/{workspace_id}/roles"
    # Admins hold everything but workspace.delete, which no custom role may hold anyway.
    role = await api.ok(bob, "POST", roles_url, {"name": "Helper", "permissions": ["members.manage", "docs.edit"]})
    # An admin cannot invite an owner.
    await api.problem(bob, "POST", f"{W}/{workspace_id}/invites", 403, "forbidden", json={"role": "owner"})
    await api.ok(bob, "POST", f"{W}/{workspace_id}/invites", {"role": "admin"})
    # A custom role holding members.manage cannot promote anyone beyond itself.
    carol = await example_user("carol")
    dave = await example_user("dave")
    await api.invite_and_join(alice, workspace_id, carol, role["id"])
    await api.invite_and_join(alice, workspace_id, dave, "viewer")
    await api.problem(carol, "PATCH", f"{W}/{workspace_id}/members/{dave.id}", 403, json={"role": "admin"})
    await api.problem(carol, "PATCH", f"{W}/{workspace_id}/members/{carol.id}", 403, json={"role": "editor"})
    await api.problem(carol, "DELETE", f"{W}/{workspace_id}/members/{bob.id}", 403)


async def test_scoped_tokens_cannot_exceed_their_scopes(api, db, example_user):
    alice = await example_user("alice")
    workspace_id = await api.workspace(alice)

    class Scoped:
        def __init__(self, token):
            self.headers = {"Authorization": f"Bearer {token}"}

    read_only = Scoped(await issue_token(db, alice.id, "ro", ["workspace.read", "members.read"]))
    wildcard = Scoped(await issue_token(db, alice.id, "all", ["*"]))
    seen = await api.ok(read_only, "GET", f"{W}/{workspace_id}")
    assert seen["permissions"] == ["members.read", "workspace.read"]
    await api.ok(read_only, "GET", f"{W}/{workspace_id}/members")
    body = await api.problem(read_only, "PATCH", f"{W}/{workspace_id}", 403, "forbidden", json={"name": "X"})
    assert "scoped" in body["detail"]
    await api.problem(read_only, "POST", W, 403, "forbidden", json={"name": "Other"})
    await api.problem(read_only, "POST", f"{W}/{workspace_id}/invites", 403, json={"role": "viewer"})
    await api.ok(wildcard, "PATCH", f"{W}/{workspace_id}", {"name": "Renamed"})


# ---------------------------------------------------------------------------------------------
# Invitations


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
async def mail_api(make_app, environ, tmp_path, smtp_server):
    from litestar.testing import AsyncTestClient

    port, inbox = smtp_server
    settings = load_settings(tmp_path / "absent.toml", environ={
        **environ, "SYGMAX_SMTP_HOST": "127.0.0.1", "SYGMAX_SMTP_PORT": str(port),
        "SYGMAX_SERVER_PUBLIC_URL": "https://sygmax.example.org/"})
    async with AsyncTestClient(app=make_app("api", plugins={**discover_plugins(), "docs": DOCS},
                                            app_settings=settings)) as client:
        yield Api(client), inbox


async def test_invitation_by_email(mail_api, db, example_user):
    api, inbox = mail_api
    alice, bob, mallory = [await example_user(name) for name in ("alice", "bob", "mallory")]
    workspace_id = await api.workspace(alice, "Acme")
    invite = await api.ok(alice, "POST", f"{W}/{workspace_id}/invites", {"email": "bob@example.org", "role": "viewer"})
    assert invite["emailed"] and invite["role"] == "viewer"
    assert invite["link"] == f"https://sygmax.example.org/invite/{invite['token']}"
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["To"] == "bob@example.org" and "Acme" in message["Subject"]
    assert invite["link"] in message.get_payload(decode=True).decode()
    # Only the hash is stored.
    stored = await db.fetchval("SELECT token_hash FROM sygmax_invite WHERE id = $1", uuid.UUID(invite["id"]))
    assert bytes(stored) == hash_invite_token(invite["token"]) and invite["token"].encode() not in bytes(stored)

    accept = f"/api/v1/invites/{invite['token']}/accept"
    await api.problem(mallory, "POST", accept, 400, "invalid-invite")
    joined = await api.ok(bob, "POST", accept, status=200)
    assert joined == {"workspace_id": workspace_id, "workspace_name": "Acme", "role": "viewer", "role_id": None}
    await api.problem(bob, "POST", accept, 400, "invalid-invite")  # used
    listed = await api.ok(alice, "GET", f"{W}/{workspace_id}/invites")
    assert [(item["status"], item["used_by"]) for item in listed] == [("used", str(bob.id))]


async def test_invitation_refusals(mail_api, db, example_user, smtp_server):
    api, inbox = mail_api
    alice, bob = await example_user("alice"), await example_user("bob")
    workspace_id = await api.workspace(alice)
    invites_url = f"{W}/{workspace_id}/invites"
    before = await snapshot(db)
    for body in ({"email": "bob@example.org\r\nBcc: x@evil.org", "role": "viewer"},
                 {"email": "'; DROP TABLE sygmax_invite--", "role": "viewer"},
                 {"email": "<script>@x", "role": "viewer"},
                 {"role": "viewer", "ttl_s": 10}, {"role": "viewer", "ttl_s": 10**9},
                 {"role": "'; DROP TABLE sygmax_invite--"}, {"role": "x" * 1000}, {"role": 3},
                 {"role": "viewer", "extra": 1}):
        await api.problem(alice, "POST", invites_url, 400, json=body)
    await api.problem(alice, "POST", invites_url, 400, "malformed-body", content=b'{"role": ')
    assert await snapshot(db) == before and inbox.messages == []

    # Expired links are refused; revoked ones are unknown.
    short = await api.ok(alice, "POST", invites_url, {"role": "editor", "ttl_s": 300})
    await db.execute("UPDATE sygmax_invite SET expires_at = now() - interval '1 second' WHERE id = $1",
                     uuid.UUID(short["id"]))
    body = await api.problem(bob, "POST", f"/api/v1/invites/{short['token']}/accept", 400, "invalid-invite")
    assert "expired" in body["detail"]
    assert [item["status"] for item in await api.ok(alice, "GET", invites_url)] == ["expired"]
    revoked = await api.ok(alice, "POST", invites_url, {"role": "editor"})
    await api.ok(alice, "DELETE", f"{invites_url}/{revoked['id']}")
    await api.problem(bob, "POST", f"/api/v1/invites/{revoked['token']}/accept", 404, "invalid-invite")
    await api.problem(alice, "DELETE", f"{invites_url}/{revoked['id']}", 404, "not-found")
    await api.problem(bob, "POST", "/api/v1/invites/syi_unknown/accept", 404, "invalid-invite")
    await api.problem(bob, "POST", "/api/v1/invites/'; DROP TABLE--/accept", 404)
    assert await db.fetchval("SELECT count(*) FROM sygmax_membership WHERE user_id = $1", bob.id) == 0


async def test_invitation_is_not_created_when_mail_fails(api, db, example_user):
    # The default test settings point the relay at 127.0.0.1:25, where nothing listens.
    alice = await example_user("alice")
    workspace_id = await api.workspace(alice)
    before = await snapshot(db)
    body = await api.problem(alice, "POST", f"{W}/{workspace_id}/invites", 503, "mail-unavailable",
                             json={"email": "bob@example.org", "role": "viewer"})
    assert "none was created" in body["detail"]
    assert await snapshot(db) == before


# ---------------------------------------------------------------------------------------------
# Teams


async def test_teams(api, db, example_user):
    alice, bob, carol = [await example_user(name) for name in ("alice", "bob", "carol")]
    workspace_id = await api.workspace(alice)
    await api.invite_and_join(alice, workspace_id, bob, "editor")
    teams_url = f"{W}/{workspace_id}/teams"
    team = await api.ok(alice, "POST", teams_url, {"name": "Design", "description": "Pixels"})
    assert team["member_count"] == 0
    await api.problem(alice, "POST", teams_url, 409, "conflict", json={"name": "design"})
    await api.problem(bob, "POST", teams_url, 403, "forbidden", json={"name": "Mine"})
    member = await api.ok(alice, "PUT", f"{teams_url}/{team['id']}/members/{bob.id}")
    assert member["email"] == "bob@example.org"
    await api.ok(alice, "PUT", f"{teams_url}/{team['id']}/members/{bob.id}")  # idempotent
    # Only workspace members can join a team.
    await api.problem(alice, "PUT", f"{teams_url}/{team['id']}/members/{carol.id}", 404, "not-found")
    assert [m["email"] for m in await api.ok(bob, "GET", f"{teams_url}/{team['id']}/members")] == ["bob@example.org"]
    assert (await api.ok(bob, "GET", f"{teams_url}/{team['id']}"))["member_count"] == 1
    renamed = await api.ok(alice, "PATCH", f"{teams_url}/{team['id']}", {"name": "Brand"})
    assert renamed["name"] == "Brand" and renamed["description"] == "Pixels"
    assert [t["name"] for t in await api.ok(bob, "GET", teams_url)] == ["Brand"]
    # Leaving the workspace leaves its teams.
    await api.ok(bob, "POST", f"{W}/{workspace_id}/leave", status=204)
    assert (await api.ok(alice, "GET", f"{teams_url}/{team['id']}"))["member_count"] == 0
    await api.problem(alice, "DELETE", f"{teams_url}/{team['id']}/members/{bob.id}", 404, "not-found")
    await api.ok(alice, "DELETE", f"{teams_url}/{team['id']}")
    await api.problem(alice, "GET", f"{teams_url}/{team['id']}", 404, "not-found")
    actions = await audit_actions(db, workspace_id)
    assert {"team.create", "team.member_add", "team.update", "team.delete"} <= set(actions)
    assert actions.count("team.member_add") == 1


# ---------------------------------------------------------------------------------------------
# Hostile input: refused with 400, and nothing changes


@pytest.mark.parametrize("name", [
    "", "   ", "x" * 101, "<script>alert(1)</script>", "tab\there", "new\nline", "nul\x00byte", 42, None, ["a"],
])
async def test_bad_names_are_refused(api, db, example_user, name):
    alice = await example_user("alice")
    workspace_id = await api.workspace(alice)
    before = await snapshot(db)
    for method, url in (("POST", W), ("PATCH", f"{W}/{workspace_id}"), ("POST", f"{W}/{workspace_id}/teams")):
        body = await api.problem(alice, method, url, 400, json={"name": name})
        assert body["field"] == "name", body
    assert await snapshot(db) == before


async def test_hostile_bodies_are_refused(api, db, example_user):
    alice = await example_user("alice")
    workspace_id = await api.workspace(alice)
    before = await snapshot(db)
    cases = [
        ("POST", W, b"{not json"),
        ("POST", W, b'{"name": "A", "owner": "someone"}'),
        ("POST", W, b"[]"),
        ("PATCH", f"{W}/{workspace_id}/members/{alice.id}", b'{"role": ["owner"]}'),
        ("POST", f"{W}/{workspace_id}/roles", b'{"name": "R", "permissions": "docs.read"}'),
        ("POST", f"{W}/{workspace_id}/roles", b'{"name": "R", "permissions": ["' + b"a" * 200 + b'"]}'),
        ("POST", f"{W}/{workspace_id}/roles",
         b'{"name": "R", "permissions": ["docs.read\'; DROP TABLE sygmax_role--"]}'),
        ("POST", f"{W}/{workspace_id}/teams", b'{"name": "T", "description": "' + b"d" * 1001 + b'"}'),
    ]
    for method, url, content in cases:
        await api.problem(alice, method, url, 400, content=content)
    # SQL-looking text where text is allowed is stored verbatim, never executed.
    created = await api.ok(alice, "POST", W, {"name": "'; DROP TABLE sygmax_workspace;--"})
    assert (await api.ok(alice, "GET", f"{W}/{created['id']}"))["name"] == "'; DROP TABLE sygmax_workspace;--"
    assert await db.fetchval("SELECT count(*) FROM sygmax_workspace") == 2
    after = await snapshot(db)
    assert {table: rows for table, rows in after.items() if table not in
            ("sygmax_workspace", "sygmax_membership", "sygmax_audit")} == \
           {table: rows for table, rows in before.items() if table not in
            ("sygmax_workspace", "sygmax_membership", "sygmax_audit")}


# ---------------------------------------------------------------------------------------------
# IDOR: a member of workspace A gets 404 for every id of workspace B, on every route


async def test_cross_workspace_ids_are_not_found_on_every_route(api, db, example_user):
    alice, bob, bert = [await example_user(name) for name in ("alice", "bob", "bert")]
    a = await api.workspace(alice, "A")
    b = await api.workspace(bob, "B")
    await api.invite_and_join(bob, b, bert, "editor")
    b_team = (await api.ok(bob, "POST", f"{W}/{b}/teams", {"name": "B team"}))["id"]
    await api.ok(bob, "PUT", f"{W}/{b}/teams/{b_team}/members/{bert.id}")
    b_role = (await api.ok(bob, "POST", f"{W}/{b}/roles", {"name": "B role", "permissions": ["docs.read"]}))["id"]
    b_invite = (await api.ok(bob, "POST", f"{W}/{b}/invites", {"role": "viewer"}))["id"]
    await api.ok(bob, "PUT", f"{W}/{b}/acl/docs.page/p1", {"grants": [
        {"principal_kind": "user", "principal": str(bert.id), "permissions": ["docs.read"]}]})
    # Alice's own workspace has the same kinds of things, so every route is reachable for her.
    a_team = (await api.ok(alice, "POST", f"{W}/{a}/teams", {"name": "A team"}))["id"]
    before = await snapshot(db)

    role_body = {"name": "Hijack", "permissions": []}
    acl_body = {"grants": [{"principal_kind": "user", "principal": str(alice.id), "permissions": ["acl.manage"]}]}
    # Workspace B's own routes, with B's ids: Alice is not a member -> 404 everywhere.
    in_b = [
        ("GET", f"{W}/{b}", None), ("PATCH", f"{W}/{b}", {"name": "Mine"}), ("DELETE", f"{W}/{b}", None),
        ("GET", f"{W}/{b}/members", None), ("PATCH", f"{W}/{b}/members/{bert.id}", {"role": "viewer"}),
        ("DELETE", f"{W}/{b}/members/{bert.id}", None), ("POST", f"{W}/{b}/leave", None),
        ("GET", f"{W}/{b}/invites", None), ("POST", f"{W}/{b}/invites", {"role": "viewer"}),
        ("DELETE", f"{W}/{b}/invites/{b_invite}", None),
        ("GET", f"{W}/{b}/teams", None), ("POST", f"{W}/{b}/teams", {"name": "X"}),
        ("GET", f"{W}/{b}/teams/{b_team}", None), ("PATCH", f"{W}/{b}/teams/{b_team}", {"name": "X"}),
        ("DELETE", f"{W}/{b}/teams/{b_team}", None), ("GET", f"{W}/{b}/teams/{b_team}/members", None),
        ("PUT", f"{W}/{b}/teams/{b_team}/members/{alice.id}", None),
        ("DELETE", f"{W}/{b}/teams/{b_team}/members/{bert.id}", None),
        ("GET", f"{W}/{b}/roles", None), ("POST", f"{W}/{b}/roles", role_body),
        ("GET", f"{W}/{b}/roles/{b_role}", None), ("PATCH", f"{W}/{b}/roles/{b_role}", {"permissions": []}),
        ("DELETE", f"{W}/{b}/roles/{b_role}", None),
        ("GET", f"{W}/{b}/acl/docs.page/p1", None), ("PUT", f"{W}/{b}/acl/docs.page/p1", acl_body),
        ("DELETE", f"{W}/{b}/acl/docs.page/p1", None),
        ("GET", f"{W}/{b}/audit", None),
    ]
    # Workspace A's routes (where Alice is owner) with B's sub-ids -> 404 (or 400 for body references).
    in_a = [
        ("PATCH", f"{W}/{a}/members/{bert.id}", {"role": "viewer"}), ("DELETE", f"{W}/{a}/members/{bert.id}", None),
        ("DELETE", f"{W}/{a}/invites/{b_invite}", None),
        ("GET", f"{W}/{a}/teams/{b_team}", None), ("PATCH", f"{W}/{a}/teams/{b_team}", {"name": "X"}),
        ("DELETE", f"{W}/{a}/teams/{b_team}", None), ("GET", f"{W}/{a}/teams/{b_team}/members", None),
        ("PUT", f"{W}/{a}/teams/{b_team}/members/{alice.id}", None),
        ("DELETE", f"{W}/{a}/teams/{b_team}/members/{bert.id}", None),
        ("PUT", f"{W}/{a}/teams/{a_team}/members/{bert.id}", None),
        ("GET", f"{W}/{a}/roles/{b_role}", None), ("PATCH", f"{W}/{a}/roles/{b_role}", {"permissions": []}),
        ("DELETE", f"{W}/{a}/roles/{b_role}", None),
    ]
    for method, url, body in in_b + in_a:
        await api.problem(alice, method, url, 404, "not-found", json=body)
    # References to B's principals and roles inside A's bodies are unknown there.
    await api.problem(alice, "PATCH", f"{W}/{a}/members/{alice.id}", 400, "unknown-role", json={"role": b_role})
    await api.problem(alice, "POST", f"{W}/{a}/invites", 400, "unknown-role", json={"role": b_role})
    for kind, principal in (("user", bert.id), ("team", b_team), ("role", b_role)):
        await api.problem(alice, "PUT", f"{W}/{a}/acl/docs.page/p1", 400, json={"grants": [
            {"principal_kind": kind, "principal": str(principal), "permissions": ["docs.read"]}]})
    # B's ACL object under A's id is a different (empty) object: nothing of B shows.
    assert (await api.ok(alice, "GET", f"{W}/{a}/acl/docs.page/p1"))["grants"] == []
    assert await snapshot(db) == before
    # Bert (a member of B) learns nothing about A either.
    await api.problem(bert, "GET", f"{W}/{a}", 404, "not-found")
    await api.problem(bert, "GET", f"{W}/{uuid.uuid4()}", 404, "not-found")
