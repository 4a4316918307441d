"""Reads of the chats module, actor first, each checked through the kernel policy."""

from __future__ import annotations

import html
import uuid

from plugins.chats.access import access_channel, access_message, visible_channel_ids
from plugins.chats.runtime import runtime
from plugins.chats.views import (
    MESSAGE_COLUMNS,
    MESSAGE_FROM,
    ChannelOut,
    EditOut,
    MemberOut,
    MessageOut,
    PresenceOut,
    SearchHit,
    UnreadOut,
    channel_from_row,
    load_before,
    load_message,
    load_range,
    message_from_row,
)
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

_CHANNELS_SQL = """
SELECT c.id, c.workspace_id, c.kind, c.name, c.topic, c.private, c.last_seq, c.created_by, c.created_at,
       mb.user_id IS NOT NULL AS member, coalesce(mb.last_read_seq, 0) AS last_read_seq,
       CASE WHEN mb.user_id IS NULL THEN 0 ELSE
         (SELECT count(*) FROM chats_message m WHERE m.channel_id = c.id AND m.seq > mb.last_read_seq
            AND m.deleted_at IS NULL AND m.author_id IS DISTINCT FROM $2) END AS unread,
       CASE WHEN mb.user_id IS NULL THEN 0 ELSE
         (SELECT count(*) FROM chats_message m WHERE m.channel_id = c.id AND m.seq > mb.last_read_seq
            AND m.deleted_at IS NULL AND m.author_id IS DISTINCT FROM $2
            AND ($2 = ANY (m.mentions) OR m.mention_channel OR c.kind <> 'channel')) END AS mentions,
       CASE WHEN c.kind = 'channel' THEN NULL ELSE
         (SELECT array_agg(x.user_id ORDER BY x.user_id::text) FROM chats_member x WHERE x.channel_id = c.id) END
         AS member_ids
FROM chats_channel c LEFT JOIN chats_member mb ON mb.channel_id = c.id AND mb.user_id = $2
WHERE c.id = ANY($1::uuid[])
ORDER BY c.kind, lower(c.name), c.id
"""


async def list_channels(actor: Actor, kernel, workspace_id: uuid.UUID) -> list[ChannelOut]:
    """Every channel of the workspace the actor may read, with membership and unread counts."""
    async with kernel.db.pool.acquire() as connection:
        ids = await visible_channel_ids(connection, actor, workspace_id)
        rows = await connection.fetch(_CHANNELS_SQL, ids, actor.user_id)
    return [channel_from_row(row, member=row["member"], last_read_seq=row["last_read_seq"], unread=row["unread"],
                             member_ids=list(row["member_ids"]) if row["member_ids"] is not None else None)
            for row in rows]


async def get_channel(actor: Actor, kernel, channel_id: uuid.UUID) -> ChannelOut:
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.read")
        row = await connection.fetchrow(_CHANNELS_SQL, [channel_id], actor.user_id)
    return channel_from_row(row, member=row["member"], last_read_seq=row["last_read_seq"], unread=row["unread"],
                            member_ids=list(row["member_ids"]) if row["member_ids"] is not None else None)


async def unread_counts(actor: Actor, kernel, workspace_id: uuid.UUID) -> list[UnreadOut]:
    """Unread and mention counts of the channels the actor is a member of."""
    async with kernel.db.pool.acquire() as connection:
        ids = await visible_channel_ids(connection, actor, workspace_id)
        rows = await connection.fetch(_CHANNELS_SQL, ids, actor.user_id)
    return [UnreadOut(row["id"], row["unread"], row["mentions"], row["last_seq"], row["last_read_seq"])
            for row in rows if row["member"]]


async def list_members(actor: Actor, kernel, channel_id: uuid.UUID) -> list[MemberOut]:
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.read")
        rows = await connection.fetch(
            """SELECT m.user_id, u.display_name, m.last_read_seq, m.joined_at FROM chats_member m
               JOIN sygmax_user u ON u.id = m.user_id WHERE m.channel_id = $1 ORDER BY m.joined_at, m.user_id""",
            channel_id)
    return [MemberOut(row["user_id"], row["display_name"], row["last_read_seq"], row["joined_at"]) for row in rows]


async def list_messages(actor: Actor, kernel, channel_id: uuid.UUID, *, before: int | None, after: int | None,
                        limit: int) -> list[MessageOut]:
    """A page of history in sequence order: the newest ``limit`` below ``before`` (or the newest of
    all), or the oldest ``limit`` above ``after`` (and below ``before`` when both are given)."""
    highest = 2**53
    before = None if before is None else min(max(before, 0), highest)
    after = None if after is None else min(max(after, 0), highest)
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.read")
        if after is not None:
            upto = before - 1 if before is not None else None
            if upto is not None and upto <= after:
                return []
            return await load_range(connection, channel_id, after, upto, limit)
        return await load_before(connection, channel_id, before if before is not None else highest, limit)


async def get_message(actor: Actor, kernel, message_id: uuid.UUID) -> MessageOut:
    async with kernel.db.pool.acquire() as connection:
        await access_message(connection, actor, message_id, "chats.read")
        return await load_message(connection, message_id)


async def message_history(actor: Actor, kernel, message_id: uuid.UUID) -> list[EditOut]:
    """Earlier versions of a message, oldest first (the current text is the message itself)."""
    async with kernel.db.pool.acquire() as connection:
        await access_message(connection, actor, message_id, "chats.read")
        rows = await connection.fetch(
            "SELECT text, html, edited_by, replaced_at FROM chats_message_edit WHERE message_id = $1 ORDER BY id",
            message_id)
    return [EditOut(row["text"], row["html"], row["edited_by"], row["replaced_at"]) for row in rows]


async def thread(actor: Actor, kernel, message_id: uuid.UUID, limit: int) -> list[MessageOut]:
    """The thread's root followed by its replies in sequence order (any message of it names the thread)."""
    async with kernel.db.pool.acquire() as connection:
        row, _ = await access_message(connection, actor, message_id, "chats.read")
        root = row["thread_root_id"] or row["id"]
        rows = await connection.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = $1 OR m.thread_root_id = $1 "
            f"ORDER BY m.seq LIMIT $2", root, limit + 1)
    return [message_from_row(row) for row in rows]


async def pins(actor: Actor, kernel, channel_id: uuid.UUID) -> list[MessageOut]:
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.read")
        rows = await connection.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} JOIN chats_pin pin ON pin.message_id = m.id "
            f"WHERE pin.channel_id = $1 ORDER BY pin.pinned_at DESC", channel_id)
    return [message_from_row(row) for row in rows]


_MARK_START, _MARK_STOP = "\x02", "\x03"


async def search(actor: Actor, kernel, *, q: str, workspace_id: uuid.UUID, channel_id: uuid.UUID | None,
                 limit: int) -> list[SearchHit]:
    """Full-text search over the messages the actor may read: exact words and stemmed words of the
    configured language, ranked, with a highlighted excerpt (HTML-escaped, <mark> around hits)."""
    language = runtime(kernel).settings.search_language
    async with kernel.db.pool.acquire() as connection:
        if channel_id is not None:
            found = await access_channel(connection, actor, channel_id, "chats.read")
            if found.workspace_id != workspace_id:
                raise Problem(404, "not-found", "No such channel", field="channel_id")
            ids = [channel_id]
        else:
            ids = await visible_channel_ids(connection, actor, workspace_id)
        rows = await connection.fetch(
            f"""SELECT {MESSAGE_COLUMNS}, ts_rank(m.search, query.q) AS rank,
                       ts_headline(m.language, m.text, query.q,
                                   'StartSel=' || chr(2) || ', StopSel=' || chr(3)) AS headline
                FROM {MESSAGE_FROM},
                     (SELECT websearch_to_tsquery('simple', $2) || websearch_to_tsquery($3::regconfig, $2) AS q) query
                WHERE m.channel_id = ANY($1::uuid[]) AND m.deleted_at IS NULL AND m.search @@ query.q
                ORDER BY rank DESC, m.created_at DESC LIMIT $4""",
            ids, q, language, limit)
    hits = []
    for row in rows:
        excerpt = html.escape(row["headline"]).replace(_MARK_START, "<mark>").replace(_MARK_STOP, "</mark>")
        hits.append(SearchHit(message_from_row(row), float(row["rank"]), excerpt))
    return hits


async def presence(actor: Actor, kernel, workspace_id: uuid.UUID) -> list[PresenceOut]:
    """Status of every member of a workspace the actor belongs to."""
    async with kernel.db.pool.acquire() as connection:
        await visible_channel_ids(connection, actor, workspace_id)
        rows = await connection.fetch("SELECT user_id FROM sygmax_membership WHERE workspace_id = $1 ORDER BY user_id",
                                      workspace_id)
    chats = runtime(kernel)
    statuses = await chats.presence.statuses([row["user_id"] for row in rows])
    for user_id, status, changed in statuses:
        if changed:  # this read noticed an expiry first: say so, as the heartbeat would have
            await chats.announce_presence(user_id, status)
    return [PresenceOut(user_id, status) for user_id, status, _ in statuses]


__all__ = ["get_channel", "get_message", "list_channels", "list_members", "list_messages", "message_history",
           "pins", "presence", "search", "thread", "unread_counts"]
