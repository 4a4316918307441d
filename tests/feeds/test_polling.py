"""Polling through the real bus: the scheduler job enqueues due feeds, a worker consumer
refreshes them; new items are published (with the subscription's AI flag), AI annotations
are stored, retention removes old unstarred items, intervals honour TTL and max-age."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from sygmax.auth.tokens import Actor
from sygmax.events.bus import Consumer
from sygmax.events.contracts import AiAnnotationReady, FeedItemAdded, FeedItemRemoved

from plugins.feeds import actions
from plugins.feeds.settings import FeedsSettings
from plugins.feeds.workers import FeedsRefreshDue, annotation_ready, enqueue_due, refresh_batch
from tests.feeds.support import rss


def actor_of(user) -> Actor:
    return Actor(user.id, f"{user.name}@example.org", user.name.title(), False, scopes=frozenset({"*"}))


async def events(kernel, event_type) -> list:
    entries = await kernel.redis.xrange(kernel.bus.stream_for(event_type))
    return [kernel.bus.decode(fields) for _, fields in entries]


async def wait_for(condition, timeout: float = 20.0) -> None:
    """Poll until ``condition()`` holds (the timeout only ends a hang; it asserts nothing about speed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_scheduler_enqueues_due_feeds_and_workers_refresh_them(kernel, example_user, feed_server, db):
    k = await kernel()
    alice, bob = await example_user("alice"), await example_user("bob")
    feed_server.documents["a"] = rss([("1", "One")])
    feed_server.documents["b"] = rss([("x", "Ex")])
    sub_a = await actions.check_subscribe(actor_of(alice), k, feed_server.url("/dyn/a"), annotate=True)
    sub_b = await actions.check_subscribe(actor_of(bob), k, feed_server.url("/dyn/b"))
    assert await enqueue_due(k) == 0  # both were just fetched: nothing is due

    feed_server.documents["a"] = rss([("2", "Two"), ("1", "One")])
    feed_server.documents["b"] = rss([("y", "Why"), ("x", "Ex")])
    await db.execute("UPDATE feeds_feed SET next_poll_at = now() - interval '1 second'")
    assert await enqueue_due(k) == 2
    assert await enqueue_due(k) == 0  # claimed: not enqueued twice while a worker has them
    queued = await events(k, FeedsRefreshDue)
    assert sorted(feed for event in queued for feed in event.feed_ids) == sorted([sub_a.feed_id, sub_b.feed_id])

    stop = asyncio.Event()
    consumer = Consumer(k.bus, "feeds.refresh", {FeedsRefreshDue: lambda event: refresh_batch(k, event)},
                        name="test-worker")
    task = asyncio.create_task(consumer.run(stop))

    async def refreshed() -> bool:
        return await db.fetchval("SELECT count(*) FROM feeds_item") == 4

    try:
        await wait_for(refreshed)
    finally:
        stop.set()
        await task
    added = await events(k, FeedItemAdded)
    by_title = {event.title: event for event in added}
    assert set(by_title) == {"Two", "Why"}  # only what is new; the first fetch at subscription published nothing
    assert by_title["Two"].annotate and by_title["Two"].user_id == alice.id
    assert by_title["Two"].subscription_id == sub_a.id and by_title["Two"].text == "Body of Two"
    assert not by_title["Why"].annotate and by_title["Why"].user_id == bob.id
    polled = await db.fetch("SELECT next_poll_at - now() AS wait FROM feeds_feed")
    assert all(row["wait"] > timedelta(seconds=30) for row in polled)


async def test_feeds_without_subscribers_are_not_polled(kernel, example_user, feed_server, db):
    k = await kernel()
    await db.execute("INSERT INTO feeds_feed (id, url) VALUES (gen_random_uuid(), 'https://orphan.example/feed')")
    assert await enqueue_due(k) == 0


def test_intervals_honour_ttl_max_age_and_bounds():
    settings = FeedsSettings(min_interval_s=600, max_interval_s=7200, default_interval_s=1800)
    assert actions.next_interval(settings, None, None) == 1800
    assert actions.next_interval(settings, 60, None) == 3600  # <ttl>60</ttl> minutes
    assert actions.next_interval(settings, None, 5400) == 5400  # Cache-Control: max-age
    assert actions.next_interval(settings, 30, 5400) == 5400  # the longer of the two
    assert actions.next_interval(settings, None, 60) == 600  # never more often than min_interval_s
    assert actions.next_interval(settings, 1440, None) == 7200  # never less often than max_interval_s
    assert [actions.backoff(settings, n) for n in (1, 2, 3)] == [1200, 2400, 4800]
    assert actions.backoff(FeedsSettings(min_interval_s=600, max_backoff_s=3000), 10) == 3000


async def test_cache_control_sets_the_next_poll(kernel, example_user, feed_server, db):
    k = await kernel(SYGMAX_FEEDS_MAX_INTERVAL_S="86400")
    alice = await example_user("alice")
    await actions.check_subscribe(actor_of(alice), k, feed_server.url("/cache/atom.xml"))
    wait = await db.fetchval("SELECT next_poll_at - last_polled_at FROM feeds_feed")
    assert timedelta(seconds=7190) < wait < timedelta(seconds=7210)


async def test_ai_annotations_are_stored_once(kernel, example_user, feed_server, db):
    k = await kernel()
    alice = await example_user("alice")
    await actions.check_subscribe(actor_of(alice), k, feed_server.url("/f/rss2.xml"))
    item_id = await db.fetchval("SELECT id FROM feeds_item ORDER BY seq LIMIT 1")
    event = AiAnnotationReady(target_type="feeds.item", target_id=item_id, summary="Panels got better.",
                              tags=["energy", "science"], model="test")
    await annotation_ready(k, event)
    await annotation_ready(k, AiAnnotationReady(id=event.id, target_type="feeds.item", target_id=item_id,
                                                summary="a replay must not overwrite", tags=[]))
    await annotation_ready(k, AiAnnotationReady(target_type="chats.message", target_id=item_id, summary="not ours"))
    row = await db.fetchrow("SELECT ai_summary, ai_tags FROM feeds_item WHERE id = $1", item_id)
    assert row["ai_summary"] == "Panels got better." and row["ai_tags"] == ["energy", "science"]
    item = await actions.get_item(actor_of(alice), k, item_id)
    assert item.ai_summary == "Panels got better." and item.ai_tags == ["energy", "science"]


async def test_retention_keeps_starred_items(kernel, example_user, feed_server, db):
    k = await kernel(SYGMAX_FEEDS_RETENTION_DAYS="30")
    alice = await example_user("alice")
    feed_server.documents["r"] = rss([("new", "Fresh"), ("old", "Old"), ("star", "Starred")])
    sub = await actions.check_subscribe(actor_of(alice), k, feed_server.url("/dyn/r"))
    long_ago = datetime.now(timezone.utc) - timedelta(days=60)
    await db.execute("UPDATE feeds_item SET fetched_at = $1, published_at = $1 WHERE title <> 'Fresh'", long_ago)
    starred = await db.fetchval("SELECT id FROM feeds_item WHERE title = 'Starred'")
    await actions.do_update_item(actor_of(alice), k, starred, starred=True)
    assert await actions.do_apply_retention(k) == 1
    assert sorted(await db.fetchval("SELECT array_agg(title) FROM feeds_item")) == ["Fresh", "Starred"]
    removed = await events(k, FeedItemRemoved)
    assert [(event.subscription_id) for event in removed] == [sub.id]
    # The feed still lists the old item, but it is older than the window: not inserted again.
    await db.execute("UPDATE feeds_feed SET etag = NULL, last_modified = NULL")
    feed_server.documents["r"] = rss([("new", "Fresh"), ("old", "Old"), ("star", "Starred")]).replace(
        b"<title>Old</title>", b"<title>Old</title><pubDate>Mon, 01 Jan 2001 00:00:00 GMT</pubDate>")
    await actions.do_refresh_subscription(actor_of(alice), k, sub.id)
    assert sorted(await db.fetchval("SELECT array_agg(title) FROM feeds_item")) == ["Fresh", "Starred"]
