"""The authorization policy: roles, per-object grants (user, team, custom role, built-in role),
restricted objects hidden even from owners and admins, token scopes, and the ACL routes."""

from __future__ import annotations

import uuid

import pytest

from sygmax.auth import acl, policy, workspaces
from sygmax.auth.policy import authorize, declare_permissions, forget_object, require
from sygmax.auth.tokens import Actor, create_user
from sygmax.errors import Problem
from tests import workspace_helpers
from tests.workspace_helpers import DOCS, snapshot

# Fixtures shared with the other identity tests.
api = workspace_helpers.api

W = "/api/v1/workspaces"
PAGE = "docs.page"


@pytest.fixture(autouse=True)
def _docs_permissions():
    declare_permissions([DOCS])


@pytest.fixture
async def world(db):
    """A workspace with one member per built-in role, a custom role, a team, and a stranger."""
    actors = {}
    for name in ("owner", "admin", "editor", "viewer", "custom", "teamed", "stranger"):
        user_id = await create_user(db, f"{name}@example.org", name.title())
        actors[name] = Actor(user_id, f"{name}@example.org", name.title(), False, scopes=frozenset({"*"}))
    view = await workspaces.do_create_workspace(actors["owner"], db, "Policy", plugins=[DOCS])
    workspace_id = view.id
    role = await workspaces.do_create_role(actors["owner"], db, workspace_id, name="Reader",
                                           permissions=["docs.read"], plugins=[DOCS])
    for name, role_name in (("admin", "admin"), ("editor", "editor"), ("viewer", "viewer"),
                            ("custom", str(role.id)), ("teamed", "viewer")):
        await db.execute("INSERT INTO sygmax_membership (workspace_id, user_id, role, role_id) VALUES ($1, $2, $3, $4)",
                         workspace_id, actors[name].user_id, None if name == "custom" else role_name,
                         role.id if name == "custom" else None)
    team = await workspaces.do_create_team(actors["owner"], db, workspace_id, name="Core")
    await workspaces.do_add_team_member(actors["owner"], db, workspace_id, team.id, actors["teamed"].user_id)
    return {"db": db, "ws": workspace_id, "actors": actors, "role": role, "team": team}


async def check(world, name: str, permission: str, object_id: str | None = "p1") -> int:
    """200 if allowed, else the status require() raises (403 or 404)."""
    kwargs = {"object_type": PAGE, "object_id": object_id} if object_id else {}
    try:
        await require(world["db"], world["actors"][name], permission, workspace_id=world["ws"], **kwargs)
    except Problem as exc:
        assert not await authorize(world["db"], world["actors"][name], permission, workspace_id=world["ws"],
                                   **kwargs)
        return exc.status_code
    assert await authorize(world["db"], world["actors"][name], permission, workspace_id=world["ws"], **kwargs)
    return 200


async def set_acl(world, grants, restricted=False, object_id="p1", by="owner"):
    specs = [acl.GrantSpec(kind, str(principal), codes) for kind, principal, codes in grants]
    return await acl.do_set_acl(world["actors"][by], world["db"], world["ws"], PAGE, object_id,
                                restricted=restricted, grants=specs, plugins=[DOCS])


async def test_roles_on_ordinary_objects(world):
    expected = {
        # name: (docs.read, docs.edit, docs.publish, acl.manage)
        "owner": (200, 200, 200, 200),
        "admin": (200, 200, 200, 200),
        "editor": (200, 200, 403, 403),
        "viewer": (200, 403, 403, 403),
        "custom": (200, 403, 403, 403),
        "stranger": (404, 404, 404, 404),
    }
    for name, statuses in expected.items():
        got = tuple([await check(world, name, code) for code in ("docs.read", "docs.edit", "docs.publish",
                                                                  "acl.manage")])
        assert got == statuses, name
    # Workspace-level checks: deleting is for owners alone, strangers learn nothing.
    assert await check(world, "owner", "workspace.delete", None) == 200
    assert await check(world, "admin", "workspace.delete", None) == 403
    assert await check(world, "stranger", "workspace.read", None) == 404
    # Another workspace's id is as unknown as a random one.
    assert not await authorize(world["db"], world["actors"]["owner"], "docs.read", workspace_id=uuid.uuid4())


async def test_restricted_object_is_hidden_from_owner_and_admin_until_granted(world):
    editor = world["actors"]["editor"]
    await set_acl(world, [("user", editor.user_id, ["docs.read", "docs.edit", "acl.manage"])], restricted=True)
    for name in ("owner", "admin", "viewer", "custom", "teamed", "stranger"):
        assert await check(world, name, "docs.read") == 404, name
        assert await check(world, name, "acl.manage") == 404, name
    assert await check(world, "editor", "docs.read") == 200
    assert await check(world, "editor", "docs.publish") == 403  # visible to them, but not granted
    # Other objects are unaffected.
    assert await check(world, "owner", "docs.read", "p2") == 200
    # Owners cannot even read the ACL of a restricted object.
    with pytest.raises(Problem) as caught:
        await acl.get_acl(world["actors"]["owner"], world["db"], world["ws"], PAGE, "p1", plugins=[DOCS])
    assert caught.value.status_code == 404
    # The grantee shares it with the owner; now the owner reads it, but still only what was granted.
    await set_acl(world, [("user", editor.user_id, ["docs.read", "docs.edit", "acl.manage"]),
                          ("user", world["actors"]["owner"].user_id, ["docs.read"])], restricted=True, by="editor")
    assert await check(world, "owner", "docs.read") == 200
    assert await check(world, "owner", "docs.edit") == 403
    assert await check(world, "admin", "docs.read") == 404


async def test_team_custom_role_and_builtin_role_grants(world):
    editor = world["actors"]["editor"]
    manage = ("user", editor.user_id, ["docs.read", "acl.manage"])
    await set_acl(world, [manage, ("team", world["team"].id, ["docs.read"])], restricted=True)
    assert await check(world, "teamed", "docs.read") == 200
    assert await check(world, "viewer", "docs.read") == 404
    await set_acl(world, [manage, ("role", world["role"].id, ["docs.read"])], restricted=True, by="editor")
    assert await check(world, "custom", "docs.read") == 200
    assert await check(world, "teamed", "docs.read") == 404
    await set_acl(world, [manage, ("role", "viewer", ["docs.read"])], restricted=True, by="editor")
    assert await check(world, "viewer", "docs.read") == 200 and await check(world, "teamed", "docs.read") == 200
    assert await check(world, "custom", "docs.read") == 404 and await check(world, "admin", "docs.read") == 404
    # Leaving a team takes its grants away.
    await workspaces.do_remove_team_member(world["actors"]["owner"], world["db"], world["ws"], world["team"].id,
                                           world["actors"]["teamed"].user_id)
    await set_acl(world, [manage, ("team", world["team"].id, ["docs.read"])], restricted=True, by="editor")
    assert await check(world, "teamed", "docs.read") == 404


async def test_grants_extend_roles_on_ordinary_objects(world):
    await set_acl(world, [("user", world["actors"]["viewer"].user_id, ["docs.edit"])])
    assert await check(world, "viewer", "docs.edit") == 200
    assert await check(world, "viewer", "docs.edit", "p2") == 403
    # Removing a member drops their grants with them (foreign key), so rejoining gives nothing back.
    await workspaces.do_remove_member(world["actors"]["owner"], world["db"], world["ws"],
                                      world["actors"]["viewer"].user_id)
    assert await world["db"].fetchval("SELECT count(*) FROM sygmax_acl_grant") == 0
    assert await check(world, "viewer", "docs.read") == 404


async def test_token_scopes_limit_everything(world):
    owner = world["actors"]["owner"]
    scoped = Actor(owner.user_id, owner.email, owner.display_name, False, scopes=frozenset({"docs.read"}))
    plugin_wide = Actor(owner.user_id, owner.email, owner.display_name, False, scopes=frozenset({"docs.*"}))
    found = await policy.access(world["db"], scoped, workspace_id=world["ws"], object_type=PAGE, object_id="p1")
    assert found.allows("docs.read") and not found.allows("docs.edit")
    with pytest.raises(Problem) as caught:
        await require(world["db"], scoped, "docs.edit", workspace_id=world["ws"], object_type=PAGE, object_id="p1")
    assert caught.value.status_code == 403 and "scoped" in caught.value.detail
    assert await authorize(world["db"], plugin_wide, "docs.publish", workspace_id=world["ws"], object_type=PAGE,
                           object_id="p1")
    assert not await authorize(world["db"], plugin_wide, "workspace.update", workspace_id=world["ws"])
    # A scoped token cannot create grants beyond its scopes either.
    with pytest.raises(Problem) as caught:
        await acl.do_set_acl(scoped, world["db"], world["ws"], PAGE, "p1", restricted=False, grants=[],
                             plugins=[DOCS])
    assert caught.value.status_code == 403


async def test_forget_object_drops_its_acl(world):
    await set_acl(world, [("user", world["actors"]["editor"].user_id, ["docs.read", "acl.manage"])], restricted=True)
    await forget_object(world["db"], workspace_id=world["ws"], object_type=PAGE, object_id="p1")
    assert await world["db"].fetchval("SELECT count(*) FROM sygmax_acl_grant") == 0
    assert await world["db"].fetchval("SELECT count(*) FROM sygmax_acl_object") == 0
    assert await check(world, "owner", "docs.read") == 200


async def test_acl_routes(api, db, example_user):
    alice, bob, carol = [await example_user(name) for name in ("alice", "bob", "carol")]
    workspace_id = await api.workspace(alice)
    await api.invite_and_join(alice, workspace_id, bob, "editor")
    await api.invite_and_join(alice, workspace_id, carol, "admin")
    url = f"{W}/{workspace_id}/acl/docs.page/p-1"
    assert await api.ok(alice, "GET", url) == {"workspace_id": workspace_id, "object_type": "docs.page",
                                               "object_id": "p-1", "restricted": False, "grants": []}
    await api.problem(bob, "GET", url, 403, "forbidden")  # editors do not manage ACLs

    before = await snapshot(db)
    bad = [
        ({"restricted": True, "grants": [{"principal_kind": "user", "principal": str(bob.id),
                                          "permissions": ["docs.read"]}]}, "acl-unmanageable"),
        ({"grants": [{"principal_kind": "user", "principal": str(bob.id), "permissions": ["docs.fly"]}]},
         "unknown-permission"),
        ({"grants": [{"principal_kind": "user", "principal": str(bob.id), "permissions": ["workspace.delete"]}]},
         "owner-only-permission"),
        ({"grants": [{"principal_kind": "user", "principal": "'; DROP TABLE sygmax_acl_grant--",
                      "permissions": ["docs.read"]}]}, "validation-error"),
        ({"grants": [{"principal_kind": "group", "principal": str(bob.id), "permissions": ["docs.read"]}]},
         "validation-error"),
        ({"grants": [{"principal_kind": "user", "principal": str(uuid.uuid4()), "permissions": ["docs.read"]}]},
         "unknown-principal"),
        ({"grants": [{"principal_kind": "user", "principal": str(bob.id), "permissions": []}]}, "validation-error"),
        ({"grants": [{"principal_kind": "user", "principal": str(bob.id), "permissions": ["docs.read"]}] * 2},
         "validation-error"),
        ({"grants": [], "owner": "x"}, "validation-error"),
    ]
    for body, slug in bad:
        await api.problem(alice, "PUT", url, 400, slug, json=body)
    for path in (f"{W}/{workspace_id}/acl/nosuch.page/p1", f"{W}/{workspace_id}/acl/DOCS.page/p1",
                 f"{W}/{workspace_id}/acl/docs/p1", f"{W}/{workspace_id}/acl/docs.page/" + "x" * 129,
                 f"{W}/{workspace_id}/acl/docs.page/a%20b", f"{W}/{workspace_id}/acl/docs.page/';DROP"):
        await api.problem(alice, "GET", path, 400, "validation-error")
    assert await snapshot(db) == before

    # Bob gets a restricted page; the owner (alice) and the admin (carol) lose sight of it.
    body = {"restricted": True, "grants": [
        {"principal_kind": "user", "principal": str(bob.id), "permissions": ["docs.read", "acl.manage"]},
        {"principal_kind": "role", "principal": "viewer", "permissions": ["docs.read"]}]}
    shown = await api.ok(alice, "PUT", url, body)
    assert shown["restricted"] and [(g["principal_kind"], g["principal_name"]) for g in shown["grants"]] == [
        ("role", "viewer"), ("user", "Bob")]
    await api.problem(alice, "GET", url, 404, "not-found")
    await api.problem(carol, "PUT", url, 404, "not-found", json={"grants": []})
    await api.problem(carol, "DELETE", url, 404, "not-found")
    assert (await api.ok(bob, "GET", url))["restricted"]
    # Bob cannot hand out what he lacks himself (docs.edit is not granted to him on this page).
    await api.problem(bob, "PUT", url, 403, "forbidden", json={"restricted": True, "grants": [
        {"principal_kind": "user", "principal": str(bob.id), "permissions": ["docs.read", "acl.manage"]},
        {"principal_kind": "user", "principal": str(carol.id), "permissions": ["docs.edit"]}]})
    # ... but shares what he has, then lifts the restriction.
    await api.ok(bob, "PUT", url, {"restricted": True, "grants": [
        {"principal_kind": "user", "principal": str(bob.id), "permissions": ["docs.read", "acl.manage"]},
        {"principal_kind": "user", "principal": str(alice.id), "permissions": ["docs.read", "acl.manage"]}]})
    assert len((await api.ok(alice, "GET", url))["grants"]) == 2
    await api.ok(alice, "PUT", url, {"grants": []})
    assert await db.fetchval("SELECT count(*) FROM sygmax_acl_object") == 0
    await api.ok(carol, "DELETE", url)

    rows = await db.fetch("SELECT action, object_type, object_id, details FROM sygmax_audit "
                          "WHERE object_type = 'docs.page' ORDER BY seq")
    assert [row["action"] for row in rows] == [
        "acl.restrict", "acl.grant", "acl.grant",              # alice restricts, grants bob and viewers
        "acl.grant", "acl.revoke",                              # bob grants alice, revokes viewers
        "acl.unrestrict", "acl.revoke", "acl.revoke",           # alice clears it all
        "acl.clear"]
    assert all(row["object_id"] == "p-1" for row in rows)
