"""Background work: the scheduler enqueues due feeds, workers refresh them.

``enqueue_due`` (scheduler profile, leader only) claims due feeds with one UPDATE ...
``FOR UPDATE SKIP LOCKED`` that also pushes their ``next_poll_at`` a lease ahead, so a feed
is never enqueued twice while a worker has it; if that worker dies, the lease runs out and
the feed is enqueued again. Feed ids travel in batches (``FeedsRefreshDue``, an event only
this module consumes, so it lives here and not in the kernel's contracts); each worker
refreshes a batch concurrently (``fetch_concurrency``) with per-host limits, and the bus
shares batches among every worker process.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog

from sygmax.events.bus import Event
from sygmax.events.contracts import AiAnnotationReady

from plugins.feeds.actions import do_apply_retention, do_refresh_feed, store_annotation
from plugins.feeds.fetcher import fetcher_for
from plugins.feeds.settings import feeds_settings

log = structlog.get_logger("sygmax.feeds")

LEASE_S = 600  # a claimed feed is not enqueued again for this long
ANNOTATIONS_GROUP = "feeds.annotations"


class FeedsRefreshDue(Event, kw_only=True):
    """Feeds whose poll time has come (module-internal: only the feeds workers consume it)."""

    event_type = "feeds.refresh_due"

    feed_ids: list[uuid.UUID]


async def enqueue_due(kernel) -> int:
    """Scheduler job: publish every due feed (with at least one subscriber) in batches."""
    settings = feeds_settings(kernel)
    rows = await kernel.db.pool.fetch(
        """UPDATE feeds_feed SET next_poll_at = now() + make_interval(secs => $2)
           WHERE id IN (SELECT f.id FROM feeds_feed f
                        WHERE f.next_poll_at <= now()
                          AND EXISTS (SELECT 1 FROM feeds_subscription s WHERE s.feed_id = f.id)
                        ORDER BY f.next_poll_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id""", settings.max_due_per_tick, LEASE_S)
    ids = [row["id"] for row in rows]
    size = settings.batch_size
    if ids:
        await kernel.bus.publish_many(FeedsRefreshDue(feed_ids=ids[start:start + size])
                                      for start in range(0, len(ids), size))
        log.info("feeds_enqueued", feeds=len(ids))
    return len(ids)


async def refresh_batch(kernel, event: FeedsRefreshDue) -> None:
    """Worker: refresh a batch of feeds concurrently; each feed's error stays on that feed."""
    settings = feeds_settings(kernel)
    limit = asyncio.Semaphore(settings.fetch_concurrency)
    async with fetcher_for(settings) as fetcher:
        async def one(feed_id: uuid.UUID) -> None:
            async with limit:
                try:
                    await do_refresh_feed(kernel, feed_id, fetcher, settings)
                except Exception:  # one broken feed must not fail (and re-run) the whole batch
                    log.exception("feed_refresh_crashed", feed_id=str(feed_id))

        await asyncio.gather(*(one(feed_id) for feed_id in event.feed_ids))


async def annotation_ready(kernel, event: AiAnnotationReady) -> None:
    """Worker: the AI module summarised and tagged an item; keep both on it."""
    if event.target_type != "feeds.item":
        return
    await store_annotation(kernel, ANNOTATIONS_GROUP, event.id, event.target_id, event.summary, event.tags)


async def apply_retention(kernel) -> None:
    removed = await do_apply_retention(kernel)
    if removed:
        log.info("feeds_retention", removed=removed)
