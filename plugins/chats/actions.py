"""Every write of the chats module: ``check_<verb>`` validates and authorises, ``do_<verb>`` performs.

Consistency rule for messages: the channel's sequence number is taken with
``UPDATE chats_channel SET last_seq = last_seq + 1 ... RETURNING last_seq`` in the transaction
that inserts the message. The row lock serialises posters of one channel, so when seq N
commits every seq below N has committed (a rolled-back post rolls its number back too: no
holes). Only after COMMIT is the message fanned out (Redis pub/sub) and published on the
event bus, so no client ever sees a message that could still vanish.

Posting a message is not written to the audit log: the message row is its own durable record
and the audit chain's global lock would serialise all chat traffic of the installation.
Channel, membership and moderation changes (deleting someone else's message) are audited.
"""

from __future__ import annotations

import re
import uuid

import asyncpg
import structlog

from plugins.chats import render
from plugins.chats.access import OBJECT_TYPE, ChannelAccess, access_channel, access_message
from plugins.chats.runtime import runtime
from plugins.chats.views import (
    ChannelOut,
    MessageOut,
    ReactionOut,
    ReadOut,
    channel_from_row,
    load_message,
    message_frame,
)
from sygmax.auth import audit, policy
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem
from sygmax.events.contracts import (
    ChatAttachmentRef,
    ChatMessageDeleted,
    ChatMessageEdited,
    ChatMessagePosted,
)
from sygmax.ratelimit import rate_limited

log = structlog.get_logger("sygmax.chats")

# Grants on restricted (private) channels: members read and post; managers also manage the
# channel and its ACL (the kernel requires one acl.manage grant on every restricted object).
MEMBER_GRANT = ["chats.post", "chats.read"]
MANAGER_GRANT = ["acl.manage", "chats.manage", "chats.post", "chats.read"]
# On public channels the creator is granted management on top of what the role gives.
CREATOR_GRANT = ["acl.manage", "chats.manage"]
MAX_GROUP = 16
# White space spelled out rather than \s, whose meaning differs between Python (our validation)
# and the JSON-schema tools that read these patterns from the OpenAPI document.
_SPACE = r"\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMOJI_PATTERN = rf"^[^<>&\"'\x00-\x1f\x7f{_SPACE}]{{1,64}}$"
_EMOJI = re.compile(EMOJI_PATTERN)
# Message text: something that is not white space, and no control characters but tab, newline
# and carriage return (PostgreSQL refuses NUL; the others only ever hide or spoof content).
_TEXT_CHAR = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
TEXT_PATTERN = rf"^{_TEXT_CHAR}*[^\x00-\x1f\x7f{_SPACE}]{_TEXT_CHAR}*$"
TEXT_CHARS_PATTERN = rf"^{_TEXT_CHAR}*$"  # the same, empty or white space allowed
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029<>]")


# ---------------------------------------------------------------------------------------------
# Channels


async def _grant(connection, workspace_id: uuid.UUID, channel_id: uuid.UUID, user_id: uuid.UUID,
                 permissions: list[str], by: uuid.UUID | None) -> None:
    """Give a user permissions on the channel (replacing what they had)."""
    await connection.execute(
        """INSERT INTO sygmax_acl_grant (workspace_id, object_type, object_id, principal_kind, user_id, permissions,
                                         created_by)
           VALUES ($1, $2, $3, 'user', $4, $5, $6)
           ON CONFLICT (workspace_id, object_type, object_id, principal_kind,
                        coalesce(user_id, team_id, role_id, '00000000-0000-0000-0000-000000000000'::uuid),
                        coalesce(role, ''))
           DO UPDATE SET permissions = (SELECT array_agg(DISTINCT p ORDER BY p)
                                        FROM unnest(sygmax_acl_grant.permissions || EXCLUDED.permissions) p)""",
        workspace_id, OBJECT_TYPE, str(channel_id), user_id, permissions, by)


async def _restrict(connection, workspace_id: uuid.UUID, channel_id: uuid.UUID, restricted: bool) -> None:
    await connection.execute(
        """INSERT INTO sygmax_acl_object (workspace_id, object_type, object_id, restricted) VALUES ($1, $2, $3, $4)
           ON CONFLICT (workspace_id, object_type, object_id) DO UPDATE SET restricted = $4, updated_at = now()""",
        workspace_id, OBJECT_TYPE, str(channel_id), restricted)


async def _workspace_members(connection, workspace_id: uuid.UUID, user_ids: list[uuid.UUID]) -> dict:
    rows = await connection.fetch(
        """SELECT u.id, u.display_name FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id
           WHERE m.workspace_id = $1 AND m.user_id = ANY($2::uuid[]) AND u.is_active""",
        workspace_id, user_ids)
    return {row["id"]: row["display_name"] for row in rows}


async def check_create_channel(actor: Actor, kernel, *, workspace_id: uuid.UUID, name: str, private: bool,
                               topic: str = "", source: Source | None = None) -> ChannelOut:
    _check_name("name", name)
    _check_name("topic", topic)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await policy.require(connection, actor, "chats.create", workspace_id=workspace_id, what="workspace")
        channel_id = uuid.uuid4()
        try:
            async with connection.transaction():
                row = await connection.fetchrow(
                    """INSERT INTO chats_channel (id, workspace_id, kind, name, topic, private, created_by)
                       VALUES ($1, $2, 'channel', $3, $4, $5, $6)
                       RETURNING id, workspace_id, kind, name, topic, private, last_seq, created_by, created_at""",
                    channel_id, workspace_id, name, topic, private, actor.user_id)
        except asyncpg.UniqueViolationError:
            raise Problem(409, "channel-exists", f"A channel named {name!r} already exists in this workspace",
                          field="name") from None
        await connection.execute(
            "INSERT INTO chats_member (channel_id, workspace_id, user_id) VALUES ($1, $2, $3)",
            channel_id, workspace_id, actor.user_id)
        await _restrict(connection, workspace_id, channel_id, private)
        await _grant(connection, workspace_id, channel_id, actor.user_id,
                     MANAGER_GRANT if private else CREATOR_GRANT, actor.user_id)
        await audit.record(connection, actor_id=actor.user_id, action="chats.channel.create", object_type=OBJECT_TYPE,
                           object_id=channel_id, workspace_id=workspace_id, source=source,
                           details={"name": name, "private": private})
    return channel_from_row(row, member=True)


async def check_update_channel(actor: Actor, kernel, channel_id: uuid.UUID, *, name: str | None, topic: str | None,
                               source: Source | None = None) -> ChannelOut:
    _check_name("name", name)
    _check_name("topic", topic)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        found = await access_channel(connection, actor, channel_id, "chats.manage", lock=True)
        if found.channel["kind"] != "channel" and name is not None:
            raise Problem(409, "direct-conversation", "Direct conversations have no name to change", field="name")
        try:
            async with connection.transaction():
                row = await connection.fetchrow(
                    """UPDATE chats_channel SET name = coalesce($2, name), topic = coalesce($3, topic) WHERE id = $1
                       RETURNING id, workspace_id, kind, name, topic, private, last_seq, created_by, created_at""",
                    channel_id, name, topic)
        except asyncpg.UniqueViolationError:
            raise Problem(409, "channel-exists", f"A channel named {name!r} already exists in this workspace",
                          field="name") from None
        await audit.record(connection, actor_id=actor.user_id, action="chats.channel.update", object_type=OBJECT_TYPE,
                           object_id=channel_id, workspace_id=found.workspace_id, source=source,
                           details={"name": name, "topic": topic})
    channel = channel_from_row(row)
    await runtime(kernel).publish(channel_id, {"type": "channel", "channel_id": channel_id, "channel": channel})
    return channel


async def check_delete_channel(actor: Actor, kernel, channel_id: uuid.UUID, source: Source | None = None) -> None:
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        found = await access_channel(connection, actor, channel_id, "chats.manage", lock=True)
        keys = await connection.fetch(
            "SELECT storage_key, thumbnail_key FROM chats_attachment WHERE channel_id = $1", channel_id)
        await connection.execute("DELETE FROM chats_channel WHERE id = $1", channel_id)
        await policy.forget_object(connection, workspace_id=found.workspace_id, object_type=OBJECT_TYPE,
                                   object_id=str(channel_id))
        await audit.record(connection, actor_id=actor.user_id, action="chats.channel.delete", object_type=OBJECT_TYPE,
                           object_id=channel_id, workspace_id=found.workspace_id, source=source,
                           details={"name": found.channel["name"]})
    await _delete_objects(kernel, keys)
    await runtime(kernel).publish(channel_id, {"type": "channel_deleted", "channel_id": channel_id})


async def _delete_objects(kernel, rows) -> None:
    for row in rows:
        for key in (row["storage_key"], row["thumbnail_key"]):
            if key:
                try:
                    await kernel.storage.delete(key)
                except Exception as exc:  # noqa: BLE001 - the rows are gone; an orphan object is only space
                    log.warning("chats_object_delete_failed", key=key, error=str(exc))


async def check_add_member(actor: Actor, kernel, channel_id: uuid.UUID, user_id: uuid.UUID,
                           source: Source | None = None) -> bool:
    """Add a member; joining a public channel yourself needs chats.read, adding others chats.manage.
    Returns whether the user was newly added."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        # Joining yourself: whoever may read a public channel may join it; adding others is managing.
        found = await access_channel(connection, actor, channel_id, "chats.read", lock=True)
        if found.channel["kind"] != "channel":
            raise Problem(409, "direct-conversation", "Direct conversations keep the people they were opened with")
        if user_id != actor.user_id:
            policy.deny(found.access, "chats.manage", what="channel")
        if not await _workspace_members(connection, found.workspace_id, [user_id]):
            raise Problem(404, "not-found", "No such user in this workspace", field="user_id")
        status = await connection.execute(
            "INSERT INTO chats_member (channel_id, workspace_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            channel_id, found.workspace_id, user_id)
        added = status.endswith(" 1")
        if found.channel["private"]:
            await _grant(connection, found.workspace_id, channel_id, user_id, MEMBER_GRANT, actor.user_id)
        if added:
            await audit.record(connection, actor_id=actor.user_id, action="chats.member.add", object_type=OBJECT_TYPE,
                               object_id=channel_id, workspace_id=found.workspace_id, source=source,
                               details={"user_id": str(user_id)})
    if added:
        await runtime(kernel).publish(channel_id, {"type": "member", "channel_id": channel_id, "user_id": user_id,
                                                   "added": True})
    return added


async def check_remove_member(actor: Actor, kernel, channel_id: uuid.UUID, user_id: uuid.UUID,
                              source: Source | None = None) -> None:
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        found = await access_channel(connection, actor, channel_id, "chats.read", lock=True)
        if found.channel["kind"] != "channel":
            raise Problem(409, "direct-conversation", "Direct conversations keep the people they were opened with")
        if user_id != actor.user_id:  # leaving is yours to do; removing someone else is managing
            policy.deny(found.access, "chats.manage", what="channel")
        removed = await connection.execute(
            "DELETE FROM chats_member WHERE channel_id = $1 AND user_id = $2", channel_id, user_id)
        if removed.endswith(" 0"):
            raise Problem(404, "not-found", "That user is not a member of this channel", field="user_id")
        if found.channel["private"]:
            await connection.execute(
                """DELETE FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3
                   AND user_id = $4""", found.workspace_id, OBJECT_TYPE, str(channel_id), user_id)
            managers = await connection.fetchval(
                """SELECT count(*) FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2
                   AND object_id = $3 AND 'acl.manage' = ANY (permissions)""",
                found.workspace_id, OBJECT_TYPE, str(channel_id))
            if managers == 0:
                raise Problem(409, "last-manager", "The last manager cannot leave a private channel; "
                                                   "make someone else a manager first, or delete the channel")
        await audit.record(connection, actor_id=actor.user_id, action="chats.member.remove", object_type=OBJECT_TYPE,
                           object_id=channel_id, workspace_id=found.workspace_id, source=source,
                           details={"user_id": str(user_id)})
    await runtime(kernel).publish(channel_id, {"type": "member", "channel_id": channel_id, "user_id": user_id,
                                               "added": False})


async def check_open_direct(actor: Actor, kernel, *, workspace_id: uuid.UUID, user_ids: list[uuid.UUID],
                            source: Source | None = None) -> tuple[ChannelOut, bool]:
    """Open (or find) the direct conversation of the actor and ``user_ids``; returns (channel, created)."""
    people = sorted({actor.user_id, *user_ids}, key=str)
    if len(people) > MAX_GROUP:
        raise Problem(400, "validation-error", f"user_ids: a group conversation holds at most {MAX_GROUP} people",
                      field="user_ids")
    key = ",".join(str(person) for person in people)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await policy.require(connection, actor, "chats.post", workspace_id=workspace_id, what="workspace")
        names = await _workspace_members(connection, workspace_id, people)
        missing = [person for person in people if person not in names]
        if missing:
            raise Problem(404, "not-found", "No such user in this workspace", field="user_ids",
                          unknown=[str(person) for person in missing])
        # Serialise openers of the same conversation so two requests cannot both create it.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"chats.direct:{workspace_id}:{key}")
        row = await connection.fetchrow(
            """SELECT id, workspace_id, kind, name, topic, private, last_seq, created_by, created_at FROM chats_channel
               WHERE workspace_id = $1 AND direct_key = $2""", workspace_id, key)
        created = row is None
        if created:
            channel_id = uuid.uuid4()
            name = ", ".join(sorted(names.values()))[:200]
            row = await connection.fetchrow(
                """INSERT INTO chats_channel (id, workspace_id, kind, name, private, direct_key, created_by)
                   VALUES ($1, $2, $3, $4, true, $5, $6)
                   RETURNING id, workspace_id, kind, name, topic, private, last_seq, created_by, created_at""",
                channel_id, workspace_id, "direct" if len(people) <= 2 else "group", name, key, actor.user_id)
            await _restrict(connection, workspace_id, channel_id, True)
            for person in people:
                await connection.execute(
                    "INSERT INTO chats_member (channel_id, workspace_id, user_id) VALUES ($1, $2, $3)",
                    channel_id, workspace_id, person)
                # Everyone holds acl.manage so the kernel's "restricted objects stay manageable" holds.
                await _grant(connection, workspace_id, channel_id, person, ["acl.manage", *MEMBER_GRANT],
                             actor.user_id)
            await audit.record(connection, actor_id=actor.user_id, action="chats.direct.open", object_type=OBJECT_TYPE,
                               object_id=channel_id, workspace_id=workspace_id, source=source,
                               details={"members": [str(person) for person in people]})
        member = await connection.fetchval(
            "SELECT last_read_seq FROM chats_member WHERE channel_id = $1 AND user_id = $2", row["id"], actor.user_id)
    return channel_from_row(row, member=True, last_read_seq=member or 0, member_ids=people), created


# ---------------------------------------------------------------------------------------------
# Messages


def _check_size(kernel, text: str) -> None:
    limit = runtime(kernel).settings.max_message_chars
    if len(text) > limit:
        raise Problem(413, "message-too-large", f"A message may hold at most {limit} characters; this one has "
                                                f"{len(text)}", field="text", limit=limit)
    if _TEXT_CONTROL.search(text):
        raise Problem(400, "validation-error", "text: no control characters but tab and newline", field="text")


def _check_name(field: str, value: str | None) -> None:
    # The route's schema says the same, except that its '$' lets one trailing newline through.
    if value is not None and _NAME_CONTROL.search(value):
        raise Problem(400, "validation-error", f"{field}: plain text only: no control characters, no < or >",
                      field=field)


async def _resolve_mentions(connection, workspace_id: uuid.UUID, names: set[str]) -> dict[str, str]:
    """Mention names -> user ids among active workspace members: a whole address, or a local part
    that names exactly one member."""
    if not names:
        return {}
    rows = await connection.fetch(
        """SELECT u.id, lower(u.email) AS email FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id
           WHERE m.workspace_id = $1 AND u.is_active
             AND (lower(u.email) = ANY($2::text[]) OR lower(split_part(u.email, '@', 1)) = ANY($2::text[]))""",
        workspace_id, list(names))
    resolved: dict[str, str] = {}
    local_counts: dict[str, list] = {}
    for row in rows:
        if row["email"] in names:
            resolved[row["email"]] = str(row["id"])
        local_counts.setdefault(row["email"].split("@", 1)[0], []).append(row["id"])
    for local, ids in local_counts.items():
        if local in names and len(ids) == 1:
            resolved[local] = str(ids[0])
    return resolved


async def _render(connection, workspace_id: uuid.UUID, text: str) -> tuple[str, list[uuid.UUID], bool]:
    parsed = render.parse(text)
    resolved = await _resolve_mentions(connection, workspace_id, parsed.names)
    html = render.render(parsed, resolved)
    mentions = sorted({uuid.UUID(value) for value in resolved.values()}, key=str)
    return html, mentions, parsed.channel


async def _rate_limit(kernel, actor: Actor) -> None:
    chats = runtime(kernel)
    limit = chats.settings.messages_per_minute
    allowed, retry_after, _ = await chats.limiter.hit(f"post:{actor.user_id}", limit)
    if not allowed:
        raise rate_limited(limit, retry_after, "chat messages per user")


async def check_post_message(actor: Actor, kernel, channel_id: uuid.UUID, *, text: str,
                             thread_root_id: uuid.UUID | None = None, attachment_ids: list[uuid.UUID] | None = None,
                             idempotency_key: str | None = None) -> tuple[MessageOut, bool]:
    """Post a message; returns (message, created). A repeated Idempotency-Key returns the first
    message with created False and takes no new sequence number."""
    _check_size(kernel, text)
    attachment_ids = list(dict.fromkeys(attachment_ids or ()))
    if not text.strip() and not attachment_ids:
        raise Problem(400, "validation-error", "text: a message needs text or an attachment", field="text")
    if idempotency_key is not None:
        existing = await _by_idempotency_key(kernel, actor, channel_id, idempotency_key)
        if existing is not None:
            return existing, False
    await _rate_limit(kernel, actor)
    try:
        message, found, keys = await do_post_message(actor, kernel, channel_id, text=text, thread_root_id=thread_root_id,
                                               attachment_ids=attachment_ids, idempotency_key=idempotency_key)
    except asyncpg.UniqueViolationError:
        # A concurrent request with the same Idempotency-Key won the race: answer with its message.
        existing = await _by_idempotency_key(kernel, actor, channel_id, idempotency_key)
        if existing is None:
            raise
        return existing, False
    await _after_post(kernel, actor, found, message, keys)
    return message, True


async def _by_idempotency_key(kernel, actor: Actor, channel_id: uuid.UUID, key: str | None) -> MessageOut | None:
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.post")
        message_id = await connection.fetchval(
            "SELECT id FROM chats_message WHERE channel_id = $1 AND author_id = $2 AND idempotency_key = $3",
            channel_id, actor.user_id, key)
        return await load_message(connection, message_id) if message_id is not None else None


async def do_post_message(actor: Actor, kernel, channel_id: uuid.UUID, *, text: str,
                          thread_root_id: uuid.UUID | None, attachment_ids: list[uuid.UUID],
                          idempotency_key: str | None) -> tuple[MessageOut, ChannelAccess, dict]:
    language = runtime(kernel).settings.search_language
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        found = await access_channel(connection, actor, channel_id, "chats.post")
        if thread_root_id is not None:
            root = await connection.fetchrow(
                "SELECT id, thread_root_id FROM chats_message WHERE id = $1 AND channel_id = $2",
                thread_root_id, channel_id)
            if root is None:
                raise Problem(404, "not-found", "No such message in this channel to reply to",
                              field="thread_root_id")
            thread_root_id = root["thread_root_id"] or root["id"]  # replies to a reply join its thread
        # Rendering before taking the sequence number keeps the channel row locked for less time.
        html, mentions, mention_channel = await _render(connection, found.workspace_id, text)
        seq = await connection.fetchval(
            "UPDATE chats_channel SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq", channel_id)
        message_id = uuid.uuid4()
        await connection.execute(
            """INSERT INTO chats_message (id, channel_id, workspace_id, seq, author_id, thread_root_id, text, html,
                                          mentions, mention_channel, language, idempotency_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::regconfig, $12)""",
            message_id, channel_id, found.workspace_id, seq, actor.user_id, thread_root_id, text, html,
            mentions, mention_channel, language, idempotency_key)
        keys: dict[uuid.UUID, str] = {}
        if attachment_ids:
            linked = await connection.fetch(
                """UPDATE chats_attachment SET message_id = $1 WHERE id = ANY($2::uuid[]) AND uploader_id = $3
                   AND channel_id = $4 AND message_id IS NULL RETURNING id, storage_key""",
                message_id, attachment_ids, actor.user_id, channel_id)
            if len(linked) != len(attachment_ids):
                missing = sorted(set(map(str, attachment_ids)) - {str(row["id"]) for row in linked})
                raise Problem(404, "not-found", "No such unsent attachment of yours in this channel",
                              field="attachment_ids", unknown=missing)
            keys = {row["id"]: row["storage_key"] for row in linked}
        if thread_root_id is not None:
            await connection.execute(
                "UPDATE chats_message SET reply_count = reply_count + 1 WHERE id = $1", thread_root_id)
        # Your own message is read.
        await connection.execute(
            "UPDATE chats_member SET last_read_seq = $3 WHERE channel_id = $1 AND user_id = $2",
            channel_id, actor.user_id, seq)
        message = await load_message(connection, message_id)
    return message, found, keys


async def _after_post(kernel, actor: Actor, found: ChannelAccess, message: MessageOut, keys: dict) -> None:
    chats = runtime(kernel)
    await chats.publish(message.channel_id, message_frame(message))
    await chats.publish_event(ChatMessagePosted(
        message_id=message.id, channel_id=message.channel_id, workspace_id=found.workspace_id,
        author_id=actor.user_id, seq=message.seq, text=message.text, thread_root_id=message.thread_root_id,
        mentioned_user_ids=message.mentions, mention_channel=message.mention_channel,
        channel_kind=found.channel["kind"], channel_name=found.channel["name"],
        author_name=actor.display_name,
        attachments=[ChatAttachmentRef(attachment_id=a.id, storage_key=keys[a.id], filename=a.filename,
                                       content_type=a.content_type, size=a.size) for a in message.attachments],
    ))


async def check_edit_message(actor: Actor, kernel, message_id: uuid.UUID, text: str) -> MessageOut:
    _check_size(kernel, text)
    if not text.strip():
        raise Problem(400, "validation-error", "text: an edit cannot empty a message; delete it instead", field="text")
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row, found = await access_message(connection, actor, message_id, "chats.post")
        row = await connection.fetchrow(
            "SELECT author_id, text, html, deleted_at FROM chats_message WHERE id = $1 FOR UPDATE", message_id)
        if row["author_id"] != actor.user_id:
            raise Problem(403, "forbidden", "Only the author can edit a message")
        if row["deleted_at"] is not None:
            raise Problem(409, "message-deleted", "A deleted message cannot be edited")
        if row["text"] == text:
            return await load_message(connection, message_id)
        html, mentions, mention_channel = await _render(connection, found.workspace_id, text)
        await connection.execute(
            "INSERT INTO chats_message_edit (message_id, text, html, edited_by) VALUES ($1, $2, $3, $4)",
            message_id, row["text"], row["html"], actor.user_id)
        await connection.execute(
            """UPDATE chats_message SET text = $2, html = $3, mentions = $4, mention_channel = $5, edited_at = now(),
               version = version + 1 WHERE id = $1""", message_id, text, html, mentions, mention_channel)
        message = await load_message(connection, message_id)
    chats = runtime(kernel)
    await chats.publish(message.channel_id, {"type": "edit", "channel_id": message.channel_id, "message": message})
    await chats.publish_event(ChatMessageEdited(message_id=message_id, channel_id=message.channel_id,
                                                workspace_id=found.workspace_id, editor_id=actor.user_id, text=text))
    return message


async def check_delete_message(actor: Actor, kernel, message_id: uuid.UUID, source: Source | None = None) -> None:
    """Soft delete: the row keeps its place in the sequence; its content, history, reactions,
    pins and attachments are removed. The author may delete; so may holders of chats.manage."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row, found = await access_message(connection, actor, message_id, "chats.read")
        if row["deleted_at"] is not None:
            raise Problem(404, "not-found", "No such message")
        moderated = row["author_id"] != actor.user_id
        if moderated:
            policy.deny(found.access, "chats.manage", what="channel")
        keys = await connection.fetch(
            "SELECT storage_key, thumbnail_key FROM chats_attachment WHERE message_id = $1", message_id)
        await connection.execute("DELETE FROM chats_attachment WHERE message_id = $1", message_id)
        await connection.execute("DELETE FROM chats_message_edit WHERE message_id = $1", message_id)
        await connection.execute("DELETE FROM chats_reaction WHERE message_id = $1", message_id)
        await connection.execute("DELETE FROM chats_pin WHERE message_id = $1", message_id)
        version = await connection.fetchval(
            """UPDATE chats_message SET text = '', html = '', mentions = '{}', mention_channel = false,
                   deleted_at = now(), version = version + 1 WHERE id = $1 RETURNING version""", message_id)
        if moderated:
            await audit.record(connection, actor_id=actor.user_id, action="chats.message.delete",
                               object_type="chats.message", object_id=message_id,
                               workspace_id=found.workspace_id, source=source,
                               details={"channel_id": str(found.id), "author_id": str(row["author_id"])})
    await _delete_objects(kernel, keys)
    chats = runtime(kernel)
    await chats.publish(found.id, {"type": "delete", "channel_id": found.id, "message_id": message_id,
                                   "seq": row["seq"], "version": version})
    await chats.publish_event(ChatMessageDeleted(message_id=message_id, channel_id=found.id,
                                                 workspace_id=found.workspace_id))


def check_emoji(emoji: str) -> str:
    if not _EMOJI.match(emoji):
        raise Problem(400, "validation-error", "emoji: 1-64 characters, no spaces, quotes, <, > or &", field="emoji")
    return emoji


async def check_react(actor: Actor, kernel, message_id: uuid.UUID, emoji: str, add: bool) -> list[ReactionOut]:
    check_emoji(emoji)  # the routes' schemas say the same; this guards other callers (GraphQL, automations)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row, found = await access_message(connection, actor, message_id, "chats.post")
        if row["deleted_at"] is not None:
            raise Problem(409, "message-deleted", "A deleted message takes no reactions")
        if add:
            status = await connection.execute(
                "INSERT INTO chats_reaction (message_id, user_id, emoji) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                message_id, actor.user_id, emoji)
        else:
            status = await connection.execute(
                "DELETE FROM chats_reaction WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
                message_id, actor.user_id, emoji)
            if status.endswith(" 0"):
                raise Problem(404, "not-found", "You have not reacted with that emoji", field="emoji")
        changed = status.endswith(" 1")
        version = row["version"]
        if changed:
            version = await connection.fetchval(
                "UPDATE chats_message SET version = version + 1 WHERE id = $1 RETURNING version", message_id)
        message = await load_message(connection, message_id)
    if changed:
        await runtime(kernel).publish(found.id, {
            "type": "reaction", "channel_id": found.id, "message_id": message_id, "user_id": actor.user_id,
            "emoji": emoji, "added": add, "reactions": message.reactions, "version": version})
    return message.reactions


async def check_pin(actor: Actor, kernel, message_id: uuid.UUID, pin: bool) -> None:
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row, found = await access_message(connection, actor, message_id, "chats.post")
        if row["deleted_at"] is not None:
            raise Problem(409, "message-deleted", "A deleted message cannot be pinned")
        if pin:
            status = await connection.execute(
                "INSERT INTO chats_pin (channel_id, message_id, pinned_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                found.id, message_id, actor.user_id)
        else:
            status = await connection.execute(
                "DELETE FROM chats_pin WHERE channel_id = $1 AND message_id = $2", found.id, message_id)
            if status.endswith(" 0"):
                raise Problem(404, "not-found", "That message is not pinned")
    if status.endswith(" 1"):
        await runtime(kernel).publish(found.id, {"type": "pin", "channel_id": found.id, "message_id": message_id,
                                                 "pinned": pin, "user_id": actor.user_id})


async def check_mark_read(actor: Actor, kernel, channel_id: uuid.UUID, seq: int) -> ReadOut:
    """Move the actor's read marker forward to ``seq`` (it never moves back)."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        found = await access_channel(connection, actor, channel_id, "chats.read")
        if seq > found.channel["last_seq"]:
            raise Problem(422, "seq-out-of-range", f"seq: this channel's last message is "
                                                   f"{found.channel['last_seq']}", field="seq")
        marker = await connection.fetchval(
            """UPDATE chats_member SET last_read_seq = greatest(last_read_seq, $3)
               WHERE channel_id = $1 AND user_id = $2 RETURNING last_read_seq""", channel_id, actor.user_id, seq)
        if marker is None:
            raise Problem(409, "not-a-member", "Join the channel to keep a read marker in it")
        unread = await connection.fetchval(
            """SELECT count(*) FROM chats_message WHERE channel_id = $1 AND seq > $2 AND deleted_at IS NULL
               AND author_id IS DISTINCT FROM $3""", channel_id, marker, actor.user_id)
    if found.channel["kind"] != "channel":
        # Live read receipts only in direct and group conversations: in a channel every reader's
        # marker would go to every member, N*N frames per message; there GET .../members says it.
        await runtime(kernel).publish(channel_id, {"type": "read", "channel_id": channel_id,
                                                   "user_id": actor.user_id, "seq": marker})
    return ReadOut(channel_id, marker, unread)


async def check_typing(actor: Actor, kernel, channel_id: uuid.UUID) -> None:
    async with kernel.db.pool.acquire() as connection:
        await access_channel(connection, actor, channel_id, "chats.post")
    await runtime(kernel).publish(channel_id, {"type": "typing", "channel_id": channel_id, "user_id": actor.user_id,
                                               "display_name": actor.display_name})


__all__ = [
    "EMOJI_PATTERN", "TEXT_CHARS_PATTERN", "TEXT_PATTERN", "check_add_member", "check_create_channel", "check_delete_channel", "check_delete_message",
    "check_edit_message", "check_emoji", "check_mark_read", "check_open_direct", "check_pin", "check_post_message",
    "check_react", "check_remove_member", "check_typing", "check_update_channel", "do_post_message",
]
