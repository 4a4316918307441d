"""Realtime fan-out over Redis pub/sub, for pushing messages to WebSocket clients.

Every web process subscribes to the channels its connected clients watch; a message published
by any process reaches every subscriber in every process. Unlike the event bus this is
fire-and-forget: a message published while Redis is unreachable, or while a client is
disconnected, is gone. Clients therefore resynchronise (refetch state) after reconnecting or
after being dropped, and the durable record of what happened stays in the event bus.

Why one pub/sub connection per process: a connection per WebSocket would multiply Redis
connections by the number of clients. Here one :class:`Fanout` per process owns a single
pub/sub connection, subscribes each channel once, and a dispatcher task copies each message
into the bounded queue of every local subscriber. A subscriber whose queue is full (a slow
client) is dropped with :class:`SlowConsumer` rather than buffering without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

log = logging.getLogger("sygmax.events.fanout")

_CLOSED = object()
_DROPPED = object()


class SlowConsumer(Exception):
    """The subscriber fell ``queue_size`` messages behind and was dropped; resync and resubscribe."""


class Subscription:
    """Messages of one channel for one local subscriber, as an async iterator of ``bytes``.

    Iteration ends when the :class:`Fanout` is closed and raises :class:`SlowConsumer` when the
    subscriber was dropped for falling behind.
    """

    def __init__(self, channel: str, queue_size: int) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)

    def _offer(self, data: bytes) -> bool:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True

    def _end(self, sentinel: object) -> None:
        """Discard what is queued (a dropped client resyncs anyway) and wake the reader."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(sentinel)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if item is _DROPPED:
            self._queue.put_nowait(_DROPPED)
            raise SlowConsumer(f"subscriber of {self.channel!r} fell behind and was dropped")
        return item


class Fanout:
    """Process-wide pub/sub fan-out: create one per process and share it.

    ``prefix`` namespaces the Redis channels so other pub/sub users cannot collide with ours.
    The dispatcher reconnects by itself after a Redis outage (backing off up to
    ``reconnect_max_s``) and resubscribes every channel that still has local subscribers. A
    connection silent for ``ping_after_s`` is sent a PING; no answer within as long again means
    the link is dead without having been closed (a dropped NAT entry, a paused VM), so it is
    replaced rather than waited on for the kernel's TCP timeout.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "sygmax:rt:",
        queue_size: int = 256,
        reconnect_max_s: float = 2.0,
        ping_after_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._queue_size = queue_size
        self._reconnect_max_s = reconnect_max_s
        self._ping_after_s = ping_after_s
        self._encode = msgspec.json.Encoder().encode
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE against (re)connecting
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, message: bytes | str | dict[str, Any]) -> int:
        """Send ``message`` (a dict is JSON-encoded) to every subscriber of ``channel``.

        Returns how many processes received it. Raises Redis connection errors: unlike the
        event bus there is no retry, the caller decides whether a lost message matters.
        """
        data = self._encode(message) if isinstance(message, dict) else message
        return await self._redis.publish(self._prefix + channel, data)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Subscribe to ``channel`` for the duration of the ``async with`` block.

        Entering returns once Redis confirmed the subscription, so anything published after
        that is delivered; a client can subscribe first and then fetch a snapshot without a gap.
        During a Redis outage entering waits for the reconnect (wrap it in a timeout if needed).
        """
        if self._closed:
            raise RuntimeError("fanout is closed")
        key = self._prefix + channel
        subscription = Subscription(channel, self._queue_size)
        local = self._subscribers.setdefault(key, set())
        first = not local
        local.add(subscription)
        confirmed = self._confirmations.get(key)
        if first and confirmed is None:
            confirmed = self._confirmations[key] = asyncio.get_running_loop().create_future()
        try:
            self._ensure_dispatcher()
            if first:
                async with self._lock:
                    if self._pubsub is not None:
                        await self._send_quietly(self._pubsub.subscribe(key))
            if confirmed is not None:
                await asyncio.shield(confirmed)
            yield subscription
        finally:
            local.discard(subscription)
            if not local and self._subscribers.get(key) is local:
                del self._subscribers[key]
                pending = self._confirmations.pop(key, None)
                if pending is not None and not pending.done():
                    pending.cancel()
                async with self._lock:
                    if self._pubsub is not None and key not in self._subscribers:
                        await self._send_quietly(self._pubsub.unsubscribe(key))

    async def aclose(self) -> None:
        """Stop the dispatcher, close the pub/sub connection and end every subscriber's iteration."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        for local in self._subscribers.values():
            for subscription in local:
                subscription._end(_CLOSED)
        self._subscribers.clear()
        for future in self._confirmations.values():
            if not future.done():
                future.set_result(None)  # release waiters; their iteration ends at once
        self._confirmations.clear()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            # Held on self: the event loop keeps only a weak reference to tasks.
            self._dispatcher = asyncio.create_task(self._dispatch(), name="fanout-dispatcher")

    @staticmethod
    async def _send_quietly(command: Any) -> None:
        """A failed (UN)SUBSCRIBE means the connection is down; the dispatcher's reconnect
        resubscribes from ``_subscribers``, which is already up to date."""
        try:
            await command
        except Exception as exc:  # noqa: BLE001 - socket errors arrive as RedisError subclasses too
            log.info("pub/sub command failed, left to the reconnect: %s", exc)

    async def _dispatch(self) -> None:
        """Own the pub/sub connection: (re)connect, resubscribe, route messages; forever."""
        delay = 0.05
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with self._lock:
                    await pubsub.connect()
                    if self._subscribers:
                        await pubsub.subscribe(*self._subscribers)
                    self._pubsub = pubsub
                delay = 0.05
                heard, pinged = time.monotonic(), False
                while True:
                    message = await pubsub.get_message(timeout=min(1.0, self._ping_after_s))
                    if message is not None:
                        heard, pinged = time.monotonic(), False
                        self._route(message)
                        continue
                    silent = time.monotonic() - heard
                    if silent > 2 * self._ping_after_s:
                        raise ConnectionError(f"no answer to PING for {silent - self._ping_after_s:.1f}s")
                    if silent > self._ping_after_s and not pinged:
                        await pubsub.ping()
                        pinged = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                # Warn once per outage; the retries that follow are noise.
                level = logging.WARNING if delay == 0.05 else logging.DEBUG
                log.log(level, "fanout pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
            finally:
                self._pubsub = None
                await asyncio.shield(self._close_quietly(pubsub))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_s)

    @staticmethod
    async def _close_quietly(pubsub: PubSub) -> None:
        try:
            await pubsub.aclose()
        except Exception as exc:  # noqa: BLE001 - the connection is being discarded anyway
            log.debug("closing a broken pub/sub connection failed: %s", exc)

    def _route(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "message":
            local = self._subscribers.get(channel)
            if not local:
                return
            data = message["data"]
            if isinstance(data, str):
                data = data.encode()
            for subscription in tuple(local):
                if not subscription._offer(data):
                    local.discard(subscription)
                    subscription._end(_DROPPED)
                    log.info("dropped a slow subscriber of %s", channel)
        elif kind == "subscribe":
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)


__all__ = ["Fanout", "SlowConsumer", "Subscription"]
