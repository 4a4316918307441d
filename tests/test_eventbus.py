"""Event bus and realtime fan-out against a real redis-server (and PostgreSQL for exactly-once)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from sygmax.config import EventSettings
from sygmax.events.bus import Consumer, Event, EventBus, Handler, record_processed
from sygmax.events.fanout import Fanout, SlowConsumer
from tests.servers import PostgresServer, RedisServer


class Posted(Event):
    event_type = "test.posted"
    text: str


class PostedV2(Event):
    event_type = "test.posted"
    version = 2
    text: str
    edited: bool = False


class Work(Event):
    event_type = "test.work"
    n: int
    poison: bool = False


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def settings(**overrides: object) -> EventSettings:
    """Fast retry/claim timings; a fresh stream prefix so tests never see each other's streams."""
    values: dict[str, object] = {
        "stream_prefix": f"t-{uuid.uuid4().hex[:10]}", "max_attempts": 3, "retry_base_ms": 20,
        "retry_max_ms": 200, "claim_idle_ms": 500, "batch_size": 50,
    }
    return EventSettings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def consuming(bus: EventBus, handlers: dict[type[Event], Handler], group: str = "g",
                    name: str = "c1") -> AsyncIterator[Consumer]:
    consumer = Consumer(bus, group, handlers, name)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await task


async def wait_until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _at_least(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def dead_letters(redis: Redis, bus: EventBus) -> list[dict[str, str]]:
    entries = await redis.xrange(bus.dead_stream)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_round_trip_decodes_typed_events(redis: Redis) -> None:
    bus = EventBus(redis, settings())
    sent = [Posted(text="hello"), *[Posted(text=f"m{i}") for i in range(120)]]
    entry_id = await bus.publish(sent[0])
    assert isinstance(entry_id, str) and "-" in entry_id
    assert len(await bus.publish_many(sent[1:])) == 120
    received: list[Event] = []

    async def handle(event: Posted) -> None:
        received.append(event)

    async with consuming(bus, {Posted: handle}):
        await wait_until(lambda: len(received) == len(sent))
        await wait_until(lambda: _equals(bus.lag("g"), {bus.stream_for(Posted): 0}), timeout=2)
    assert received == sent  # same ids, fields, timestamps; order kept within a stream
    assert all(type(event) is Posted for event in received)


async def test_clients_with_decode_responses_work_too(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        bus = EventBus(client, settings())
        sent = [Posted(text="tekst ü"), PostedV2(text="v2")]
        await bus.publish_many(sent)
        await client.xadd(bus.stream_for(Posted), {"type": "test.posted", "version": "1", "payload": "[]"})
        received: list[Event] = []

        async def handle(event: Event) -> None:
            received.append(event)

        async with consuming(bus, {Posted: handle, PostedV2: handle}):
            await wait_until(lambda: received == sent)
            await wait_until(lambda: _equals(bus.dead_count(), 1))
        assert await bus.lag("g") == {bus.stream_for(Posted): 0}
    finally:
        await client.aclose()


async def test_versions_decode_to_their_own_classes(redis: Redis) -> None:
    bus = EventBus(redis, settings())
    await bus.publish_many([Posted(text="old"), PostedV2(text="new", edited=True)])
    received: list[Event] = []

    async def handle(event: Event) -> None:
        received.append(event)

    async with consuming(bus, {Posted: handle, PostedV2: handle}):
        await wait_until(lambda: len(received) == 2)
    assert [(type(e), e.text) for e in received] == [(Posted, "old"), (PostedV2, "new")]
    assert received[1].edited is True


async def test_malformed_and_unknown_entries_go_to_dead_letters(redis: Redis) -> None:
    bus = EventBus(redis, settings())
    stream = bus.stream_for(Posted)
    bad = [
        ({"type": "test.posted", "version": "9", "payload": b"{}"}, "unknown event test.posted v9"),
        ({"type": "test.other", "version": "1", "payload": b"{}"}, "unknown event test.other v1"),
        ({"type": "test.posted", "version": "1", "payload": b"{not json"}, "malformed payload"),
        ({"type": "test.posted", "version": "1", "payload": b'{"text": 5}'}, "malformed payload"),
        ({"type": "test.posted", "version": "x", "payload": b"{}"}, "bad type/version"),
        ({"type": "test.posted", "version": "1"}, "no payload"),
        ({"something": "else"}, "no type or version"),
    ]
    for fields, _ in bad:
        await redis.xadd(stream, fields)
    await bus.publish(PostedV2(text="no handler for v2 in this group"))
    good = Posted(text="still alive")
    await bus.publish(good)
    received: list[Event] = []

    async def handle(event: Posted) -> None:
        received.append(event)

    async with consuming(bus, {Posted: handle}):
        await wait_until(lambda: received == [good])
        await wait_until(lambda: _equals(bus.dead_count(), len(bad) + 1), timeout=2)
    letters = await dead_letters(redis, bus)
    for (fields, reason), letter in zip(bad, letters[:-1], strict=True):
        assert reason in letter["dead.error"]
        assert letter["dead.group"] == "g" and letter["dead.attempts"] == "0"
        assert letter["dead.stream"] == stream
        original = {k: v if isinstance(v, str) else v.decode() for k, v in fields.items()}
        assert original.items() <= letter.items()  # the original fields travel with the letter
    assert "no handler for test.posted v2" in letters[-1]["dead.error"]


async def test_always_failing_handler_is_dead_lettered_after_max_attempts_with_backoff(redis: Redis) -> None:
    bus = EventBus(redis, settings(max_attempts=4, retry_base_ms=60, retry_max_ms=150))
    poison, healthy = Work(n=1, poison=True), Work(n=2)
    attempts: list[float] = []
    handled: list[int] = []

    async def handle(event: Work) -> None:
        if event.poison:
            attempts.append(time.monotonic())
            raise RuntimeError("cannot handle this one")
        handled.append(event.n)

    await bus.publish(poison)
    async with consuming(bus, {Work: handle}):
        await wait_until(lambda: len(attempts) == 1)
        await bus.publish(healthy)
        await wait_until(lambda: handled == [2])
        assert len(attempts) < 4, "a backing-off event must not hold up newer events"
        await wait_until(lambda: _equals(bus.dead_count(), 1))
        await asyncio.sleep(0.4)  # longer than any backoff: no further attempt may follow
    assert len(attempts) == 4
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps_ms, [60, 120, 150], strict=True):  # 60 * 2**(n-1), capped at 150
        assert gap >= expected * 0.95, gaps_ms
    [letter] = await dead_letters(redis, bus)
    assert letter["id"] == poison.id and letter["dead.attempts"] == "4"
    assert letter["dead.error"] == "RuntimeError: cannot handle this one"
    assert not await redis.exists(f"{bus.prefix}:attempts:g")
    assert await bus.lag("g") == {bus.stream_for(Work): 0}


async def test_handler_failing_twice_then_succeeding_is_handled_once(redis: Redis) -> None:
    bus = EventBus(redis, settings())
    calls: list[str] = []
    effects: list[str] = []

    async def handle(event: Work) -> None:
        calls.append(event.id)
        if len(calls) <= 2:
            raise ConnectionError("downstream flaked")
        effects.append(event.id)

    event = Work(n=7)
    await bus.publish(event)
    async with consuming(bus, {Work: handle}):
        await wait_until(lambda: effects == [event.id])
        await asyncio.sleep(0.5)
    assert calls == [event.id] * 3 and effects == [event.id]
    assert await bus.dead_count() == 0
    assert not await redis.exists(f"{bus.prefix}:attempts:g")
    assert await redis.exists(f"{bus.prefix}:done:g:{event.id}")


async def test_duplicate_publish_of_an_event_id_is_handled_once(redis: Redis) -> None:
    bus = EventBus(redis, settings())
    event = Work(n=1)
    effects: list[str] = []

    async def handle(event: Work) -> None:
        effects.append(event.id)

    await bus.publish_many([event, event])  # twice in one batch
    async with consuming(bus, {Work: handle}):
        await wait_until(lambda: len(effects) == 1)
        await bus.publish(event)  # again, in a later batch
        await bus.publish(Work(n=2))
        await wait_until(lambda: len(effects) == 2)
        await asyncio.sleep(0.2)
    assert effects == [event.id, effects[1]] and effects[1] != event.id
    assert await bus.lag("g") == {bus.stream_for(Work): 0}


async def test_consumer_rides_out_a_redis_restart() -> None:
    server = RedisServer().start()
    client = Redis.from_url(server.url)
    try:
        bus = EventBus(client, settings())
        received: list[int] = []

        async def handle(event: Work) -> None:
            received.append(event.n)

        async with consuming(bus, {Work: handle}):
            await bus.publish(Work(n=1))
            await wait_until(lambda: received == [1])
            server.stop()  # no persistence: streams and groups are gone when it comes back
            await asyncio.sleep(0.3)
            server.start()
            deadline = time.monotonic() + 20
            while True:  # publish may hit the dead pooled connection once
                with contextlib.suppress(RedisConnectionError):
                    await bus.publish(Work(n=2))
                    break
                assert time.monotonic() < deadline
            await wait_until(lambda: received == [1, 2], timeout=20)
    finally:
        await client.aclose()
        server.cleanup()


# --- the crash test: two consumer processes, one killed with SIGKILL mid-stream ------------------

CRASH_GROUP = "ledger"
CRASH_SETTINGS = {"max_attempts": 3, "retry_base_ms": 20, "retry_max_ms": 100, "claim_idle_ms": 500,
                  "batch_size": 50}


def _consumer_process(redis_url: str, pg_url: str, prefix: str, name: str, freeze_from: int | None) -> None:
    """Entry point of a consumer OS process (spawned, so it must be importable).

    With ``freeze_from`` the consumer stops dead right after committing the effect of the first
    event numbered ``freeze_from`` or higher, so the test's SIGKILL lands at the worst moment:
    effect committed, entry not acknowledged, rest of the batch unhandled.
    """
    logging.getLogger("sygmax.events").setLevel(logging.CRITICAL)  # poison retries are expected
    asyncio.run(_consume_into_postgres(redis_url, pg_url, prefix, name, freeze_from))


async def _consume_into_postgres(redis_url: str, pg_url: str, prefix: str, name: str,
                                 freeze_from: int | None) -> None:
    redis = Redis.from_url(redis_url)
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=1)
    bus = EventBus(redis, EventSettings(stream_prefix=prefix, **CRASH_SETTINGS))

    async def handle(event: Work) -> None:
        if event.poison:
            raise ValueError(f"poison {event.n}")
        async with pool.acquire() as conn, conn.transaction():
            if not await record_processed(conn, CRASH_GROUP, event.id):
                await conn.execute("INSERT INTO redelivered (event_id) VALUES ($1)", event.id)
                return  # committed by an earlier delivery that never got acknowledged
            await conn.execute("INSERT INTO effects (event_id, n, consumer) VALUES ($1, $2, $3)",
                               event.id, event.n, name)
            await conn.execute(
                "INSERT INTO applied (consumer, count) VALUES ($1, 1) "
                "ON CONFLICT (consumer) DO UPDATE SET count = applied.count + 1", name,
            )
        if freeze_from is not None and event.n >= freeze_from:
            await asyncio.sleep(3600)  # wait here for SIGKILL

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await Consumer(bus, CRASH_GROUP, {Work: handle}, name).run(stop)
    finally:
        await pool.close()
        await redis.aclose()


async def test_killed_consumer_loses_nothing_and_duplicates_nothing(
    redis: Redis, redis_server: RedisServer, postgres: PostgresServer
) -> None:
    total, poison_every, freeze_from = 10_000, 97, 2_500
    # A copy of the migrated template: the kernel's sygmax_processed_event table is there.
    postgres.psql("postgres", "CREATE DATABASE crash TEMPLATE sygmax_template")
    postgres.psql("crash", """
        CREATE TABLE effects (event_id text NOT NULL, n int NOT NULL, consumer text NOT NULL);
        CREATE TABLE applied (consumer text PRIMARY KEY, count int NOT NULL);
        CREATE TABLE redelivered (event_id text NOT NULL)""")
    db = await asyncpg.connect(postgres.url("crash"))
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    bus = EventBus(redis, EventSettings(stream_prefix=prefix, **CRASH_SETTINGS))
    events = [Work(n=i, poison=i % poison_every == 0) for i in range(total)]
    poison_ids = {e.id for e in events if e.poison}
    wanted_ids = {e.id for e in events if not e.poison}

    spawn = multiprocessing.get_context("spawn")
    victim, survivor = (
        spawn.Process(target=_consumer_process, daemon=True,
                      args=(redis_server.url, postgres.url("crash"), prefix, name, freeze))
        for name, freeze in (("victim", freeze_from), ("survivor", None))
    )
    victim.start()
    survivor.start()
    try:
        for start in range(0, total, 500):
            await bus.publish_many(events[start:start + 500])
            await asyncio.sleep(0.02)

        async def victim_frozen() -> bool:
            return await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM effects WHERE consumer = 'victim' AND n >= $1)", freeze_from)

        await wait_until(victim_frozen, timeout=60)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        frozen_on = await db.fetchval(
            "SELECT event_id FROM effects WHERE consumer = 'victim' AND n >= $1", freeze_from)
        pending = await redis.xpending(bus.stream_for(Work), CRASH_GROUP)
        assert {c["name"]: c["pending"] for c in pending["consumers"]}.get(b"victim", 0) > 0

        async def count(sql: str) -> int:
            return await db.fetchval(sql)

        await wait_until(lambda: _at_least(count("SELECT count(*) FROM effects"), len(wanted_ids)), 60)
        await wait_until(lambda: _at_least(bus.dead_count(), len(poison_ids)), timeout=30)
        await asyncio.sleep(1.5)  # > claim_idle_ms: any straggling redelivery would show now

        rows = await db.fetch("SELECT event_id FROM effects")
        assert len(rows) == len(wanted_ids)  # no duplicate effects ...
        assert {r["event_id"] for r in rows} == wanted_ids  # ... and none lost
        applied = dict(await db.fetch("SELECT consumer, count FROM applied"))
        assert sum(applied.values()) == len(wanted_ids) and applied["victim"] > 0 and applied["survivor"] > 0
        assert await count("SELECT count(*) FROM sygmax_processed_event") == len(wanted_ids)
        # The event the victim died on was committed but never acked: redelivered, and skipped.
        redelivered = {r["event_id"] for r in await db.fetch("SELECT event_id FROM redelivered")}
        assert frozen_on in redelivered and redelivered <= wanted_ids
        letters = await dead_letters(redis, bus)
        assert sorted(letter["id"] for letter in letters) == sorted(poison_ids)
        assert all(letter["dead.attempts"] == "3" for letter in letters)
        assert await bus.lag(CRASH_GROUP) == {bus.stream_for(Work): 0}
    finally:
        for process in (victim, survivor):
            if process.is_alive():
                process.terminate()
            process.join(10)
        await db.close()
    assert survivor.exitcode == 0  # SIGTERM is a clean shutdown


# --- fan-out ------------------------------------------------------------------------------------


async def _next(subscription: AsyncIterator[bytes], timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(anext(subscription), timeout)


async def test_fanout_reaches_subscribers_in_every_process(redis_server: RedisServer) -> None:
    clients = [Redis.from_url(redis_server.url) for _ in range(2)]  # as if in two processes
    prefix = f"rt-{uuid.uuid4().hex[:6]}:"
    one, two = (Fanout(client, prefix=prefix) for client in clients)
    try:
        async with one.subscribe("room:1") as a, one.subscribe("room:1") as b, two.subscribe("room:1") as c:
            assert await one.publish("room:1", {"text": "hi"}) == 2  # two processes, one connection each
            await two.publish("room:1", "plain")
            await one.publish("room:2", b"nobody listens")
            for subscription in (a, b, c):
                assert await _next(subscription) == b'{"text":"hi"}'
                assert await _next(subscription) == b"plain"
    finally:
        for fanout in (one, two):
            await fanout.aclose()
        for client in clients:
            await client.aclose()


async def test_fanout_drops_a_slow_subscriber_without_affecting_others(redis: Redis) -> None:
    fanout = Fanout(redis, prefix=f"rt-{uuid.uuid4().hex[:6]}:", queue_size=8)
    try:
        async with fanout.subscribe("busy") as slow, fanout.subscribe("busy") as fast:
            for i in range(30):
                await fanout.publish("busy", f"m{i}")
                assert await _next(fast) == f"m{i}".encode()
            with pytest.raises(SlowConsumer):
                await _next(slow)
            await fanout.publish("busy", "after")
            assert await _next(fast) == b"after"
        async with fanout.subscribe("busy") as again:  # the channel is usable again afterwards
            await fanout.publish("busy", "fresh")
            assert await _next(again) == b"fresh"
    finally:
        await fanout.aclose()


async def test_fanout_resumes_after_redis_restart() -> None:
    server = RedisServer().start()
    client = Redis.from_url(server.url)
    fanout = Fanout(client, reconnect_max_s=0.2)
    try:
        async with fanout.subscribe("alerts") as subscription:
            await fanout.publish("alerts", "before")
            assert await _next(subscription) == b"before"
            server.stop()
            server.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    await fanout.publish("alerts", "after")
                    message = await _next(subscription, timeout=0.2)
                    break
                except (RedisConnectionError, TimeoutError):
                    assert time.monotonic() < deadline, "delivery did not resume"
            assert message == b"after"
        async with fanout.subscribe("alerts") as subscription:
            await fanout.publish("alerts", "new subscriber")
            assert await _next(subscription) == b"new subscriber"
    finally:
        await fanout.aclose()
        await client.aclose()
        server.cleanup()


async def test_fanout_close_ends_iteration(redis: Redis) -> None:
    fanout = Fanout(redis, prefix=f"rt-{uuid.uuid4().hex[:6]}:")
    async with fanout.subscribe("x") as subscription:
        await fanout.aclose()
        assert [message async for message in subscription] == []


class SilentLink:
    """A TCP proxy to Redis whose open connections can go silent without closing, as when a NAT
    entry or a VM pause drops a link: nothing arrives, nothing fails. New connections still work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[dict[str, bool]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> SilentLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def silence_open_links(self) -> None:
        for link in self._links:
            link["silent"] = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = {"silent": False}
        self._links.append(link)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: dict[str, bool]) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if not link["silent"]:
                    sink.write(data)
                    await sink.drain()
        sink.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_fanout_replaces_a_silently_dead_connection(redis: Redis, redis_server: RedisServer) -> None:
    link = await SilentLink(redis_server.port).start()
    proxied = Redis.from_url(f"redis://127.0.0.1:{link.port}/0")
    prefix = f"rt-{uuid.uuid4().hex[:6]}:"
    fanout = Fanout(proxied, prefix=prefix, ping_after_s=0.2, reconnect_max_s=0.2)
    try:
        async with fanout.subscribe("feed") as subscription:
            await redis.publish(f"{prefix}feed", "before")
            assert await _next(subscription) == b"before"
            link.silence_open_links()
            started = time.monotonic()
            while True:  # lost until the dead link is noticed (about 2 * ping_after_s) and replaced
                await redis.publish(f"{prefix}feed", "after")
                with contextlib.suppress(TimeoutError):
                    assert await _next(subscription, timeout=0.1) == b"after"
                    break
                assert time.monotonic() - started < 10, "the silent connection was never replaced"
    finally:
        await fanout.aclose()
        await proxied.aclose()
        await link.close()
