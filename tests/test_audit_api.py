"""The audit log's query API: who may read what, filters, and cursor pagination."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from tests import workspace_helpers
from tests.workspace_helpers import snapshot

# Fixtures shared with the other identity tests.
api = workspace_helpers.api

W = "/api/v1/workspaces"


async def test_instance_admins_read_everything_others_nothing(api, db, example_user):
    root = await example_user("root", admin=True)
    alice, bob = await example_user("alice"), await example_user("bob")
    a = await api.workspace(alice, "A")
    b = await api.workspace(bob, "B")
    await api.ok(alice, "PATCH", f"{W}/{a}", {"name": "A2"})

    page = await api.ok(root, "GET", "/api/v1/audit")
    assert [(item["action"], item["workspace_id"]) for item in page["items"]] == [
        ("workspace.update", a), ("workspace.create", b), ("workspace.create", a)]
    assert page["next_cursor"] is None
    first = page["items"][0]
    assert first["actor_id"] == str(alice.id) and first["details"] == {"name": {"from": "A", "to": "A2"}}
    assert first["request_id"] and first["seq"] == 3

    await api.problem(alice, "GET", "/api/v1/audit", 403, "forbidden")
    await api.problem(None, "GET", "/api/v1/audit", 401)
    # Instance admins are not workspace members: the workspace route needs audit.read there.
    await api.problem(root, "GET", f"{W}/{a}/audit", 404, "not-found")


async def test_workspace_audit_is_scoped_to_the_workspace(api, example_user):
    alice, bob, carol = [await example_user(name) for name in ("alice", "bob", "carol")]
    a = await api.workspace(alice, "A")
    b = await api.workspace(bob, "B")
    await api.ok(bob, "PATCH", f"{W}/{b}", {"name": "B2"})
    await api.invite_and_join(alice, a, carol, "editor")
    page = await api.ok(alice, "GET", f"{W}/{a}/audit")
    assert [item["action"] for item in page["items"]] == ["invite.accept", "invite.create", "workspace.create"]
    assert {item["workspace_id"] for item in page["items"]} == {a}
    await api.problem(carol, "GET", f"{W}/{a}/audit", 403, "forbidden")  # editors lack audit.read
    await api.problem(alice, "GET", f"{W}/{b}/audit", 404, "not-found")
    # A workspace filter smuggled into the query cannot widen the view.
    page = await api.ok(alice, "GET", f"{W}/{a}/audit?workspace_id={b}")
    assert {item["workspace_id"] for item in page["items"]} == {a}
    await api.ok(alice, "PATCH", f"{W}/{a}/members/{carol.id}", {"role": "admin"})
    assert (await api.ok(carol, "GET", f"{W}/{a}/audit?limit=1"))["items"][0]["action"] == "member.role_change"


async def test_filters_and_cursor_pagination(api, db, example_user):
    root = await example_user("root", admin=True)
    alice, bob = await example_user("alice"), await example_user("bob")
    a = await api.workspace(alice, "A")
    for number in range(7):
        await api.ok(alice, "POST", f"{W}/{a}/teams", {"name": f"Team {number}"})
    await api.workspace(bob, "B")

    seen, cursor = [], None
    while True:
        query = "/api/v1/audit?action=team.create&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await api.ok(root, "GET", query)
        seen += [item["details"]["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Team {number}" for number in reversed(range(7))]

    by_actor = await api.ok(root, "GET", f"/api/v1/audit?actor={bob.id}")
    assert [item["action"] for item in by_actor["items"]] == ["workspace.create"]
    prefix = await api.ok(root, "GET", "/api/v1/audit?action=workspace.*")
    assert [item["action"] for item in prefix["items"]] == ["workspace.create", "workspace.create"]
    newest_workspace = prefix["items"][0]["object_id"]
    one = await api.ok(root, "GET", f"/api/v1/audit?object_type=workspace&object_id={newest_workspace}")
    assert len(one["items"]) == 1
    in_a = await api.ok(alice, "GET", f"{W}/{a}/audit?object_type=team&limit=500")
    assert len(in_a["items"]) == 7

    now = datetime.now(timezone.utc)
    later = (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    earlier = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (await api.ok(root, "GET", f"/api/v1/audit?since={later}"))["items"] == []
    assert len((await api.ok(root, "GET", f"/api/v1/audit?since={earlier}&limit=500"))["items"]) == 9
    assert (await api.ok(root, "GET", f"/api/v1/audit?until={earlier}"))["items"] == []


async def test_bad_filters_are_refused(api, db, example_user):
    root = await example_user("root", admin=True)
    alice = await example_user("alice")
    a = await api.workspace(alice)
    before = await snapshot(db)
    for query in ("limit=0", "limit=501", "limit=ten", "cursor=0", "cursor=-5", "actor=not-a-uuid",
                  "since=yesterday", "since=2025-01-01T00:00:00", "action=member.*.x", "action=%27;DROP",
                  "action=" + "a" * 101, "action=member.*.x", "object_id=", "object_id=" + "x" * 201):
        await api.problem(root, "GET", f"/api/v1/audit?{query}", 400)
        await api.problem(alice, "GET", f"{W}/{a}/audit?{query}", 400)
    await api.problem(alice, "GET", f"{W}/{uuid.uuid4()}/audit", 404, "not-found")
    # An empty window is not an error, just empty.
    empty = await api.ok(root, "GET", "/api/v1/audit?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z")
    assert empty == {"items": [], "next_cursor": None}
    assert await snapshot(db) == before
