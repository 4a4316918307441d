"""Notification preferences: GET/PUT /api/v1/users/me/notifications over HTTP against the real
database (defaults, updates, refusals that change nothing, audit rows), and the deliverers'
helper notification_channels()."""

from __future__ import annotations

import pytest

from sygmax.notification_prefs import notification_channels
from sygmax.plugins import NotificationCategory, Plugin, PluginError
from tests import workspace_helpers

api = workspace_helpers.api

URL = "/api/v1/users/me/notifications"
STATE_TABLES = ("sygmax_notification_pref", "sygmax_audit")


async def state(db) -> dict[str, list]:
    out = {}
    for table in STATE_TABLES:
        rows = await db.fetch(f"SELECT * FROM {table}")
        out[table] = sorted(tuple(str(value) for value in row.values()) for row in rows)
    return out


def by_code(body: dict) -> dict[str, dict]:
    return {entry["code"]: entry for entry in body["categories"]}


async def test_defaults_come_from_the_plugins(api, example_user):
    alice = await example_user("alice")
    categories = by_code(await api.ok(alice, "GET", URL))
    assert {"chats.mention", "chats.direct", "feeds.digest"} <= set(categories)
    assert categories["chats.mention"] == {
        "code": "chats.mention", "description": "Someone mentions you in a channel",
        "in_app": True, "email": True, "default_in_app": True, "default_email": True}
    assert (categories["feeds.digest"]["in_app"], categories["feeds.digest"]["email"]) == (False, True)


async def test_update_persists_and_is_audited(api, db, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    body = await api.ok(alice, "PUT", URL, {"categories": {"chats.mention": {"in_app": True, "email": False},
                                                          "feeds.digest": {"in_app": True, "email": True}}})
    assert (by_code(body)["chats.mention"]["email"], by_code(body)["feeds.digest"]["in_app"]) == (False, True)

    again = by_code(await api.ok(alice, "GET", URL))
    assert again["chats.mention"]["email"] is False and again["chats.mention"]["default_email"] is True
    assert again["feeds.digest"] == {**again["feeds.digest"], "in_app": True, "email": True}
    assert again["chats.direct"]["email"] is True  # not named: still the default
    assert by_code(await api.ok(bob, "GET", URL))["chats.mention"]["email"] is True  # only alice's

    rows = await db.fetch("SELECT actor_id, action, object_id, details FROM sygmax_audit "
                          "WHERE action = 'user.notifications.update'")
    assert len(rows) == 1 and rows[0]["actor_id"] == alice.id and rows[0]["object_id"] == str(alice.id)
    assert '"chats.mention"' in rows[0]["details"] and '"feeds.digest"' in rows[0]["details"]

    # Saving what is already in effect changes nothing and records nothing.
    before = await state(db)
    await api.ok(alice, "PUT", URL, {"categories": {"chats.mention": {"in_app": True, "email": False}}})
    assert await state(db) == before


@pytest.mark.parametrize("payload, field", [
    ({"categories": {"chats.nope": {"in_app": True, "email": True}}}, "categories.chats.nope"),
    ({"categories": {"chats.mention": {"in_app": True, "email": True},
                     "other.thing": {"in_app": False, "email": False}}}, "categories.other.thing"),
])
async def test_unknown_category_is_refused_and_changes_nothing(api, db, example_user, payload, field):
    alice = await example_user("alice")
    before = await state(db)
    body = await api.problem(alice, "PUT", URL, 404, "unknown-category", json=payload)
    assert body["field"] == field
    assert await state(db) == before


@pytest.mark.parametrize("payload", [
    {"categories": {"chats.mention": {"in_app": "yes", "email": True}}},
    {"categories": {"chats.mention": {"in_app": True}}},
    {"categories": {"chats.mention": {"in_app": True, "email": False, "push": True}}},
    {"categories": {"chats.mention": True}},
    {"categories": ["chats.mention"]},
    {"categories": {"NOT A CODE": {"in_app": True, "email": True}}},
    {"categories": {}, "extra": 1},
    {},
])
async def test_wrong_types_are_refused_and_change_nothing(api, db, example_user, payload):
    alice = await example_user("alice")
    before = await state(db)
    await api.problem(alice, "PUT", URL, 400, "validation-error", json=payload)
    assert await state(db) == before


async def test_malformed_json_and_unauthenticated(api, db, example_user):
    alice = await example_user("alice")
    before = await state(db)
    await api.problem(alice, "PUT", URL, 400, "malformed-body", content=b'{"categories": {')
    await api.problem(None, "GET", URL, 401, "unauthenticated")
    await api.problem(None, "PUT", URL, 401, "unauthenticated",
                      json={"categories": {"chats.mention": {"in_app": False, "email": False}}})
    assert await state(db) == before


async def test_notification_channels_helper(api, db, example_user):
    alice, bob = await example_user("alice"), await example_user("bob")
    await api.ok(alice, "GET", URL)  # the app (and so the kernel) is built: the plugins' categories are declared
    assert await notification_channels(db, alice.id, "chats.mention") == {"in_app", "email"}
    assert await notification_channels(db, alice.id, "feeds.digest") == {"email"}
    await api.ok(alice, "PUT", URL, {"categories": {"chats.mention": {"in_app": False, "email": False},
                                                   "feeds.digest": {"in_app": True, "email": False}}})
    assert await notification_channels(db, alice.id, "chats.mention") == set()
    assert await notification_channels(db, alice.id, "feeds.digest") == {"in_app"}
    assert await notification_channels(db, bob.id, "chats.mention") == {"in_app", "email"}
    with pytest.raises(KeyError):
        await notification_channels(db, alice.id, "chats.undeclared")


def test_plugins_may_declare_only_their_own_categories():
    with pytest.raises(PluginError):
        Plugin(name="docs", notification_categories=[NotificationCategory("chats.mention", "not ours")])
    with pytest.raises(PluginError):
        NotificationCategory("docs.page", "Pages", default_channels=("sms",))
    assert Plugin(name="docs", notification_categories=[NotificationCategory("docs.page", "Pages")])
