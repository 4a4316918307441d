"""Durable, typed event bus on Redis Streams: at-least-once delivery, idempotent handling.

Why Redis Streams: consumer groups give load-balanced delivery with a per-group pending list,
so an event a consumer read but never acknowledged (it crashed, or its handler failed) is still
there to be retried or reclaimed. Every event type gets its own stream
(``{prefix}:{event_type}``) so each consumer group reads only the types it handles.

Delivery contract, per consumer group:

* Every event is handled at least once, or lands in the dead-letter stream ``{prefix}:dead``
  with the reason: undecodable payload, unknown type/version, no handler in the group, or
  ``max_attempts`` handler failures.
* A failed event stays pending and is retried after ``retry_base_ms * 2**(attempt-1)``
  (capped by ``retry_max_ms``) while the consumer keeps reading newer events, so one failing
  event never stalls a stream. Retries are therefore not ordered with respect to newer events.
* A consumer that dies leaves its in-flight events pending; survivors reclaim entries idle
  longer than ``claim_idle_ms``. Live consumers refresh their own in-flight and backing-off
  entries well before that, so a slow handler or a long backoff is not mistaken for a death.
* An event published more than once (an outbox relay retrying, a replay) is handled once: a
  marker ``{prefix}:done:{group}:{event_id}``, written atomically with the XACK, is checked
  before handling. The marker is a check, not a lock, and it cannot cover a crash after the
  handler's side effect but before the ack (the entry is redelivered with no marker yet).
  Handlers whose effect lives in PostgreSQL close both gaps with :func:`record_processed` in
  the same transaction as the effect, which makes the effect exactly-once.

Needs Redis 7 or later (XAUTOCLAIM, and the lag figure of XINFO GROUPS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sygmax.config import EventSettings

log = logging.getLogger("sygmax.events")

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
DEAD_LETTER_SUFFIX = "dead"

Handler = Callable[[Any], Awaitable[None]]
"""An event handler: ``async def handle(event: MyEvent) -> None``; raise to have it retried."""

# Stream names, entry ids and field names are bytes or str, as the Redis client returns them.
Entries = Sequence[tuple[Any, Any]]  # (entry id, fields) as XREADGROUP/XCLAIM return them
DeadLetter = tuple[Any, Any, Any, str, int]  # stream, entry id, fields, reason, attempts


def new_event_id() -> str:
    """A UUIDv7 string: time-ordered, so event ids index compactly in PostgreSQL b-trees."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, kw_only=True):
    """Base of every bus event. Subclasses set ``event_type`` (``"area.name"``) and ``version``.

    A subclass that sets ``event_type`` or ``version`` registers itself, so decoding needs no
    central list. A new incompatible shape of an event is a new class with ``version`` bumped;
    both versions stay registered so old entries still in the stream decode to the old class.
    """

    event_type: ClassVar[str]
    version: ClassVar[int] = 1

    id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: datetime = msgspec.field(default_factory=_utcnow)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__ or "version" in cls.__dict__:
            register_event(cls)


_REGISTRY: dict[tuple[str, int], type[Event]] = {}


def register_event(cls: type[Event]) -> type[Event]:
    """Register ``cls`` under ``(event_type, version)``; two different classes may not share one."""
    event_type = getattr(cls, "event_type", None)
    if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.match(event_type):
        raise TypeError(f"{cls.__qualname__}.event_type must look like 'area.name', got {event_type!r}")
    if not isinstance(cls.version, int) or cls.version < 1:
        raise TypeError(f"{cls.__qualname__}.version must be a positive int, got {cls.version!r}")
    key = (event_type, cls.version)
    existing = _REGISTRY.get(key)
    # The same class seen again (a module re-imported) replaces itself; a different class is a clash.
    if existing is not None and _dotted(existing) != _dotted(cls):
        raise TypeError(f"{event_type} v{cls.version} is already {_dotted(existing)}")
    _REGISTRY[key] = cls
    return cls


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def event_class(event_type: str, version: int) -> type[Event] | None:
    """The class registered for ``(event_type, version)``, if any."""
    return _REGISTRY.get((event_type, version))


PUBLISH_CHUNK = 1000
"""Events per script call in :meth:`EventBus.publish_many` (bounds how long Redis is busy)."""

# KEYS are the target streams; ARGV[1] is MAXLEN, then five values per event: the stream's index
# in KEYS, id, type, version, payload.
_PUBLISH_SCRIPT = """
local ids = {}
for i = 2, #ARGV, 5 do
  ids[#ids + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', ARGV[1], '*',
    'id', ARGV[i + 1], 'type', ARGV[i + 2], 'version', ARGV[i + 3], 'payload', ARGV[i + 4])
end
return ids
"""


class UndecodableEvent(Exception):
    """A stream entry that cannot become an :class:`Event`; it goes to the dead-letter stream."""


class EventBus:
    """Publishes events to Redis Streams and decodes stream entries back into typed events.

    Works with clients created with or without ``decode_responses``: field names and stream
    names are kept in the client's native form (bytes or str) so the hot path never converts.
    """

    def __init__(self, redis: Redis, settings: EventSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = settings.stream_prefix
        self.dead_stream = f"{self.prefix}:{DEAD_LETTER_SUFFIX}"
        self.decode_responses = bool(redis.get_connection_kwargs().get("decode_responses"))
        native: Callable[[str], Any] = (lambda text: text) if self.decode_responses else str.encode
        self.native = native
        self._k_type, self._k_version, self._k_payload = map(native, ("type", "version", "payload"))
        self._encode = msgspec.json.Encoder().encode
        self._decoders: dict[tuple[Any, Any], msgspec.json.Decoder] = {}
        self._meta: dict[type[Event], tuple[str, str, str]] = {}

    def stream_for(self, event_type: str | type[Event]) -> str:
        """The stream that carries ``event_type`` (every version of it)."""
        name = event_type if isinstance(event_type, str) else event_type.event_type
        return f"{self.prefix}:{name}"

    def _describe(self, cls: type[Event]) -> tuple[str, str, str]:
        meta = self._meta.get(cls)
        if meta is None:
            if _REGISTRY.get((getattr(cls, "event_type", ""), cls.version)) is not cls:
                raise TypeError(f"{cls.__qualname__} is not a registered event (set event_type)")
            meta = self._meta[cls] = (self.stream_for(cls), cls.event_type, str(cls.version))
        return meta

    def _fields(self, event: Event) -> tuple[str, dict[str, Any]]:
        stream, event_type, version = self._describe(type(event))
        fields = {"id": event.id, "type": event_type, "version": version, "payload": self._encode(event)}
        return stream, fields

    async def publish(self, event: Event) -> str:
        """Append ``event`` to its stream; returns the stream entry id."""
        stream, fields = self._fields(event)
        maxlen = self.settings.stream_max_len
        entry_id = await self.redis.xadd(stream, fields, maxlen=maxlen, approximate=True)
        return entry_id if isinstance(entry_id, str) else entry_id.decode()

    async def publish_many(self, events: Iterable[Event]) -> list[str]:
        """Append many events, up to :data:`PUBLISH_CHUNK` per round trip, in order.

        Each chunk is one server-side script call rather than a pipeline of XADDs: Redis applies
        the chunk atomically (an outbox relay never half-publishes a transaction's events) and
        the client packs one command instead of one per event, which is most of the publish cost.
        """
        events = list(events)
        maxlen = self.settings.stream_max_len
        entry_ids: list[str] = []
        for start in range(0, len(events), PUBLISH_CHUNK):
            streams: dict[str, int] = {}
            args: list[Any] = [maxlen]
            for event in events[start:start + PUBLISH_CHUNK]:
                stream, event_type, version = self._describe(type(event))
                index = streams.get(stream) or streams.setdefault(stream, len(streams) + 1)
                args += (index, event.id, event_type, version, self._encode(event))
            ids = await self.redis.eval(_PUBLISH_SCRIPT, len(streams), *streams, *args)
            entry_ids += [i if isinstance(i, str) else i.decode() for i in ids]
        return entry_ids

    def decode(self, fields: Mapping[Any, Any]) -> Event:
        """Turn stream entry fields into their event class; :class:`UndecodableEvent` says why not."""
        key = (fields.get(self._k_type), fields.get(self._k_version))
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoder_for(*key)
        try:
            return decoder.decode(fields[self._k_payload])
        except KeyError:
            raise UndecodableEvent("entry has no payload field") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UndecodableEvent(f"malformed payload: {exc}") from None

    def _decoder_for(self, raw_type: Any, raw_version: Any) -> msgspec.json.Decoder:
        if raw_type is None or raw_version is None:
            raise UndecodableEvent("entry has no type or version field")
        try:
            event_type = raw_type if isinstance(raw_type, str) else raw_type.decode()
            version = int(raw_version)
        except (UnicodeDecodeError, ValueError):
            raise UndecodableEvent(f"bad type/version {raw_type!r}/{raw_version!r}") from None
        cls = _REGISTRY.get((event_type, version))
        if cls is None:
            raise UndecodableEvent(f"unknown event {event_type} v{version}")
        decoder = self._decoders[(raw_type, raw_version)] = msgspec.json.Decoder(cls)
        return decoder

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) reading from the start; idempotent."""
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def lag(self, group: str, streams: Iterable[str] | None = None) -> dict[str, int]:
        """Unfinished entries per stream for ``group`` (not yet delivered + delivered, unacked).

        ``streams`` defaults to the streams of every registered event type; streams where the
        group does not exist are left out. Where Redis cannot know the lag (entries were deleted
        from the middle of the stream) only the pending count is reported. For a /metrics gauge.
        """
        names = list(streams) if streams is not None else sorted({self.stream_for(t) for t, _ in _REGISTRY})
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.xinfo_groups(name)
        wanted = self.native(group)
        result: dict[str, int] = {}
        for name, groups in zip(names, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(groups, Exception):
                continue
            for info in groups:
                if info["name"] == wanted:
                    result[name] = int(info.get("lag") or 0) + int(info["pending"])
        return result

    async def dead_count(self) -> int:
        """Entries in the dead-letter stream, for a /metrics gauge."""
        return int(await self.redis.xlen(self.dead_stream))


# Sets the done markers and acknowledges in one atomic step, so a marker never exists for an
# unacked entry and an ack never lands without its marker. KEYS[1] is the stream, KEYS[2..] the
# markers; ARGV[1] the group, ARGV[2] the marker TTL, ARGV[3..] the entry ids. XACK goes in chunks
# because Lua's unpack() has a stack limit.
_ACK_SCRIPT = """
for i = 2, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[2]) end
local acked = 0
for i = 3, #ARGV, 1000 do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return acked
"""

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class Consumer:
    """One member of a consumer group: reads, handles, retries, dead-letters, reclaims.

    Run several (one per process or more) with the same ``group`` to share the load; each group
    gets its own copy of every event. ``name`` must be unique among live consumers and is best
    stable across restarts ("worker-2", not a pid), so the group's consumer list does not grow
    with every restart. ``handlers`` maps event classes (each version is its own class) to async
    handlers; an event of a registered type and version the group has no handler for is
    dead-lettered rather than silently dropped. Within one consumer, events are handled one at
    a time in stream order (retries excepted).
    """

    def __init__(self, bus: EventBus, group: str, handlers: Mapping[type[Event], Handler], name: str) -> None:
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        self.bus, self.group, self.name = bus, group, name
        self.handlers = dict(handlers)
        settings = bus.settings
        self._settings = settings
        self._streams: list[Any] = sorted({bus.native(bus.stream_for(cls)) for cls in self.handlers})
        self._read_from = {stream: ">" for stream in self._streams}
        self._done = f"{bus.prefix}:done:{group}:".encode()  # bytes: packed once, used twice
        self._attempts_key = f"{bus.prefix}:attempts:{group}"
        self._claim_every = settings.claim_idle_ms / 2000
        self._max_backing_off = settings.batch_size * 10
        self._retry: dict[tuple[Any, Any], float] = {}  # (stream, entry id) -> monotonic due time
        self._inflight: Sequence[tuple[Any, Entries]] = ()
        self._cursors: dict[Any, Any] = {}
        self._next_claim = 0.0
        self._keepalive_task: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; survives Redis outages by retrying with backoff.

        On return the current batch is finished and acknowledged. Events still backing off stay
        pending under this consumer's name and are reclaimed by a peer (or by this name when it
        runs again) after ``claim_idle_ms``.
        """
        self._keepalive_task = asyncio.create_task(self._keepalive(), name=f"events-keepalive-{self.name}")
        outage_delay = 0.05
        try:
            await self._ensure_groups(stop)
            while not stop.is_set():
                try:
                    await self._step()
                    outage_delay = 0.05
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        log.warning("consumer group %s missing (Redis restarted?); recreating", self.group)
                        await self._ensure_groups(stop)
                        continue
                    log.error("redis refused a command for consumer %s: %s; retrying", self.name, exc)
                    await _sleep_unless(stop, outage_delay)
                    outage_delay = min(outage_delay * 2, 5.0)
                except _CONNECTION_ERRORS as exc:
                    log.warning("redis unavailable for consumer %s: %s; retrying", self.name, exc)
                    await _sleep_unless(stop, outage_delay)
                    outage_delay = min(outage_delay * 2, 5.0)
        finally:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
            self._keepalive_task = None

    async def _ensure_groups(self, stop: asyncio.Event) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                for stream in self._streams:
                    await self.bus.ensure_group(_text(stream), self.group)
                return
            except _CONNECTION_ERRORS as exc:
                log.warning("redis unavailable while creating group %s: %s", self.group, exc)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 5.0)

    async def _step(self) -> None:
        """One loop turn: reclaim from dead peers, retry what is due, read and handle new entries."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_every
            await self._reclaim_abandoned()
        if self._retry:
            await self._retry_due()
        now = time.monotonic()
        wake = self._next_claim
        if self._retry:
            wake = min(wake, min(self._retry.values()))
        block_ms = max(1, min(1000, int((wake - now) * 1000)))
        if len(self._retry) >= self._max_backing_off:
            # Too many events failing: stop taking new ones until the backlog drains.
            await asyncio.sleep(block_ms / 1000)
            return
        response = await self.bus.redis.xreadgroup(
            self.group, self.name, self._read_from, count=self._settings.batch_size, block=block_ms
        )
        if response:  # RESP2 gives [[stream, entries], ...], RESP3 clients a dict
            batches = list(response.items()) if isinstance(response, dict) else response
            await self._process(batches, fresh=True)

    async def _reclaim_abandoned(self) -> None:
        """XAUTOCLAIM entries idle past ``claim_idle_ms``: their consumer is dead (or was)."""
        pipe = self.bus.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xautoclaim(
                stream, self.group, self.name, self._settings.claim_idle_ms,
                start_id=self._cursors.get(stream, "0-0"), count=self._settings.batch_size,
            )
        batches = []
        for stream, (cursor, entries, *_deleted) in zip(self._streams, await pipe.execute(), strict=True):
            self._cursors[stream] = cursor
            # Our own backing-off entries come back only if the keepalive was late; keep their backoff.
            entries = [entry for entry in entries if (stream, entry[0]) not in self._retry]
            if entries:
                batches.append((stream, entries))
        if batches:
            log.info("consumer %s reclaimed %d abandoned entries", self.name, sum(len(e) for _, e in batches))
            await self._process(batches, fresh=False)

    async def _retry_due(self) -> None:
        """XCLAIM our own failed entries whose backoff has elapsed and handle them again."""
        now = time.monotonic()
        due: dict[Any, list[Any]] = {}
        for (stream, entry_id), at in self._retry.items():
            if at <= now:
                due.setdefault(stream, []).append(entry_id)
        if not due:
            return
        pipe = self.bus.redis.pipeline(transaction=False)
        for stream, ids in due.items():
            pipe.xclaim(stream, self.group, self.name, 0, ids)
        results = await pipe.execute()
        for stream, ids in due.items():
            for entry_id in ids:
                del self._retry[(stream, entry_id)]
        batches = [(stream, entries) for stream, entries in zip(due, results, strict=True) if entries]
        if batches:
            await self._process(batches, fresh=False)

    async def _process(self, batches: Sequence[tuple[Any, Entries]], fresh: bool) -> None:
        """Decode, dedupe, handle and acknowledge entries grouped by stream.

        ``fresh`` entries were never delivered before, so they have no attempt counter to clear.
        """
        bus, done_prefix = self.bus, self._done
        decoded: list[tuple[Any, Any, Any, Event, Handler, bytes]] = []
        dead: list[DeadLetter] = []
        acks: dict[Any, list[Any]] = {stream: [] for stream, _ in batches}
        for stream, entries in batches:
            for entry_id, fields in entries:
                if not fields:  # claimed after MAXLEN trimmed it: nothing left to handle
                    acks[stream].append(entry_id)
                    continue
                try:
                    event = bus.decode(fields)
                except UndecodableEvent as exc:
                    dead.append((stream, entry_id, fields, str(exc), 0))
                    continue
                handler = self.handlers.get(type(event))
                if handler is None:
                    reason = f"group {self.group} has no handler for {event.event_type} v{event.version}"
                    dead.append((stream, entry_id, fields, reason, 0))
                    continue
                decoded.append((stream, entry_id, fields, event, handler, done_prefix + event.id.encode()))
        self._inflight = batches
        try:
            already = await bus.redis.mget([item[5] for item in decoded]) if decoded else ()
            markers: dict[Any, list[bytes]] = {}
            failures: list[tuple[Any, Any, Any, BaseException]] = []
            handled: set[str] = set()
            for item, done in zip(decoded, already, strict=True):
                stream, entry_id, fields, event, handler, marker = item
                if done is None and event.id not in handled:
                    try:
                        await handler(event)
                    except Exception as exc:  # noqa: BLE001 - any handler failure is retried
                        failures.append((stream, entry_id, fields, exc))
                        continue
                    handled.add(event.id)
                    markers.setdefault(stream, []).append(marker)
                acks[stream].append(entry_id)
            if failures:
                dead += await self._record_failures(failures)
            await self._finish(acks, markers, dead, fresh)
        finally:
            self._inflight = ()

    async def _record_failures(self, failures: list[tuple[Any, Any, Any, BaseException]]) -> list[DeadLetter]:
        """Count each failure in Redis (so a peer that reclaims the entry continues the count);
        schedule a retry after the backoff, or return the entries that used up their attempts."""
        settings = self._settings
        pipe = self.bus.redis.pipeline(transaction=False)
        for stream, entry_id, _, _ in failures:
            pipe.hincrby(self._attempts_key, _attempt_field(stream, entry_id), 1)
        pipe.expire(self._attempts_key, settings.dedupe_ttl_s)
        counts = (await pipe.execute())[:-1]
        now = time.monotonic()
        dead: list[DeadLetter] = []
        for (stream, entry_id, fields, exc), attempts in zip(failures, counts, strict=True):
            error = f"{type(exc).__name__}: {exc}"[:2000]
            if attempts >= settings.max_attempts:
                log.error("event %s failed %d times in group %s; dead-lettered: %s",
                          _text(entry_id), attempts, self.group, error)
                dead.append((stream, entry_id, fields, error, attempts))
            else:
                delay_ms = min(settings.retry_base_ms * 2 ** (attempts - 1), settings.retry_max_ms)
                log.warning("event %s failed (attempt %d) in group %s, retry in %d ms: %s",
                            _text(entry_id), attempts, self.group, delay_ms, error)
                self._retry[(stream, entry_id)] = now + delay_ms / 1000
        return dead

    async def _finish(self, acks: dict[Any, list[Any]], markers: dict[Any, list[bytes]],
                      dead: list[DeadLetter], fresh: bool) -> None:
        """Dead-letter copies, done markers, acks and attempt-counter cleanup in one transaction."""
        settings, redis = self._settings, self.bus.redis
        ttl = settings.dedupe_ttl_s
        if fresh and not dead and len(acks) == 1:  # the common case: one script call, atomic by itself
            [(stream, ids)] = acks.items()
            keys = markers.get(stream, ())
            await redis.eval(_ACK_SCRIPT, 1 + len(keys), stream, *keys, self.group, ttl, *ids)
            return
        pipe = redis.pipeline(transaction=True)
        forget = [] if fresh else [_attempt_field(stream, i) for stream, ids in acks.items() for i in ids]
        for stream, entry_id, fields, reason, attempts in dead:
            record = {**fields, "dead.group": self.group, "dead.consumer": self.name, "dead.error": reason,
                      "dead.attempts": attempts, "dead.stream": stream, "dead.entry_id": entry_id,
                      "dead.at": _utcnow().isoformat()}
            pipe.xadd(self.bus.dead_stream, record, maxlen=settings.stream_max_len, approximate=True)
            acks[stream].append(entry_id)
            if attempts:
                forget.append(_attempt_field(stream, entry_id))
        if forget:
            pipe.hdel(self._attempts_key, *forget)
        for stream, ids in acks.items():
            if ids:
                keys = markers.get(stream, ())
                pipe.eval(_ACK_SCRIPT, 1 + len(keys), stream, *keys, self.group, ttl, *ids)
        if pipe.command_stack:
            await pipe.execute()

    async def _keepalive(self) -> None:
        """Refresh the idle time of entries this consumer still owns (in flight or backing off)
        every third of ``claim_idle_ms``, so peers only reclaim entries of dead consumers."""
        period = self._settings.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(period)
            held: dict[Any, list[Any]] = {}
            for stream, entry_id in list(self._retry):
                held.setdefault(stream, []).append(entry_id)
            for stream, entries in self._inflight:
                held.setdefault(stream, []).extend(entry_id for entry_id, _ in entries)
            if not held:
                continue
            pipe = self.bus.redis.pipeline(transaction=False)
            for stream, ids in held.items():
                pipe.xclaim(stream, self.group, self.name, 0, ids, justid=True)
            try:
                await pipe.execute()
            except RedisError as exc:
                log.warning("keepalive for consumer %s failed: %s", self.name, exc)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def _attempt_field(stream: Any, entry_id: Any) -> str:
    return f"{_text(stream)}/{_text(entry_id)}"


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class SqlExecutor(Protocol):
    """What :func:`record_processed` needs: an asyncpg ``Connection`` inside a transaction."""

    async def execute(self, query: str, *args: Any) -> str: ...


async def record_processed(conn: SqlExecutor, group: str, event_id: str) -> bool:
    """Claim ``event_id`` for ``group`` inside the caller's open transaction.

    The table ``sygmax_processed_event`` comes with the kernel's first migration.
    Returns True the first time and False when an earlier delivery already committed its effect,
    in which case the handler should return without doing anything. Because the row commits or
    rolls back together with the effect, the effect happens exactly once even if the consumer
    dies between committing and acknowledging. Concurrent duplicates serialize on the primary key::

        async with pool.acquire() as conn, conn.transaction():
            if not await record_processed(conn, "search-indexer", event.id):
                return
            await conn.execute("INSERT INTO search_docs ...")
    """
    status = await conn.execute(
        "INSERT INTO sygmax_processed_event (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        group, event_id,
    )
    return status == "INSERT 0 1"


__all__ = [
    "Consumer",
    "Event",
    "EventBus",
    "Handler",
    "UndecodableEvent",
    "event_class",
    "new_event_id",
    "record_processed",
    "register_event",
]
