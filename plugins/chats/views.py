"""What the chats module returns: one shape per object, shared by REST, WebSocket frames and events.

A WebSocket ``message`` frame carries exactly the :class:`MessageOut` the REST API returns, so
a client renders messages from either source with one code path. Loading queries live here
too: each returns complete objects (author name, reactions, attachments, pinned flag) in one
round trip, so a page of history costs one query, not one per message.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class ReactionOut(msgspec.Struct):
    emoji: str
    count: int
    user_ids: list[uuid.UUID]


class AttachmentOut(msgspec.Struct):
    id: uuid.UUID
    channel_id: uuid.UUID
    filename: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    has_thumbnail: bool = False
    message_id: uuid.UUID | None = None


class MessageOut(msgspec.Struct):
    id: uuid.UUID
    channel_id: uuid.UUID
    seq: int
    author_id: uuid.UUID | None
    author_name: str | None
    text: str
    html: str
    thread_root_id: uuid.UUID | None
    reply_count: int
    mentions: list[uuid.UUID]
    mention_channel: bool
    attachments: list[AttachmentOut]
    reactions: list[ReactionOut]
    pinned: bool
    version: int
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None


class ChannelOut(msgspec.Struct):
    id: uuid.UUID
    workspace_id: uuid.UUID
    kind: str
    name: str
    topic: str
    private: bool
    last_seq: int
    created_by: uuid.UUID | None
    created_at: datetime
    member: bool = False
    last_read_seq: int = 0
    unread: int = 0
    member_ids: list[uuid.UUID] | None = None


class MemberOut(msgspec.Struct):
    user_id: uuid.UUID
    display_name: str
    last_read_seq: int
    joined_at: datetime


class EditOut(msgspec.Struct):
    text: str
    html: str
    edited_by: uuid.UUID | None
    replaced_at: datetime


class ReadOut(msgspec.Struct):
    channel_id: uuid.UUID
    last_read_seq: int
    unread: int


class UnreadOut(msgspec.Struct):
    channel_id: uuid.UUID
    unread: int
    mentions: int
    last_seq: int
    last_read_seq: int


class SearchHit(msgspec.Struct):
    message: MessageOut
    rank: float
    headline: str


class PresenceOut(msgspec.Struct):
    user_id: uuid.UUID
    status: str


_json = msgspec.json.Decoder(list[ReactionOut])
_attachments = msgspec.json.Decoder(list[AttachmentOut])

# Every column a MessageOut needs; ``m`` is chats_message.
MESSAGE_COLUMNS = """
m.id, m.channel_id, m.seq, m.author_id, u.display_name AS author_name, m.text, m.html, m.thread_root_id,
m.reply_count, m.mentions, m.mention_channel, m.version, m.created_at, m.edited_at, m.deleted_at,
EXISTS (SELECT 1 FROM chats_pin p WHERE p.message_id = m.id) AS pinned,
(SELECT coalesce(json_agg(json_build_object('emoji', r.emoji, 'count', r.n, 'user_ids', r.users)
                          ORDER BY r.first), '[]')
   FROM (SELECT emoji, count(*) AS n, array_agg(user_id ORDER BY created_at) AS users, min(created_at) AS first
           FROM chats_reaction WHERE message_id = m.id GROUP BY emoji) r)::text AS reactions,
(SELECT coalesce(json_agg(json_build_object('id', a.id, 'channel_id', a.channel_id, 'filename', a.filename,
                                            'content_type', a.content_type, 'size', a.size, 'width', a.width,
                                            'height', a.height, 'has_thumbnail', a.thumbnail_key IS NOT NULL,
                                            'message_id', a.message_id) ORDER BY a.created_at), '[]')
   FROM chats_attachment a WHERE a.message_id = m.id)::text AS attachments
"""
MESSAGE_FROM = "chats_message m LEFT JOIN sygmax_user u ON u.id = m.author_id"


def message_from_row(row) -> MessageOut:
    return MessageOut(
        id=row["id"], channel_id=row["channel_id"], seq=row["seq"], author_id=row["author_id"],
        author_name=row["author_name"], text=row["text"], html=row["html"], thread_root_id=row["thread_root_id"],
        reply_count=row["reply_count"], mentions=list(row["mentions"]), mention_channel=row["mention_channel"],
        attachments=_attachments.decode(row["attachments"]), reactions=_json.decode(row["reactions"]),
        pinned=row["pinned"], version=row["version"], created_at=row["created_at"], edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
    )


async def load_message(connection, message_id: uuid.UUID) -> MessageOut | None:
    row = await connection.fetchrow(f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = $1", message_id)
    return message_from_row(row) if row is not None else None


async def load_range(connection, channel_id: uuid.UUID, after: int, upto: int | None, limit: int) -> list[MessageOut]:
    """Messages with ``after < seq <= upto`` (no upper bound when None), oldest first."""
    rows = await connection.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.channel_id = $1 AND m.seq > $2 "
        f"AND ($3::bigint IS NULL OR m.seq <= $3) ORDER BY m.seq LIMIT $4",
        channel_id, after, upto, limit)
    return [message_from_row(row) for row in rows]


async def load_before(connection, channel_id: uuid.UUID, before: int, limit: int) -> list[MessageOut]:
    """The ``limit`` messages just below ``before``, oldest first."""
    rows = await connection.fetch(
        f"SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.channel_id = $1 AND m.seq < $2 "
        f"ORDER BY m.seq DESC LIMIT $3) page ORDER BY seq",
        channel_id, before, limit)
    return [message_from_row(row) for row in rows]


def message_frame(message: MessageOut) -> dict:
    """The ``message`` WebSocket frame: the REST object, with seq repeated on top for cheap routing."""
    return {"type": "message", "channel_id": message.channel_id, "seq": message.seq, "message": message}


def channel_from_row(row, **extra) -> ChannelOut:
    return ChannelOut(id=row["id"], workspace_id=row["workspace_id"], kind=row["kind"], name=row["name"],
                      topic=row["topic"], private=row["private"], last_seq=row["last_seq"],
                      created_by=row["created_by"], created_at=row["created_at"], **extra)


__all__ = [
    "AttachmentOut", "ChannelOut", "EditOut", "MemberOut", "MessageOut", "PresenceOut", "ReactionOut", "ReadOut",
    "SearchHit", "UnreadOut", "channel_from_row", "load_before", "load_message", "load_range", "message_frame",
    "message_from_row",
]
