"""Presence in Redis: the heartbeat's batched refresh agrees with per-connection changes."""

import uuid

import pytest
from redis.asyncio import Redis

from plugins.chats import presence as presence_module
from plugins.chats.presence import Presence


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_refresh_extends_every_connection_and_reports_each_user_once(redis, monkeypatch):
    monkeypatch.setattr(presence_module, "REFRESH_BATCH", 2)  # three users: two script calls
    presence = Presence(redis, ttl_s=30)
    ann, bea, cid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await presence.set(ann, "a1", "online") == ("online", True)
    assert await presence.set(bea, "b1", "away") == ("away", True)
    # ann's two connections, bea's one, and cid who was not known before: only cid changes.
    changes = await presence.refresh([(ann, "a1", "online"), (ann, "a2", "away"), (bea, "b1", "away"),
                                      (cid, "c1", "online")])
    assert changes == [(ann, "online", False), (bea, "away", False), (cid, "online", True)]
    assert set(await redis.hkeys(f"{presence.prefix}conns:{ann}")) == {b"a1", b"a2"}
    expiry = await redis.zrange(f"{presence.prefix}expiry", 0, -1)
    assert {value.decode() for value in expiry} == {str(ann), str(bea), str(cid)}
    # Refreshed to away, bea's only connection changes her status; ann stays online through a1.
    changes = await presence.refresh([(ann, "a2", "away"), (bea, "b1", "online")])
    assert changes == [(ann, "online", False), (bea, "online", True)]
    assert await presence.statuses([ann, bea, cid]) == [(ann, "online", False), (bea, "online", False),
                                                        (cid, "online", False)]


async def test_refresh_prunes_expired_connections(redis):
    presence = Presence(redis, ttl_s=30)
    dan = uuid.uuid4()
    await presence.set(dan, "old", "online")
    # The "old" connection's process died: its field holds an expiry in the past.
    await redis.hset(f"{presence.prefix}conns:{dan}", "old", "online|1")
    assert await presence.refresh([(dan, "new", "away")]) == [(dan, "away", True)]
    assert await redis.hkeys(f"{presence.prefix}conns:{dan}") == [b"new"]


async def test_refresh_of_nothing_calls_nothing(redis):
    assert await Presence(redis, ttl_s=30).refresh([]) == []
