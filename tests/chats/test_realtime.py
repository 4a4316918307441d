"""/ws/chats on real ``sygmax run realtime`` processes, clients from the ``websockets`` library.

REST calls go to an in-process api app on the same PostgreSQL and Redis, so every message a
socket receives crossed Redis pub/sub from another process. Timeouts below only end a hang;
nothing is asserted about speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import uuid

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.chats.conftest import channel, post

HANG = 30.0


class Client:
    """A WebSocket client that sorts what arrives by frame type."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen: list[dict] = []

    @classmethod
    async def connect(cls, port: int, user=None, **kwargs) -> Client:
        if user is not None:
            kwargs["additional_headers"] = user.headers
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chats", max_size=None, **kwargs)
        client = cls(ws)
        if user is not None:
            assert (await client.next("hello"))["user_id"] == str(user.id)
        return client

    async def send(self, frame) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def next(self, *types: str, timeout: float = HANG) -> dict:
        """The next frame of one of ``types`` (others are kept in ``seen``)."""
        async def wait() -> dict:
            while True:
                frame = json.loads(await self.ws.recv())
                self.seen.append(frame)
                if not types or frame["type"] in types:
                    return frame
        return await asyncio.wait_for(wait(), timeout)

    async def subscribe(self, channel_id: str, after_seq: int | None = None) -> dict:
        frame = {"type": "subscribe", "channel_id": channel_id}
        if after_seq is not None:
            frame["after_seq"] = after_seq
        await self.send(frame)
        return await self.next("subscribed", "error")

    async def messages(self, count: int, channel_id: str | None = None) -> list[dict]:
        found = []
        while len(found) < count:
            frame = await self.next("message")
            if channel_id is None or frame["channel_id"] == channel_id:
                found.append(frame)
        return found

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def clients():
    opened: list[Client] = []

    async def connect(port: int, user=None, **kwargs) -> Client:
        client = await Client.connect(port, user, **kwargs)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.ws.close()


async def test_two_processes_deliver_every_message_in_order(api, team, sygmax_process, clients):
    first, _ = sygmax_process("realtime")
    second, _ = sygmax_process("realtime")
    ch = await channel(api, team.alice, team)
    bob, carol = await clients(first, team.bob), await clients(second, team.carol)
    assert (await bob.subscribe(ch["id"]))["last_seq"] == 0
    assert (await carol.subscribe(ch["id"]))["type"] == "subscribed"
    senders = [team.alice, team.bob, team.carol] * 15
    posted = await asyncio.gather(*(post(api, user, ch["id"], f"m{index}") for index, user in enumerate(senders)))
    by_seq = {message["seq"]: message for message in posted}
    for client in (bob, carol):
        frames = await client.messages(45)
        assert [frame["seq"] for frame in frames] == list(range(1, 46))
        # The frame carries exactly the REST object.
        assert all(frame["message"] == by_seq[frame["seq"]] for frame in frames)
    # Edits, reactions, pins and deletes reach the other process too.
    target = by_seq[1]
    edited = await api.ok(team.alice, "PATCH", f"/api/v1/chats/messages/{target['id']}", {"text": "edited"})
    await api.ok(team.bob, "POST", f"/api/v1/chats/messages/{target['id']}/reactions", {"emoji": "👍"}, status=200)
    await api.ok(team.bob, "POST", f"/api/v1/chats/messages/{target['id']}/pin", status=204)
    await api.ok(team.alice, "DELETE", f"/api/v1/chats/messages/{target['id']}")
    for client in (bob, carol):
        assert (await client.next("edit"))["message"] == edited
        reaction = await client.next("reaction")
        assert (reaction["emoji"], reaction["added"], reaction["reactions"][0]["count"]) == ("👍", True, 1)
        assert (await client.next("pin"))["pinned"] is True
        deleted = await client.next("delete")
        assert (deleted["message_id"], deleted["seq"]) == (target["id"], 1)


async def test_clients_of_a_killed_process_resume_elsewhere_and_miss_nothing(api, team, sygmax_process, clients):
    doomed_port, doomed = sygmax_process("realtime")
    survivor_port, _ = sygmax_process("realtime")
    ch = await channel(api, team.alice, team)
    for number in range(1, 6):
        await post(api, team.alice, ch["id"], f"before {number}")
    bob = await clients(doomed_port, team.bob)
    await bob.subscribe(ch["id"], after_seq=0)
    received = [frame["seq"] for frame in await bob.messages(5)]
    assert received == [1, 2, 3, 4, 5]

    async def keep_posting() -> None:
        for number in range(30):
            await post(api, team.carol, ch["id"], f"during {number}")

    poster = asyncio.create_task(keep_posting())
    try:
        while received[-1] < 10:
            received.append((await bob.next("message"))["seq"])
        os.killpg(doomed.pid, signal.SIGKILL)  # no goodbye: the socket just dies
        doomed.wait()
        with pytest.raises(ConnectionClosed):
            while True:
                received.append((await bob.next("message"))["seq"])
        # Reconnect to the survivor and resume from the last seq seen.
        bob = await clients(survivor_port, team.bob)
        subscribed = await bob.subscribe(ch["id"], after_seq=received[-1])
        assert subscribed["type"] == "subscribed"
        while received[-1] < 35:
            received.append((await bob.next("message"))["seq"])
    finally:
        await poster
    assert received == list(range(1, 36))  # no gap, no duplicate, in order


async def test_private_channels_refuse_subscriptions_from_non_members(api, team, sygmax_process, clients):
    port, _ = sygmax_process("realtime")
    secret = await channel(api, team.alice, team, "secret", private=True)
    public = await channel(api, team.alice, team, "public")
    bob = await clients(port, team.bob)
    refused = await bob.subscribe(secret["id"], after_seq=0)
    assert (refused["type"], refused["code"], refused["channel_id"]) == ("error", "not-found", secret["id"])
    unknown = await bob.subscribe(str(uuid.uuid4()))
    assert unknown["code"] == "not-found" and unknown["detail"] == refused["detail"]
    await bob.subscribe(public["id"])
    await post(api, team.alice, secret["id"], "classified")
    await post(api, team.alice, public["id"], "hello everyone")
    frame = await bob.next("message")
    assert frame["channel_id"] == public["id"]  # the private message, posted first, never came
    # Members subscribe; someone removed from a private channel stops receiving it.
    await api.ok(team.alice, "POST", f"/api/v1/chats/channels/{secret['id']}/members", {"user_id": str(team.bob.id)},
                 status=204)
    assert (await bob.subscribe(secret["id"], after_seq=0))["type"] == "subscribed"
    assert (await bob.next("message"))["message"]["text"] == "classified"
    await api.ok(team.alice, "DELETE", f"/api/v1/chats/channels/{secret['id']}/members/{team.bob.id}")
    gone = await bob.next("unsubscribed")
    assert (gone["channel_id"], gone["reason"]) == (secret["id"], "removed")
    await post(api, team.alice, secret["id"], "after bob left")
    await post(api, team.alice, public["id"], "still here")
    assert (await bob.next("message"))["message"]["text"] == "still here"


async def test_bad_frames_get_clear_errors_and_the_connection_stays(api, team, sygmax_process, clients):
    port, _ = sygmax_process("realtime")
    ch = await channel(api, team.alice, team)
    bob = await clients(port, team.bob)
    cases = [
        ("{not json", "malformed-frame"),
        (json.dumps([1, 2]), "invalid-frame"),
        (json.dumps({"type": "dance"}), "invalid-frame"),
        (json.dumps({"type": "subscribe", "channel_id": 5}), "invalid-frame"),
        (json.dumps({"type": "subscribe", "channel_id": "nope"}), "invalid-frame"),
        (json.dumps({"type": "subscribe", "channel_id": ch["id"], "after_seq": -1}), "invalid-frame"),
        (json.dumps({"type": "subscribe", "channel_id": ch["id"], "colour": "red"}), "invalid-frame"),
        (json.dumps({"type": "subscribe"}), "invalid-frame"),
        (json.dumps({"type": "ping", "ref": "x" * 65}), "invalid-frame"),
        (json.dumps({"type": "typing", "channel_id": ch["id"]}), "not-subscribed"),
        (json.dumps({"type": "unsubscribe", "channel_id": ch["id"]}), "not-subscribed"),
        (json.dumps({"type": "ack", "channel_id": ch["id"], "seq": 3}), "seq-out-of-range"),
        (json.dumps({"type": "ack", "channel_id": str(uuid.uuid4()), "seq": 0}), "not-found"),
        (json.dumps({"type": "auth", "token": "again"}), "already-authenticated"),
        ("x" * 70_000, "frame-too-large"),
    ]
    for raw, code in cases:
        await bob.send(raw)
        error = await bob.next("error")
        assert error["code"] == code, (raw[:80], error)
        assert error["detail"]
    invalid = next(frame for frame in bob.seen if frame.get("code") == "invalid-frame"
                   and "channel_id" in frame["detail"])
    assert "$.channel_id" in invalid["detail"]  # the field at fault is named
    await bob.subscribe(ch["id"])
    again = await bob.subscribe(ch["id"])
    assert again["code"] == "already-subscribed"
    await bob.send({"type": "ping", "ref": "still-alive"})
    assert (await bob.next("pong"))["ref"] == "still-alive"


async def test_authentication(api, team, sygmax_process, clients):
    port, _ = sygmax_process("realtime")
    # A first frame carrying a token, for browsers that cannot set headers.
    late = await clients(port)
    await late.send({"type": "auth", "token": team.bob.token})
    assert (await late.next("hello"))["user_id"] == str(team.bob.id)
    for first in ({"type": "ping"}, {"type": "auth", "token": "syg_not-a-real-token"}, "{"):
        anonymous = await clients(port)
        await anonymous.send(first)
        assert (await anonymous.next("error"))["code"] in ("unauthenticated", "invalid-token")
        with pytest.raises(ConnectionClosed) as closed:
            await anonymous.next()
        assert closed.value.rcvd.code == 4401
    bad = await clients(port, None, additional_headers={"Authorization": "Bearer syg_wrong"})
    assert (await bad.next("error"))["code"] == "invalid-token"
    with pytest.raises(ConnectionClosed) as closed:
        await bad.next()
    assert closed.value.rcvd.code == 4401


async def test_typing_read_receipts_and_presence_cross_processes(api, team, sygmax_process, clients):
    first, _ = sygmax_process("realtime")
    second, _ = sygmax_process("realtime")
    ch = await api.ok(team.alice, "POST", "/api/v1/chats/direct",
                      {"workspace_id": team.workspace_id, "user_ids": [str(team.bob.id), str(team.carol.id)]})
    bob = await clients(first, team.bob)
    await bob.subscribe(ch["id"])
    carol = await clients(second, team.carol)
    online = await bob.next("presence")
    assert (online["user_id"], online["status"]) == (str(team.carol.id), "online")
    statuses = {item["user_id"]: item["status"]
                for item in await api.ok(team.alice, "GET", f"/api/v1/chats/presence?workspace_id={team.workspace_id}")}
    assert statuses == {str(team.alice.id): "offline", str(team.bob.id): "online", str(team.carol.id): "online",
                        str(team.victor.id): "offline"}
    await carol.subscribe(ch["id"])
    await carol.send({"type": "typing", "channel_id": ch["id"]})
    typing = await bob.next("typing")
    assert (typing["user_id"], typing["display_name"]) == (str(team.carol.id), "Carol")
    message = await post(api, team.alice, ch["id"], "read me")
    await bob.send({"type": "ack", "channel_id": ch["id"], "seq": message["seq"]})
    receipt = await carol.next("read")
    assert (receipt["user_id"], receipt["seq"]) == (str(team.bob.id), 1)
    await carol.send({"type": "presence", "status": "away"})
    assert (await bob.next("presence"))["status"] == "away"
    await carol.close()
    offline = await bob.next("presence")
    assert (offline["user_id"], offline["status"]) == (str(team.carol.id), "offline")


def _open_connections(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("sygmax_websocket_connections{") and 'plugin="chats"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_slow_client_is_disconnected_and_others_carry_on(api, team, sygmax_process, clients):
    port, _ = sygmax_process("realtime", SYGMAX_CHATS_SEND_QUEUE_FRAMES="8")
    ch = await channel(api, team.alice, team)
    # A client that never reads, with a small receive buffer so the server's sends back up soon.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    slow = await clients(port, team.bob, sock=raw, max_queue=1)
    await slow.subscribe(ch["id"])
    fast = await clients(port, team.carol)
    await fast.subscribe(ch["id"])
    assert _open_connections(port) == 2
    big = "lorem ipsum " * 800
    posted = 0
    while _open_connections(port) == 2:
        assert posted < 2000, "the slow client was never disconnected"
        await post(api, team.alice, ch["id"], f"{posted} {big}")
        posted += 1
        assert (await fast.next("message"))["seq"] == posted  # the fast client keeps up throughout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await slow.next(timeout=HANG)
    # The server closed it with 4008; whether that close frame gets through a connection this
    # backed up depends on the ASGI server, which may reset it instead.
    assert closed.value.rcvd is None or closed.value.rcvd.code == 4008
    assert len([frame for frame in slow.seen if frame["type"] == "message"]) < posted  # it was cut off
    await post(api, team.alice, ch["id"], "after")
    assert (await fast.next("message"))["message"]["text"] == "after"


async def test_session_access_token_and_cookie_from_the_sites_origin(api, team, chat_settings, sygmax_process,
                                                                     clients):
    from sygmax.auth.sessions import issue_session
    from sygmax.kernel import Kernel
    from sygmax.plugins import discover_plugins

    port, _ = sygmax_process("realtime")
    kernel = Kernel.build(chat_settings(), discover_plugins())
    await kernel.start()
    try:
        async with kernel.db.pool.acquire() as connection:
            pair = await issue_session(kernel, connection, team.bob.id, "tests")
    finally:
        await kernel.stop()
    bearer = await clients(port, None, additional_headers={"Authorization": f"Bearer {pair.access_token}"})
    assert (await bearer.next("hello"))["user_id"] == str(team.bob.id)
    cookie = {"Cookie": f"sygmax_access={pair.access_token}"}
    same_site = await clients(port, None, additional_headers={**cookie, "Origin": "http://localhost:8000"})
    assert (await same_site.next("hello"))["user_id"] == str(team.bob.id)
    # A page on another site cannot ride the cookie (WebSockets have no CSRF header).
    foreign = await clients(port, None, additional_headers={**cookie, "Origin": "https://evil.example"})
    assert (await foreign.next("error"))["code"] == "csrf-failed"
    with pytest.raises(ConnectionClosed) as closed:
        await foreign.next()
    assert closed.value.rcvd.code == 4403


async def test_large_workspaces_send_only_the_presence_asked_for(api, team, sygmax_process, clients):
    # Four members, more than the broadcast limit of 2: nobody hears about everybody.
    port, _ = sygmax_process("realtime", SYGMAX_CHATS_PRESENCE_BROADCAST_MAX="2")
    ch = await channel(api, team.alice, team)
    bob = await clients(port, team.bob)
    await bob.subscribe(ch["id"])
    carol = await clients(port, team.carol)
    await bob.send({"type": "presence_subscribe", "user_ids": [str(team.carol.id)], "ref": "p"})
    now = await bob.next("presence", "presence_subscribed")
    assert (now["type"], now["user_id"], now["status"]) == ("presence", str(team.carol.id), "online")
    assert (await bob.next("presence_subscribed"))["count"] == 1
    await clients(port, team.victor)  # online now, but bob did not ask about victor
    await carol.send({"type": "presence", "status": "away"})
    changed = await bob.next("presence")
    assert (changed["user_id"], changed["status"]) == (str(team.carol.id), "away")
    assert not any(frame.get("user_id") == str(team.victor.id) for frame in bob.seen)
    await bob.send({"type": "presence_subscribe", "user_ids": ["not-a-uuid"]})
    assert (await bob.next("error"))["code"] == "invalid-frame"


async def test_a_message_whose_frame_was_lost_still_arrives(api, team, chat_settings, sygmax_process, clients):
    from plugins.chats.actions import do_post_message
    from sygmax.auth.tokens import Actor
    from sygmax.kernel import Kernel
    from sygmax.plugins import discover_plugins

    port, _ = sygmax_process("realtime", SYGMAX_CHATS_HEARTBEAT_S="0.5")
    ch = await channel(api, team.alice, team)
    bob = await clients(port, team.bob)
    await bob.subscribe(ch["id"])
    kernel = Kernel.build(chat_settings(), discover_plugins())
    await kernel.start()
    try:
        # Committed, but never published: as if Redis had been away at that moment.
        alice = Actor(team.alice.id, "alice@example.org", "Alice", False)
        await do_post_message(alice, kernel, uuid.UUID(ch["id"]), text="lost frame", thread_root_id=None,
                              attachment_ids=[], idempotency_key=None)
    finally:
        await kernel.stop()
    # No later message comes to reveal the gap: the process notices by itself.
    frame = await bob.next("message")
    assert (frame["seq"], frame["message"]["text"]) == (1, "lost frame")
    await post(api, team.alice, ch["id"], "next")
    assert [(await bob.next("message"))["seq"]] == [2]
