"""``/ws/chats``: realtime chat over WebSocket, fanned out across processes through Redis pub/sub.

Per process there is one :class:`Hub`. For each channel with local subscribers it keeps one
:class:`ChannelFeed`: a single Redis subscription (through the kernel's Fanout) whose frames
are checked for sequence order and then handed, as the same already-encoded string, to the
bounded send queue of every local connection subscribed to the channel.

Ordering, gaps and duplicates. A channel's messages carry consecutive sequence numbers and
are published only after they commit, and because the sequence is allocated under the
channel row lock, seq N committed means every seq below N committed. So a feed that sees
seq N while it has delivered up to L < N-1 (publishers raced, or Redis dropped a frame)
fetches L+1..N-1 from PostgreSQL before delivering N; a frame at or below L is a duplicate
and is dropped. Every local subscriber therefore gets each message once, in order.

Resuming. ``subscribe`` with ``after_seq`` registers the connection on the feed in a
*pending* state first (live frames are buffered for it), notes the feed's position S, sends
after_seq+1..S from PostgreSQL, then replays the buffered frames above what it sent and
goes live, with no await between the replay and going live. Nothing is missed between the
database read and the live stream, and nothing is sent twice.

Writing. A fanned-out frame is written to every idle connection from the feed's own task,
by stepping the ASGI send by hand (:meth:`Connection.offer`): when the socket takes the frame
without waiting (the usual case) no task is woken per connection and frame. Only a send that
has to wait (the socket's buffer is full) is finished by a writer task of that connection,
which also drains the frames queued behind it and then ends, so one slow socket holds up no
other and an idle connection costs no task.

Slow clients. A connection's backlog is a bounded deque; a connection whose backlog is full
is closed with code 4008 and its backlog dropped, so memory per connection stays bounded
whatever the client does.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections import deque
from typing import Annotated, Literal

import msgspec
import structlog
from litestar import WebSocket, websocket
from litestar.datastructures import Headers

from plugins.chats.access import access_channel
from plugins.chats.actions import check_mark_read
from plugins.chats.runtime import ChatsRuntime, channel_topic, encode, presence_topic, runtime
from plugins.chats.views import load_range, message_frame
from sygmax.auth.tokens import Actor, authenticate, provide_actor
from sygmax.errors import Problem
from sygmax.events.fanout import SlowConsumer
from sygmax.kernel import Kernel, KernelDep

log = structlog.get_logger("sygmax.chats.realtime")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4008
CLOSE_GOING_AWAY = 1001
MAX_FRAME_CHARS = 65_536
AUTH_TIMEOUT_S = 10.0
CATCHUP_PAGE = 200
TYPING_INTERVAL_S = 1.0
CLOSE_WAIT_S = 1.0

Ref = Annotated[str, msgspec.Meta(max_length=64)]
SeqNo = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class _Client(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    ref: Ref | None = None


class Subscribe(_Client, tag="subscribe"):
    channel_id: uuid.UUID
    after_seq: SeqNo | None = None


class Unsubscribe(_Client, tag="unsubscribe"):
    channel_id: uuid.UUID


class Typing(_Client, tag="typing"):
    channel_id: uuid.UUID


class Ack(_Client, tag="ack"):
    channel_id: uuid.UUID
    seq: SeqNo


class Ping(_Client, tag="ping"):
    pass


class SetPresence(_Client, tag="presence"):
    status: Literal["online", "away"]


class PresenceSubscribe(_Client, tag="presence_subscribe"):
    user_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=1000)]


class Auth(_Client, tag="auth"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


ClientFrame = Subscribe | Unsubscribe | Typing | Ack | Ping | SetPresence | PresenceSubscribe | Auth
_decode_client = msgspec.json.Decoder(ClientFrame).decode


class _Head(msgspec.Struct):
    """The fields of a fanned-out frame the feed routes on; the rest is passed through unread."""

    type: str
    seq: int | None = None
    user_id: uuid.UUID | None = None
    added: bool | None = None


_decode_head = msgspec.json.Decoder(_Head).decode


def _error(code: str, detail: str, ref: str | None = None, **extra) -> str:
    return encode({"type": "error", "code": code, "detail": detail, "ref": ref, **extra}).decode()


class _Sub:
    """A connection's subscription to one channel: pending (buffering) until caught up, then live."""

    __slots__ = ("cursor", "pending")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.pending: list[tuple[int | None, dict]] | None = []


def _frame(text: str) -> dict:
    """The ASGI event of a text frame; made once per fanned-out frame and shared by every recipient."""
    return {"type": "websocket.send", "text": text, "bytes": None}


class _Rest:
    """Awaiting this finishes an awaitable whose first step was taken by hand and suspended on ``waiting``."""

    __slots__ = ("steps", "waiting")

    def __init__(self, steps, waiting) -> None:
        self.steps = steps
        self.waiting = waiting

    def __await__(self):
        steps, waiting = self.steps, self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # noqa: BLE001 - cancellation and the like go to the send itself
                try:
                    waiting = steps.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = steps.send(value)
                except StopIteration as stop:
                    return stop.value


class Connection:
    def __init__(self, socket: WebSocket, actor: Actor, hub: Hub, queue_size: int) -> None:
        self.id = os.urandom(8).hex()
        self.socket = socket
        # The server's send (sygmax.observability keeps it in the scope): frames skip Litestar's
        # two send wrappers, which only check connection states that the server checks too.
        self.send = socket.scope.get("sygmax.asgi_send") or socket.send
        # A Python coroutine (uvicorn) can be stepped by hand in offer(); a server's native
        # awaitable (granian) is only awaited, by a writer task, as it expects.
        self.stepped = inspect.iscoroutinefunction(self.send)
        self.actor = actor
        self.hub = hub
        self.queue: deque[dict] = deque()  # the backlog behind a send that had to wait
        self.queue_size = queue_size
        self.room = asyncio.Event()
        self.closed = False
        self.kicked = False  # closed as too slow: the reader is cancelled if the close frame cannot go out
        self.reader: asyncio.Task | None = None
        self.status = "online"
        self.subs: dict[uuid.UUID, _Sub] = {}
        self.workspaces: set[uuid.UUID] = set()
        self.typed: dict[uuid.UUID, float] = {}
        self.interest: set[uuid.UUID] = set()
        self.writer: asyncio.Task | None = None  # only while a backlog drains

    def offer(self, event: dict) -> None:
        """Write ``event`` now if the socket takes it without waiting, else queue it behind the backlog."""
        if self.closed:
            return
        if self.writer is not None or not self.stepped:
            if len(self.queue) >= self.queue_size:
                self._too_slow()
                return
            self.queue.append(event)
            if self.writer is None:
                self.writer = self.hub.kernel.spawn(self._drain(None), f"chats-writer-{self.id}")
            return
        # One step of the send by hand: a socket that accepts the frame at once finishes it here,
        # with no task or wake-up per connection and frame.
        steps = self.send(event).__await__()
        try:
            waiting = steps.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the peer went away; the reader notices too
            self._lost(exc)
            return
        self.writer = self.hub.kernel.spawn(self._drain(_Rest(steps, waiting)), f"chats-writer-{self.id}")

    async def _drain(self, rest: _Rest | None) -> None:
        """Finish the send that had to wait, then the frames queued behind it, in order; then end."""
        try:
            if rest is not None:
                await rest
            queue, send = self.queue, self.send
            while queue and not self.closed:
                await send(queue.popleft())
        except Exception as exc:  # noqa: BLE001 - the peer went away mid-send; the reader notices too
            self._lost(exc)
        finally:
            self.writer = None  # no await since the queue was seen empty: the next offer writes directly
            self.room.set()

    def _lost(self, exc: Exception) -> None:
        log.debug("chats_send_failed", connection=self.id, error=str(exc))
        self.closed = True
        self.queue.clear()
        self.room.set()

    def _too_slow(self) -> None:
        self.closed = True
        self.kicked = True
        self.queue.clear()
        log.info("chats_slow_client_closed", user_id=str(self.actor.user_id), connection=self.id)
        self.hub.kernel.spawn(self._close(CLOSE_TOO_SLOW, "too slow: send queue full"), "chats-close-slow")

    async def wait_room(self, frames: int) -> None:
        """Wait until ``frames`` more fit in the queue (catch-up paces itself to the client)."""
        while not self.closed and len(self.queue) + frames > self.queue_size:
            self.room.clear()
            await self.room.wait()

    async def _close(self, code: int, reason: str) -> None:
        self.room.set()
        self.hub.detach(self)
        close = self.socket.close(code=code, reason=reason)
        try:
            if self.stepped:
                # uvicorn: the close frame queues behind what the socket still holds, and a client
                # that reads nothing never lets it out; after a while the reader is stopped, the
                # handler returns and the server drops the socket.
                await asyncio.wait_for(close, CLOSE_WAIT_S)
            else:
                # granian ends a backed-up connection by itself; cancelling its close stalled the
                # other connections' sends (tests/chats/test_realtime.py, slow client).
                await close
        except TimeoutError:
            if self.reader is not None:
                self.reader.cancel()
        except Exception as exc:  # noqa: BLE001 - already closed by the peer
            log.debug("chats_close_failed", connection=self.id, error=str(exc))

    def send_now(self, text: str) -> None:
        """Send a direct answer (subscribed, error, pong) in order with the channel frames."""
        self.offer(_frame(text))


class ChannelFeed:
    """One Redis subscription for a channel, shared by every local subscriber of it."""

    def __init__(self, hub: Hub, channel_id: uuid.UUID) -> None:
        self.hub = hub
        self.channel_id = channel_id
        self.last: int | None = None
        self.conns: dict[Connection, _Sub] = {}
        self.lock = asyncio.Lock()  # one of live delivery and database filling at a time, for order
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        # A failure is reported to the subscribers waiting on it; with none waiting, it is only logged.
        self.ready.add_done_callback(lambda future: future.cancelled() or future.exception())
        self.task = hub.kernel.spawn(self._run(), f"chats-feed-{channel_id}")

    async def _run(self) -> None:
        fanout = self.hub.kernel.fanout
        while True:
            try:
                async with fanout.subscribe(channel_topic(self.channel_id)) as subscription:
                    # Subscribed first, position read second: anything committed after this read
                    # is published after it too, so it reaches us live.
                    async with self.hub.kernel.db.pool.acquire() as connection:
                        current = await connection.fetchval(
                            "SELECT last_seq FROM chats_channel WHERE id = $1", self.channel_id)
                    if current is None:  # the channel was deleted meanwhile
                        self._deliver(_frame(encode({"type": "channel_deleted",
                                                     "channel_id": self.channel_id}).decode()),
                                      None, "channel_deleted", None)
                        if not self.ready.done():
                            self.ready.set_exception(Problem(404, "not-found", "No such channel"))
                        return
                    if self.last is None:
                        self.last = current
                    else:
                        await self.catch_up(current)
                    if not self.ready.done():
                        self.ready.set_result(None)
                    async for data in subscription:
                        await self._handle(data)
                return  # the fan-out closed: the process is stopping
            except SlowConsumer:
                log.warning("chats_feed_resubscribing", channel_id=str(self.channel_id))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the feed alive through database or Redis hiccups
                log.warning("chats_feed_error", channel_id=str(self.channel_id), error=str(exc))
                if not self.ready.done():
                    self.ready.set_exception(exc)
                    return
                await asyncio.sleep(0.5)

    async def _handle(self, data: bytes) -> None:
        head = _decode_head(data)
        event = _frame(data.decode())
        if head.type == "message" and head.seq is not None:
            async with self.lock:
                if head.seq <= self.last:
                    return  # already delivered (filled from the database, or published twice)
                if head.seq > self.last + 1:
                    await self._fill(head.seq - 1)
                    if head.seq <= self.last:
                        return
                self.last = head.seq
                self._deliver(event, head.seq, head.type, None)
        elif head.type == "member" and head.added is False:
            self._deliver(event, None, head.type, head.user_id)
        else:
            self._deliver(event, None, head.type, None)

    async def catch_up(self, upto: int) -> None:
        """Deliver what PostgreSQL has up to ``upto`` that pub/sub did not bring (a lost frame)."""
        async with self.lock:
            await self._fill(upto)

    async def _fill(self, upto: int) -> None:
        """Deliver last+1..upto from PostgreSQL (committed, since a later seq was seen); hold the lock."""
        while self.last < upto:
            async with self.hub.kernel.db.pool.acquire() as connection:
                messages = await load_range(connection, self.channel_id, self.last, upto, CATCHUP_PAGE)
            if not messages:
                log.error("chats_sequence_hole", channel_id=str(self.channel_id), after=self.last, upto=upto)
                self.last = upto
                return
            for message in messages:
                if message.seq <= self.last:
                    continue
                self.last = message.seq
                self._deliver(_frame(encode(message_frame(message)).decode()), message.seq, "message", None)

    def _deliver(self, event: dict, seq: int | None, kind: str, user_id: uuid.UUID | None) -> None:
        for connection, sub in tuple(self.conns.items()):
            if sub.pending is not None:
                sub.pending.append((seq, event))
            elif seq is None or seq > sub.cursor:
                if seq is not None:
                    sub.cursor = seq
                connection.offer(event)
        if kind == "channel_deleted":
            for connection in tuple(self.conns):
                self.hub.drop_sub(connection, self.channel_id)
        elif kind == "member" and user_id is not None:
            # Someone removed from a channel stops receiving it (a private channel's ACL went with it).
            for connection in tuple(self.conns):
                if connection.actor.user_id == user_id:
                    self.hub.kernel.spawn(self.hub.recheck(connection, self.channel_id), "chats-recheck")


class PresenceFeed:
    """Presence frames of one workspace, to the local connections watching it.

    Telling every member about every other member's transitions is N*N frames (5,000 people
    coming online is 25 million frames), so a workspace larger than ``[chats]
    presence_broadcast_max`` members only sends each connection the people it asked for with
    ``presence_subscribe``; a smaller one sends everyone everything, which is what a team of
    a few dozen wants without asking.
    """

    def __init__(self, hub: Hub, workspace_id: uuid.UUID) -> None:
        self.hub = hub
        self.workspace_id = workspace_id
        self.conns: set[Connection] = set()
        self.broadcast = False  # decided from the member count when the feed starts
        # Set once Redis confirmed the subscription: a subscriber told "subscribed" misses no change after.
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda future: future.cancelled() or future.exception())
        self.task = hub.kernel.spawn(self._run(), f"chats-presence-{workspace_id}")

    async def _run(self) -> None:
        limit = self.hub.chats.settings.presence_broadcast_max
        while True:
            try:
                async with self.hub.kernel.db.pool.acquire() as connection:
                    members = await connection.fetchval(
                        "SELECT count(*) FROM sygmax_membership WHERE workspace_id = $1", self.workspace_id)
                self.broadcast = members <= limit
                async with self.hub.kernel.fanout.subscribe(presence_topic(self.workspace_id)) as subscription:
                    if not self.ready.done():
                        self.ready.set_result(None)
                    async for data in subscription:
                        self._deliver(data)
                return
            except SlowConsumer:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - presence is best effort; keep listening
                log.warning("chats_presence_feed_error", error=str(exc))
                if not self.ready.done():  # nobody waits for presence longer than for one attempt
                    self.ready.set_result(None)
                await asyncio.sleep(0.5)

    def _deliver(self, data: bytes) -> None:
        event = _frame(data.decode())
        if self.broadcast:
            for connection in tuple(self.conns):
                connection.offer(event)
            return
        user_id = _decode_head(data).user_id
        for connection in tuple(self.hub.interest.get(user_id, ())):
            if connection in self.conns:
                connection.offer(event)


class Hub:
    def __init__(self, kernel: Kernel, chats: ChatsRuntime) -> None:
        self.kernel = kernel
        self.chats = chats
        self.feeds: dict[uuid.UUID, ChannelFeed] = {}
        self.presence_feeds: dict[uuid.UUID, PresenceFeed] = {}
        self.interest: dict[uuid.UUID, set[Connection]] = {}  # user -> connections that asked for their presence
        self.connections: set[Connection] = set()
        self.heartbeat = kernel.spawn(self._heartbeat(), "chats-presence-heartbeat")

    async def feed(self, channel_id: uuid.UUID) -> ChannelFeed:
        """The channel's running feed, once it knows its position (the caller registers at once, no await)."""
        while True:
            feed = self.feeds.get(channel_id)
            if feed is None or feed.task.done():
                feed = self.feeds[channel_id] = ChannelFeed(self, channel_id)
            await asyncio.shield(feed.ready)
            if self.feeds.get(channel_id) is feed and not feed.task.done():
                return feed

    def drop_sub(self, connection: Connection, channel_id: uuid.UUID) -> None:
        if connection.subs.pop(channel_id, None) is None:
            return
        feed = self.feeds.get(channel_id)
        if feed is None or feed.conns.pop(connection, None) is None:
            return
        if not feed.conns and feed.ready.done():
            del self.feeds[channel_id]
            feed.task.cancel()

    def detach(self, connection: Connection) -> None:
        for channel_id in list(connection.subs):
            self.drop_sub(connection, channel_id)
        for workspace_id in connection.workspaces:
            feed = self.presence_feeds.get(workspace_id)
            if feed is not None:
                feed.conns.discard(connection)
                if not feed.conns:
                    del self.presence_feeds[workspace_id]
                    if not feed.ready.done():  # release a subscribe still waiting on it
                        feed.ready.set_result(None)
                    feed.task.cancel()
        connection.workspaces.clear()
        self.set_interest(connection, ())
        self.connections.discard(connection)

    def set_interest(self, connection: Connection, user_ids) -> None:
        """Replace the users whose presence ``connection`` receives in large workspaces."""
        for user_id in connection.interest:
            watchers = self.interest.get(user_id)
            if watchers is not None:
                watchers.discard(connection)
                if not watchers:
                    del self.interest[user_id]
        connection.interest = set(user_ids)
        for user_id in connection.interest:
            self.interest.setdefault(user_id, set()).add(connection)

    async def watch_presence(self, connection: Connection, workspace_id: uuid.UUID) -> None:
        if workspace_id in connection.workspaces:
            return
        feed = self.presence_feeds.get(workspace_id)
        if feed is None or feed.task.done():
            feed = self.presence_feeds[workspace_id] = PresenceFeed(self, workspace_id)
        feed.conns.add(connection)
        connection.workspaces.add(workspace_id)
        await asyncio.shield(feed.ready)

    async def recheck(self, connection: Connection, channel_id: uuid.UUID) -> None:
        try:
            async with self.kernel.db.pool.acquire() as db:
                await access_channel(db, connection.actor, channel_id, "chats.read")
        except Problem:
            self.drop_sub(connection, channel_id)
            connection.send_now(encode({"type": "unsubscribed", "channel_id": channel_id,
                                        "reason": "removed"}).decode())

    async def set_presence(self, connection: Connection, status: str) -> None:
        try:
            current, changed = await self.chats.presence.set(connection.actor.user_id, connection.id, status)
        except Exception as exc:  # noqa: BLE001 - presence must not break chatting while Redis blips
            log.warning("chats_presence_failed", error=str(exc))
            return
        if changed:
            await self.chats.announce_presence(connection.actor.user_id, current)

    async def drop_presence(self, connection: Connection) -> None:
        try:
            current, changed = await self.chats.presence.drop(connection.actor.user_id, connection.id)
        except Exception as exc:  # noqa: BLE001
            log.warning("chats_presence_failed", error=str(exc))
            return
        if changed:
            await self.chats.announce_presence(connection.actor.user_id, current)

    async def _heartbeat(self) -> None:
        presence = self.chats.presence
        while True:
            await asyncio.sleep(self.chats.settings.heartbeat_s)
            try:
                live = [(c.actor.user_id, c.id, c.status) for c in self.connections if not c.closed]
                changes = await presence.refresh(live)
                expired = await presence.expired_users()
                changes += await presence.statuses(expired)
                for user_id, status, changed in changes:
                    if changed:
                        await self.chats.announce_presence(user_id, status)
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next beat
                log.warning("chats_heartbeat_failed", error=str(exc))


    async def _reconcile(self) -> None:
        """Catch up feeds whose channel has committed more than they delivered.

        A frame published while Redis was away, or lost with a pub/sub connection, is filled in
        as soon as a later frame of the channel arrives; this closes the case where no later
        frame comes (the last message before a quiet spell). One query per beat for all feeds.
        """
        feeds = {channel_id: feed for channel_id, feed in self.feeds.items()
                 if feed.ready.done() and not feed.task.done() and feed.last is not None}
        if not feeds:
            return
        async with self.kernel.db.pool.acquire() as connection:
            rows = await connection.fetch("SELECT id, last_seq FROM chats_channel WHERE id = ANY($1::uuid[])",
                                          list(feeds))
        for row in rows:
            feed = feeds[row["id"]]
            if row["last_seq"] > feed.last:
                await feed.catch_up(row["last_seq"])


def hub_of(kernel: Kernel) -> Hub:
    chats = runtime(kernel)
    if chats.hub is None:
        chats.hub = Hub(kernel, chats)
    return chats.hub


async def _authenticate(socket: WebSocket, kernel: Kernel) -> Actor | None:
    """Header or cookie credentials (as for HTTP), else a first frame ``{"type": "auth", "token": ...}``."""
    headers = Headers.from_scope(socket.scope)
    try:
        if headers.get("authorization") or socket.cookies.get("sygmax_access"):
            return await provide_actor(kernel, headers, socket.cookies, socket.scope)
        try:
            raw = await asyncio.wait_for(socket.receive(), AUTH_TIMEOUT_S)
        except TimeoutError:
            raise Problem(401, "unauthenticated", "Send credentials: an Authorization header, the session cookie, "
                                                  "or a first frame {\"type\": \"auth\", \"token\": ...}") from None
        if raw["type"] != "websocket.receive":
            return None
        try:
            frame = _decode_client(raw.get("text") or raw.get("bytes") or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            frame = None
        if not isinstance(frame, Auth):
            raise Problem(401, "unauthenticated", "The first frame must be {\"type\": \"auth\", \"token\": ...}")
        return await authenticate(kernel, f"Bearer {frame.token}")
    except Problem as problem:
        await socket.send({"type": "websocket.send", "text": _error(problem.slug, str(problem.detail)), "bytes": None})
        await socket.close(code=CLOSE_UNAUTHENTICATED if problem.status_code == 401 else 4403,
                           reason=str(problem.detail)[:120])
        return None


@websocket("/", name="chats-socket")
async def chats_socket(socket: WebSocket, kernel: KernelDep) -> None:
    await socket.accept()
    actor = await _authenticate(socket, kernel)
    if actor is None:
        return
    hub = hub_of(kernel)
    connection = Connection(socket, actor, hub, hub.chats.settings.send_queue_frames)
    hub.connections.add(connection)
    connection.reader = asyncio.current_task()
    await hub.set_presence(connection, "online")
    connection.send_now(encode({"type": "hello", "user_id": actor.user_id, "connection_id": connection.id}).decode())
    try:
        while not connection.closed:
            event = await socket.receive()
            if event["type"] != "websocket.receive":
                break
            raw = event.get("text") or event.get("bytes") or b""
            if len(raw) > MAX_FRAME_CHARS:
                connection.send_now(_error("frame-too-large", f"Frames are limited to {MAX_FRAME_CHARS} characters"))
                continue
            try:
                frame = _decode_client(raw)
            except msgspec.ValidationError as exc:
                connection.send_now(_error("invalid-frame", str(exc)))
                continue
            except msgspec.DecodeError as exc:
                connection.send_now(_error("malformed-frame", f"Frames must be JSON objects: {exc}"))
                continue
            await _dispatch(connection, frame)
    except asyncio.CancelledError:
        # Stopped by _close (too slow, and the close frame could not go out): end like a close,
        # unless the server cancelled this task too.
        if not connection.kicked or asyncio.current_task().uncancel() > 0:
            raise
    except Exception as exc:  # noqa: BLE001 - a vanished peer ends the connection like a close
        log.debug("chats_socket_ended", connection=connection.id, error=str(exc))
    finally:
        connection.closed = True
        connection.room.set()
        hub.detach(connection)
        if connection.writer is not None:
            connection.writer.cancel()
        await hub.drop_presence(connection)


async def _dispatch(connection: Connection, frame) -> None:
    hub = connection.hub
    if isinstance(frame, Subscribe):
        await _subscribe(connection, frame)
    elif isinstance(frame, Unsubscribe):
        known = frame.channel_id in connection.subs
        hub.drop_sub(connection, frame.channel_id)
        if known:
            connection.send_now(encode({"type": "unsubscribed", "channel_id": frame.channel_id,
                                        "ref": frame.ref}).decode())
        else:
            connection.send_now(_error("not-subscribed", "You are not subscribed to that channel", frame.ref,
                                       channel_id=str(frame.channel_id)))
    elif isinstance(frame, Typing):
        if frame.channel_id not in connection.subs:
            connection.send_now(_error("not-subscribed", "Subscribe to a channel before typing in it", frame.ref,
                                       channel_id=str(frame.channel_id)))
            return
        now = asyncio.get_running_loop().time()
        if now - connection.typed.get(frame.channel_id, 0.0) < TYPING_INTERVAL_S:
            return  # at most one typing frame per second per channel and connection
        connection.typed[frame.channel_id] = now
        await hub.chats.publish(frame.channel_id, {"type": "typing", "channel_id": frame.channel_id,
                                                   "user_id": connection.actor.user_id,
                                                   "display_name": connection.actor.display_name})
    elif isinstance(frame, Ack):
        try:
            await check_mark_read(connection.actor, hub.kernel, frame.channel_id, frame.seq)
        except Problem as problem:
            connection.send_now(_error(problem.slug, str(problem.detail), frame.ref,
                                       channel_id=str(frame.channel_id)))
    elif isinstance(frame, Ping):
        connection.send_now(encode({"type": "pong", "ref": frame.ref}).decode())
    elif isinstance(frame, SetPresence):
        connection.status = frame.status
        await hub.set_presence(connection, frame.status)
    elif isinstance(frame, PresenceSubscribe):
        hub.set_interest(connection, frame.user_ids)
        try:
            statuses = await hub.chats.presence.statuses(list(connection.interest))
        except Exception as exc:  # noqa: BLE001 - the live frames still come once Redis answers
            log.warning("chats_presence_failed", error=str(exc))
            statuses = []
        for user_id, status, _ in statuses:  # where everyone stands now; changes follow as they happen
            connection.send_now(encode({"type": "presence", "user_id": user_id, "status": status}).decode())
        connection.send_now(encode({"type": "presence_subscribed", "count": len(connection.interest),
                                    "ref": frame.ref}).decode())
    elif isinstance(frame, Auth):
        connection.send_now(_error("already-authenticated", "This connection is already authenticated", frame.ref))


async def _subscribe(connection: Connection, frame: Subscribe) -> None:
    hub = connection.hub
    channel_id = frame.channel_id
    if channel_id in connection.subs:
        connection.send_now(_error("already-subscribed", "Already subscribed to that channel", frame.ref,
                                   channel_id=str(channel_id)))
        return
    try:
        async with hub.kernel.db.pool.acquire() as db:
            found = await access_channel(db, connection.actor, channel_id, "chats.read")
    except Problem as problem:
        connection.send_now(_error(problem.slug, str(problem.detail), frame.ref, channel_id=str(channel_id)))
        return
    try:
        feed = await hub.feed(channel_id)
    except Problem as problem:
        connection.send_now(_error(problem.slug, str(problem.detail), frame.ref, channel_id=str(channel_id)))
        return
    except Exception as exc:  # noqa: BLE001 - Redis or the database is away: say so, keep the connection
        log.warning("chats_subscribe_failed", channel_id=str(channel_id), error=str(exc))
        connection.send_now(_error("unavailable", "Subscribing failed for now; try again shortly", frame.ref,
                                   channel_id=str(channel_id)))
        return
    snapshot = feed.last
    sub = _Sub(snapshot if frame.after_seq is None else min(frame.after_seq, snapshot))
    feed.conns[connection] = sub  # from here on live frames are buffered in sub.pending
    connection.subs[channel_id] = sub
    await hub.watch_presence(connection, found.workspace_id)
    connection.send_now(encode({"type": "subscribed", "channel_id": channel_id, "last_seq": snapshot,
                                "after_seq": frame.after_seq, "ref": frame.ref}).decode())
    if frame.after_seq is not None and sub.cursor < snapshot:
        limit = hub.chats.settings.catchup_limit
        if snapshot - sub.cursor > limit:
            connection.send_now(_error("resync-required", f"More than {limit} messages were missed; load the "
                                                          f"history over REST and subscribe again", frame.ref,
                                       channel_id=str(channel_id), last_seq=snapshot))
            hub.drop_sub(connection, channel_id)
            return
        page = max(1, min(CATCHUP_PAGE, connection.queue_size // 2))
        while sub.cursor < snapshot and not connection.closed:
            await connection.wait_room(page)
            async with hub.kernel.db.pool.acquire() as db:
                messages = await load_range(db, channel_id, sub.cursor, snapshot, page)
            if not messages:
                break
            for message in messages:
                connection.offer(_frame(encode(message_frame(message)).decode()))
                sub.cursor = message.seq
        sub.cursor = snapshot
    # Replay what arrived live meanwhile, above what was sent, and go live: no await in between.
    pending, sub.pending = sub.pending or [], None
    for seq, event in pending:
        if seq is None or seq > sub.cursor:
            if seq is not None:
                sub.cursor = seq
            connection.offer(event)


async def stop_hub(kernel: Kernel) -> None:
    """Plugin shutdown: close every connection with 1001 so clients reconnect elsewhere at once."""
    chats = runtime(kernel)
    hub = chats.hub
    if hub is None:
        return
    hub.heartbeat.cancel()
    for connection in list(hub.connections):
        connection.closed = True
        try:
            await connection.socket.close(code=CLOSE_GOING_AWAY, reason="server shutting down")
        except Exception as exc:  # noqa: BLE001 - the peer may be gone already
            log.debug("chats_close_failed", error=str(exc))
        await hub.drop_presence(connection)
    chats.hub = None


HANDLERS = [chats_socket]
