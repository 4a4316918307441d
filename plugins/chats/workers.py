"""Event consumers of the chats module (run by the worker profile).

``notify``: for each posted message, ask the notifications module (NotificationRequested on
the bus) to tell the people it concerns who are offline: mentioned users, everyone in the
channel for @channel, and the other participants of a direct or group conversation. Offline
means no live connection in the presence registry. A recipient is checked against the kernel
policy first, so a mention never leaks a private channel to someone who cannot read it.
Running here rather than in the request keeps presence look-ups off the posting path, and the
bus retries it if Redis or the database blinks.
"""

from __future__ import annotations

from plugins.chats.runtime import runtime
from sygmax.auth import policy
from sygmax.auth.tokens import Actor
from sygmax.events.contracts import ChatMessagePosted, NotificationRequested
from sygmax.plugins import ConsumerSpec

MAX_BODY = 280


async def _recipients(connection, event: ChatMessagePosted) -> list:
    if event.mention_channel or event.channel_kind != "channel":
        rows = await connection.fetch(
            """SELECT u.id, u.email, u.display_name FROM chats_member m JOIN sygmax_user u ON u.id = m.user_id
               WHERE m.channel_id = $1 AND u.is_active AND u.id <> $2""", event.channel_id, event.author_id)
        everyone = {row["id"]: row for row in rows}
    else:
        everyone = {}
    mentioned = [user_id for user_id in event.mentioned_user_ids if user_id != event.author_id
                 and user_id not in everyone]
    if mentioned:
        rows = await connection.fetch(
            "SELECT id, email, display_name FROM sygmax_user WHERE id = ANY($1::uuid[]) AND is_active", mentioned)
        everyone.update({row["id"]: row for row in rows})
    return list(everyone.values())


async def notify_offline(kernel, event: ChatMessagePosted) -> None:
    chats = runtime(kernel)
    async with kernel.db.pool.acquire() as connection:
        candidates = await _recipients(connection, event)
        allowed = []
        for row in candidates:
            reader = Actor(row["id"], row["email"], row["display_name"], False)
            if await policy.authorize(connection, reader, "chats.read", workspace_id=event.workspace_id,
                                      object_type="chats.channel", object_id=str(event.channel_id)):
                allowed.append(row)
    if not allowed:
        return
    statuses = await chats.presence.statuses([row["id"] for row in allowed])
    offline = {user_id for user_id, status, _ in statuses if status == "offline"}
    direct = event.channel_kind != "channel"
    where = "a direct message" if event.channel_kind == "direct" else (
        "a group conversation" if direct else f"#{event.channel_name}")
    body = event.text if len(event.text) <= MAX_BODY else event.text[:MAX_BODY - 1] + "\u2026"
    for row in allowed:
        if row["id"] not in offline:
            continue
        await kernel.bus.publish(NotificationRequested(
            user_id=row["id"], category="chats.direct" if direct else "chats.mention",
            title=f"{event.author_name or 'Someone'} in {where}", body=body,
            url=f"/chats/{event.channel_id}?seq={event.seq}", workspace_id=event.workspace_id,
            source_id=f"chats.message:{event.message_id}",
        ))


CONSUMERS = [ConsumerSpec("notify", {ChatMessagePosted: notify_offline})]
