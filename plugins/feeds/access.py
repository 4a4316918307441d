"""Who may see which subscription (and so which items): the kernel policy decides.

A personal subscription belongs to its user alone. A workspace subscription is an object
of the workspace (``object_type="feeds.subscription"``): members see it with ``feeds.read``
and change it with ``feeds.manage``, per-object ACLs included (a restricted feed is
invisible to members who are not granted it). Anything the actor may not see is 404, as if
it did not exist; a personal API token must also be scoped for the permission.
"""

from __future__ import annotations

import uuid

import asyncpg

from sygmax.auth import policy
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

OBJECT_TYPE = "feeds.subscription"
READ = "feeds.read"
MANAGE = "feeds.manage"

SUBSCRIPTION_COLUMNS = """
s.id, s.feed_id, s.user_id, s.workspace_id, s.folder_id, s.title AS custom_title, s.annotate, s.created_at,
f.url, f.site_url, f.title AS feed_title, f.last_polled_at, f.last_success_at, f.next_poll_at, f.error_count,
f.last_error, fo.name AS folder
"""
SUBSCRIPTION_FROM = """
feeds_subscription s JOIN feeds_feed f ON f.id = s.feed_id LEFT JOIN feeds_folder fo ON fo.id = s.folder_id
"""


def require_scope(actor: Actor, permission: str) -> None:
    if not actor.has_scope(permission):
        raise Problem(403, "forbidden", f"This API token is not scoped for {permission}", permission=permission)


async def visible_subscriptions(connection: asyncpg.Connection, actor: Actor) -> list[asyncpg.Record]:
    """Every subscription the actor may read: their own and their workspaces' (policy-checked)."""
    if not actor.has_scope(READ):
        return []
    rows = await connection.fetch(
        f"""SELECT {SUBSCRIPTION_COLUMNS} FROM {SUBSCRIPTION_FROM}
            WHERE s.user_id = $1
               OR s.workspace_id IN (SELECT workspace_id FROM sygmax_membership WHERE user_id = $1)
            ORDER BY lower(coalesce(s.title, nullif(f.title, ''), f.url)), s.id""",
        actor.user_id)
    visible = []
    for row in rows:
        if row["user_id"] is not None:
            visible.append(row)
            continue
        found = await policy.access(connection, actor, workspace_id=row["workspace_id"], object_type=OBJECT_TYPE,
                                    object_id=row["id"])
        if found.allows(READ):
            visible.append(row)
    return visible


async def access_subscription(connection: asyncpg.Connection, actor: Actor, subscription_id: uuid.UUID,
                              permission: str = READ) -> asyncpg.Record:
    """The subscription row, or 404 (not visible) / 403 (visible, not allowed)."""
    row = await connection.fetchrow(f"SELECT {SUBSCRIPTION_COLUMNS} FROM {SUBSCRIPTION_FROM} WHERE s.id = $1",
                                    subscription_id)
    if row is None:
        raise Problem(404, "not-found", "No such subscription")
    if row["user_id"] is not None:
        if row["user_id"] != actor.user_id:
            raise Problem(404, "not-found", "No such subscription")
        require_scope(actor, READ)
        if permission != READ:
            require_scope(actor, permission)
        return row
    await policy.require(connection, actor, READ, workspace_id=row["workspace_id"], object_type=OBJECT_TYPE,
                         object_id=row["id"], what="subscription")
    if permission != READ:
        await policy.require(connection, actor, permission, workspace_id=row["workspace_id"],
                             object_type=OBJECT_TYPE, object_id=row["id"], what="subscription")
    return row


async def access_item(connection: asyncpg.Connection, actor: Actor, item_id: uuid.UUID) -> tuple[asyncpg.Record, asyncpg.Record]:
    """(item, one visible subscription of its feed), or 404."""
    item = await connection.fetchrow("SELECT id, seq, feed_id FROM feeds_item WHERE id = $1", item_id)
    if item is None:
        raise Problem(404, "not-found", "No such item")
    for subscription in await visible_subscriptions(connection, actor):
        if subscription["feed_id"] == item["feed_id"]:
            return item, subscription
    raise Problem(404, "not-found", "No such item")


async def access_folder(connection: asyncpg.Connection, actor: Actor, folder_id: uuid.UUID,
                        permission: str = READ) -> asyncpg.Record:
    row = await connection.fetchrow("SELECT id, user_id, workspace_id, name FROM feeds_folder WHERE id = $1",
                                    folder_id)
    if row is None:
        raise Problem(404, "not-found", "No such folder")
    if row["user_id"] is not None:
        if row["user_id"] != actor.user_id:
            raise Problem(404, "not-found", "No such folder")
        require_scope(actor, permission)
        return row
    await policy.require(connection, actor, permission, workspace_id=row["workspace_id"], what="folder")
    return row
