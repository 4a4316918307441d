"""Chats events on the real Redis Streams bus, and NotificationRequested for offline people.

Online means a live /ws/chats connection on a real realtime process (presence in Redis);
offline means none.
"""

from __future__ import annotations

import asyncio

import websockets

from plugins.chats.workers import notify_offline
from sygmax.events.contracts import (
    ChatMessageDeleted,
    ChatMessageEdited,
    ChatMessagePosted,
    NotificationRequested,
)
from sygmax.kernel import Kernel
from sygmax.plugins import discover_plugins
from tests.chats.conftest import channel, make_team, post

HANG = 30.0


async def _events(kernel: Kernel, cls) -> list:
    entries = await kernel.redis.xrange(kernel.bus.stream_for(cls))
    return [kernel.bus.decode(fields) for _, fields in entries]


async def test_offline_mentions_and_direct_messages_request_notifications(api, team, chat_settings,
                                                                         sygmax_process):
    kernel = Kernel.build(chat_settings(), discover_plugins())
    await kernel.start()
    port, _ = sygmax_process("realtime")
    try:
        public = await channel(api, team.alice, team)
        secret = await channel(api, team.alice, team, "secret", private=True)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chats", additional_headers=team.bob.headers) as ws:
            await asyncio.wait_for(ws.recv(), HANG)  # hello: bob is online from here on
            message = await post(api, team.alice, public["id"], "@bob @carol @alice @mallory standup?")
            posted = (await _events(kernel, ChatMessagePosted))[-1]
            assert (str(posted.message_id), posted.seq, posted.text) == (message["id"], 1, message["text"])
            assert sorted(map(str, posted.mentioned_user_ids)) == sorted([str(team.bob.id), str(team.carol.id),
                                                                         str(team.alice.id)])
            await notify_offline(kernel, posted)
        notes = await _events(kernel, NotificationRequested)
        # Carol is offline and mentioned; bob is online; alice wrote it; mallory is not a member.
        assert [(note.user_id, note.category) for note in notes] == [(team.carol.id, "chats.mention")]
        assert notes[0].title == "Alice in #general" and notes[0].body == message["text"]
        assert notes[0].source_id == f"chats.message:{message['id']}"
        assert notes[0].workspace_id == posted.workspace_id

        # A mention in a private channel never reaches someone who cannot read it.
        await post(api, team.alice, secret["id"], "@carol secret plans")
        await notify_offline(kernel, (await _events(kernel, ChatMessagePosted))[-1])
        assert len(await _events(kernel, NotificationRequested)) == 1

        # Everyone else in a direct conversation is told, mention or not.
        direct = await api.ok(team.alice, "POST", "/api/v1/chats/direct",
                              {"workspace_id": team.workspace_id, "user_ids": [str(team.bob.id)]})
        await post(api, team.alice, direct["id"], "lunch?")
        await notify_offline(kernel, (await _events(kernel, ChatMessagePosted))[-1])
        latest = (await _events(kernel, NotificationRequested))[-1]
        assert (latest.user_id, latest.category, latest.title) == (team.bob.id, "chats.direct",
                                                                   "Alice in a direct message")

        # Edits and deletes are published too.
        await api.ok(team.alice, "PATCH", f"/api/v1/chats/messages/{message['id']}", {"text": "standup at 10"})
        await api.ok(team.alice, "DELETE", f"/api/v1/chats/messages/{message['id']}")
        edited = (await _events(kernel, ChatMessageEdited))[-1]
        assert (str(edited.message_id), edited.text, edited.editor_id) == (message["id"], "standup at 10",
                                                                          team.alice.id)
        assert str((await _events(kernel, ChatMessageDeleted))[-1].message_id) == message["id"]
    finally:
        await kernel.stop()


async def test_the_worker_profile_runs_the_consumer(chat_api, example_user, chat_settings):
    kernel = Kernel.build(chat_settings(), discover_plugins())
    await kernel.start()
    try:
        async with chat_api("api,worker", SYGMAX_CHATS_MESSAGES_PER_MINUTE="1000") as api:
            team = await make_team(api, example_user)
            ch = await channel(api, team.alice, team)
            await post(api, team.alice, ch["id"], "@channel release is out")

            async def notified() -> set:
                while True:
                    users = {note.user_id for note in await _events(kernel, NotificationRequested)}
                    if users:
                        return users
                    await asyncio.sleep(0.05)

            # @channel reaches the channel's members: alice alone wrote it and is its only member,
            # so bob must join to be told; a second message after he joined does it.
            await api.ok(team.bob, "POST", f"/api/v1/chats/channels/{ch['id']}/members",
                         {"user_id": str(team.bob.id)}, status=204)
            await post(api, team.alice, ch["id"], "@here second call")
            assert await asyncio.wait_for(notified(), HANG) == {team.bob.id}
    finally:
        await kernel.stop()
