"""Fetch a chats object together with the permission check, through the kernel policy.

Every channel is an ACL object ``chats.channel``/<id>. Public channels follow the workspace
roles (plus any grants); private channels and direct conversations are *restricted* objects
whose only readers are the principals granted on them (their members). An actor who may not
see a channel gets 404 ``not-found`` whether or not it exists, so private channels do not
leak; one who sees it but lacks the permission (a viewer posting) gets 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sygmax.auth import policy
from sygmax.auth.policy import Access
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

OBJECT_TYPE = "chats.channel"

_CHANNEL_SQL = """SELECT id, workspace_id, kind, name, topic, private, direct_key, last_seq, created_by, created_at
                  FROM chats_channel WHERE id = $1"""


@dataclass(frozen=True)
class ChannelAccess:
    channel: object  # the asyncpg Record of chats_channel
    access: Access

    @property
    def id(self) -> uuid.UUID:
        return self.channel["id"]

    @property
    def workspace_id(self) -> uuid.UUID:
        return self.channel["workspace_id"]


async def access_channel(connection, actor: Actor, channel_id: uuid.UUID, permission: str,
                         *, lock: bool = False) -> ChannelAccess:
    """The channel if ``actor`` holds ``permission`` on it; else 404 (cannot see it) or 403."""
    row = await connection.fetchrow(_CHANNEL_SQL + (" FOR UPDATE" if lock else ""), channel_id)
    if row is None:
        raise Problem(404, "not-found", "No such channel")
    found = await policy.require(connection, actor, permission, workspace_id=row["workspace_id"],
                                 object_type=OBJECT_TYPE, object_id=str(channel_id), what="channel")
    return ChannelAccess(row, found)


async def access_message(connection, actor: Actor, message_id: uuid.UUID, permission: str):
    """(message row, channel access) if ``actor`` holds ``permission`` on the message's channel."""
    row = await connection.fetchrow(
        "SELECT id, channel_id, workspace_id, seq, author_id, thread_root_id, text, html, deleted_at, version "
        "FROM chats_message WHERE id = $1", message_id)
    if row is None:
        raise Problem(404, "not-found", "No such message")
    try:
        channel = await access_channel(connection, actor, row["channel_id"], permission)
    except Problem as exc:
        if exc.status_code == 404:
            raise Problem(404, "not-found", "No such message") from None
        raise
    return row, channel


async def access_attachment(connection, actor: Actor, attachment_id: uuid.UUID):
    """An attachment the actor may download: chats.read on its channel, and, until a message
    carries it, only its uploader may see it."""
    row = await connection.fetchrow(
        "SELECT id, workspace_id, channel_id, uploader_id, message_id, storage_key, filename, content_type, size, "
        "width, height, thumbnail_key FROM chats_attachment WHERE id = $1", attachment_id)
    if row is None or (row["message_id"] is None and row["uploader_id"] != actor.user_id):
        raise Problem(404, "not-found", "No such attachment")
    try:
        await access_channel(connection, actor, row["channel_id"], "chats.read")
    except Problem as exc:
        if exc.status_code == 404:
            raise Problem(404, "not-found", "No such attachment") from None
        raise
    return row


# Channels of a workspace the actor may read, in one query. It applies the policy's rules
# (docs in sygmax/auth/policy.py) to every channel at once: a channel that is not restricted
# is readable when the member's role holds chats.read; any channel is readable through a
# grant of chats.read to the member, one of their teams, their custom role or built-in role.
_VISIBLE_SQL = """
SELECT c.id
FROM chats_channel c
LEFT JOIN sygmax_acl_object o ON o.workspace_id = c.workspace_id AND o.object_type = 'chats.channel'
                              AND o.object_id = c.id::text
WHERE c.workspace_id = $1 AND (
    ($3::boolean AND NOT coalesce(o.restricted, false))
    OR EXISTS (SELECT 1 FROM sygmax_acl_grant g
               WHERE g.workspace_id = $1 AND g.object_type = 'chats.channel' AND g.object_id = c.id::text
                 AND 'chats.read' = ANY (g.permissions)
                 AND (g.user_id = $2 OR g.role = $4 OR g.role_id = $5
                      OR g.team_id IN (SELECT tm.team_id FROM sygmax_team_member tm
                                       WHERE tm.workspace_id = $1 AND tm.user_id = $2))))
"""


async def visible_channel_ids(connection, actor: Actor, workspace_id: uuid.UUID) -> list[uuid.UUID]:
    """Ids of the workspace's channels ``actor`` may read; 404 when not a member of the workspace."""
    found = await policy.access(connection, actor, workspace_id=workspace_id)
    if not found.visible:
        raise Problem(404, "not-found", "No such workspace")
    if not policy.scope_allows(actor.scopes, "chats.read"):
        raise Problem(403, "forbidden", "This API token is not scoped for chats.read", permission="chats.read")
    rows = await connection.fetch(_VISIBLE_SQL, workspace_id, actor.user_id, "chats.read" in found.permissions,
                                  found.role, found.role_id)
    return [row["id"] for row in rows]


__all__ = [
    "OBJECT_TYPE",
    "ChannelAccess",
    "access_attachment",
    "access_channel",
    "access_message",
    "visible_channel_ids",
]
