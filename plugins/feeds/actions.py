"""Every read and write of the feeds module, the actor first.

Writes run in one transaction with their audit row (sygmax.auth.audit). Feed refreshes are
done by the service itself (no actor): :func:`do_refresh_feed` fetches, parses and stores,
and publishes ``FeedItemAdded`` for what is new.

Read state: an item is read for a user when their ``feeds_item_state`` row says so, or,
without an explicit answer, when a "mark all read up to seq N" watermark of theirs covers
it. So marking thousands of items read is one row, and items that arrive after the moment
the user pressed the button (a higher seq) stay unread.
"""

from __future__ import annotations

import html as html_module
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import asyncpg
import msgspec
import structlog

from sygmax.auth import audit
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem
from sygmax.events.contracts import FeedItemAdded, FeedItemRemoved

from plugins.feeds import access
from plugins.feeds.access import MANAGE, READ
from plugins.feeds.fetcher import BlockedAddress, FetchError, Fetcher, check_url, fetcher_for
from plugins.feeds.parser import FeedParseError, ParsedFeed, discover_feed_links, looks_like_html, parse_feed
from plugins.feeds.settings import FeedsSettings, feeds_settings

log = structlog.get_logger("sygmax.feeds")

MAX_URL = 2048
MAX_NAME = 100
MAX_RULES = 200
MAX_TAGS = 20
PAGE_MAX = 200
# Languages PostgreSQL ships a text-search configuration for; anything else is 'simple'.
TS_CONFIGS = {"da": "danish", "de": "german", "en": "english", "es": "spanish", "fi": "finnish", "fr": "french",
              "hu": "hungarian", "it": "italian", "nl": "dutch", "no": "norwegian", "nb": "norwegian",
              "nn": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sv": "swedish",
              "tr": "turkish"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same rule as a JSON-schema pattern for the API's inputs: what the schema accepts, the
# actions accept (the fuzz test holds every schema-valid request to a 2xx/403/404/409 answer).
_NAME_CHAR = "[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029<>]"
NAME_PATTERN = f"^{_NAME_CHAR}*[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029<>\\s]{_NAME_CHAR}*$"
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def ts_config_for(language: str | None) -> str:
    return TS_CONFIGS.get((language or "").split("-")[0].lower(), "simple")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _clean_name(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME or _CONTROL.search(value) or "<" in value or ">" in value:
        raise Problem(400, "validation-error", f"{field}: 1-{MAX_NAME} characters of plain text", field=field)
    return value


# ---------------------------------------------------------------------------------------------
# Views


class SubscriptionView(msgspec.Struct):
    id: uuid.UUID
    feed_id: uuid.UUID
    url: str
    site_url: str | None
    title: str
    feed_title: str
    folder_id: uuid.UUID | None
    folder: str | None
    workspace_id: uuid.UUID | None
    annotate: bool
    unread_count: int
    error_count: int
    last_error: str | None
    last_polled_at: datetime | None
    last_success_at: datetime | None
    next_poll_at: datetime
    created_at: datetime


class ItemView(msgspec.Struct):
    id: uuid.UUID
    seq: int
    feed_id: uuid.UUID
    subscription_id: uuid.UUID
    url: str | None
    title: str
    author: str
    content_html: str  # sanitised on arrival (nh3): safe to render as is
    published_at: datetime
    fetched_at: datetime
    read: bool
    starred: bool
    tags: list[str]
    ai_summary: str | None
    ai_tags: list[str]


class ItemPage(msgspec.Struct):
    items: list[ItemView]
    next_cursor: str | None


class FolderView(msgspec.Struct):
    id: uuid.UUID
    name: str
    workspace_id: uuid.UUID | None
    unread_count: int


class RuleView(msgspec.Struct):
    id: uuid.UUID
    subscription_id: uuid.UUID | None
    field: str
    keyword: str
    action: str  # mark_read, star or tag:<name>
    created_at: datetime


class PreferenceView(msgspec.Struct):
    digest: str
    digest_sent_at: datetime | None
    api_password_set: bool


def _subscription_view(row: asyncpg.Record, unread: int) -> SubscriptionView:
    return SubscriptionView(
        id=row["id"], feed_id=row["feed_id"], url=row["url"], site_url=row["site_url"],
        title=row["custom_title"] or row["feed_title"] or row["url"], feed_title=row["feed_title"],
        folder_id=row["folder_id"], folder=row["folder"], workspace_id=row["workspace_id"], annotate=row["annotate"],
        unread_count=unread, error_count=row["error_count"], last_error=row["last_error"],
        last_polled_at=row["last_polled_at"], last_success_at=row["last_success_at"],
        next_poll_at=row["next_poll_at"], created_at=row["created_at"])


# Whether an item is read for user $1 (needs aliases i = item, s = state, m = read mark).
READ_SQL = "coalesce(st.read, i.seq <= coalesce(rm.up_to_seq, 0))"
STATE_JOIN = """
LEFT JOIN feeds_item_state st ON st.user_id = $1 AND st.item_id = i.id
LEFT JOIN feeds_read_mark rm ON rm.user_id = $1 AND rm.feed_id = i.feed_id
"""


async def unread_counts(connection, user_id: uuid.UUID, feed_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not feed_ids:
        return {}
    rows = await connection.fetch(
        f"""SELECT i.feed_id, count(*) AS n FROM feeds_item i {STATE_JOIN}
            WHERE i.feed_id = ANY($2::uuid[]) AND NOT {READ_SQL} GROUP BY i.feed_id""",
        user_id, list(set(feed_ids)))
    return {row["feed_id"]: row["n"] for row in rows}


# ---------------------------------------------------------------------------------------------
# Subscriptions


async def list_subscriptions(actor: Actor, kernel) -> list[SubscriptionView]:
    async with kernel.db.pool.acquire() as connection:
        rows = await access.visible_subscriptions(connection, actor)
        counts = await unread_counts(connection, actor.user_id, [row["feed_id"] for row in rows])
    return [_subscription_view(row, counts.get(row["feed_id"], 0)) for row in rows]


async def get_subscription(actor: Actor, kernel, subscription_id: uuid.UUID) -> SubscriptionView:
    async with kernel.db.pool.acquire() as connection:
        row = await access.access_subscription(connection, actor, subscription_id)
        counts = await unread_counts(connection, actor.user_id, [row["feed_id"]])
    return _subscription_view(row, counts.get(row["feed_id"], 0))


async def _folder_for(connection, actor: Actor, name: str | None, workspace_id: uuid.UUID | None) -> uuid.UUID | None:
    """The folder called ``name`` of the owner (created when missing), or None."""
    if name is None or not name.strip():
        return None
    name = _clean_name(name, "folder")
    if workspace_id is None:
        existing = await connection.fetchval(
            "SELECT id FROM feeds_folder WHERE user_id = $1 AND lower(name) = lower($2)", actor.user_id, name)
    else:
        existing = await connection.fetchval(
            "SELECT id FROM feeds_folder WHERE workspace_id = $1 AND lower(name) = lower($2)", workspace_id, name)
    if existing is not None:
        return existing
    folder_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO feeds_folder (id, user_id, workspace_id, name) VALUES ($1, $2, $3, $4)",
        folder_id, actor.user_id if workspace_id is None else None, workspace_id, name)
    return folder_id


async def _discover(fetcher: Fetcher, url: str) -> tuple[str, ParsedFeed, object]:
    """Fetch ``url``; a web page is searched for its feed links (<link rel="alternate">)."""
    result = await fetcher.fetch(url)
    if result.status != 200:
        raise FetchError(f"HTTP {result.status}")
    if looks_like_html(result.body, result.content_type):
        links = discover_feed_links(result.body, result.url)
        if not links:
            raise FeedParseError("the page is HTML and advertises no feed (<link rel=\"alternate\" "
                                 "type=\"application/rss+xml\">)")
        url = links[0]
        result = await fetcher.fetch(url)
        if result.status != 200:
            raise FetchError(f"HTTP {result.status}")
    final = result.permanent_url or url
    return final, parse_feed(result.body, result.url), result


async def check_subscribe(actor: Actor, kernel, url: str, *, folder: str | None = None,
                          workspace_id: uuid.UUID | None = None, title: str | None = None, annotate: bool = False,
                          source: Source | None = None, fetch: bool = True) -> SubscriptionView:
    """Validate, authorise, then subscribe (fetching and discovering the feed when it is new).

    ``fetch=False`` (OPML import) records a new feed without fetching it; it is due at once.
    """
    url = url.strip()
    if len(url) > MAX_URL:
        raise Problem(400, "validation-error", f"url: at most {MAX_URL} characters", field="url")
    try:
        check_url(url)
    except BlockedAddress as exc:
        raise Problem(403, "url-not-allowed", f"url: {exc}", field="url") from None
    if title is not None:
        title = _clean_name(title, "title")
    settings = feeds_settings(kernel)
    async with kernel.db.pool.acquire() as connection:
        if workspace_id is None:
            access.require_scope(actor, MANAGE)
            count = await connection.fetchval("SELECT count(*) FROM feeds_subscription WHERE user_id = $1",
                                              actor.user_id)
            if count >= settings.max_subscriptions:
                raise Problem(409, "too-many-subscriptions",
                              f"You already have {count} subscriptions, the most allowed")
        else:
            from sygmax.auth import policy

            await policy.require(connection, actor, MANAGE, workspace_id=workspace_id, what="workspace")
        feed_id = await connection.fetchval("SELECT id FROM feeds_feed WHERE url = $1", url)
    if feed_id is None and not fetch:
        feed_id = await _record_feed(kernel, url)
    if feed_id is None:
        async with fetcher_for(settings) as fetcher:
            try:
                final_url, parsed, result = await _discover(fetcher, url)
            except BlockedAddress as exc:
                raise Problem(403, "url-not-allowed", f"url: {exc}", field="url") from None
            except (FetchError, FeedParseError) as exc:
                # Subscribed all the same, with the error on the subscription and the next try
                # backed off: a site that is down today is the usual case, not a mistake.
                feed_id = await _record_feed(kernel, url, error=str(exc)[:500], retry_in=backoff(settings, 1))
            else:
                feed_id = await _create_feed(kernel, settings, final_url, parsed, result)
    return await do_subscribe(actor, kernel, feed_id, folder=folder, workspace_id=workspace_id, title=title,
                              annotate=annotate, source=source)


async def _record_feed(kernel, url: str, error: str | None = None, retry_in: float = 0.0) -> uuid.UUID:
    """A feed row not fetched yet (OPML import) or whose first fetch failed (``error``)."""
    return await kernel.db.pool.fetchval(
        """INSERT INTO feeds_feed (id, url, error_count, last_error, last_polled_at, next_poll_at)
           VALUES ($1, $2, $3, $4, CASE WHEN $4::text IS NULL THEN NULL ELSE now() END,
                   now() + make_interval(secs => $5))
           ON CONFLICT (url) DO UPDATE SET url = EXCLUDED.url RETURNING id""",
        uuid.uuid4(), url, 1 if error else 0, error, retry_in)


async def _create_feed(kernel, settings: FeedsSettings, url: str, parsed: ParsedFeed, result) -> uuid.UUID:
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            feed_id = await connection.fetchval(
                """INSERT INTO feeds_feed (id, url, next_poll_at) VALUES ($1, $2, now())
                   ON CONFLICT (url) DO UPDATE SET url = EXCLUDED.url RETURNING id""", uuid.uuid4(), url)
            await _store(connection, kernel, settings, feed_id, parsed, result, publish=False)
    return feed_id


async def do_subscribe(actor: Actor, kernel, feed_id: uuid.UUID, *, folder: str | None,
                       workspace_id: uuid.UUID | None, title: str | None, annotate: bool,
                       source: Source | None) -> SubscriptionView:
    subscription_id = uuid.uuid4()
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            folder_id = await _folder_for(connection, actor, folder, workspace_id)
            try:
                async with connection.transaction():
                    await connection.execute(
                        """INSERT INTO feeds_subscription (id, feed_id, user_id, workspace_id, folder_id, title,
                                                           annotate, created_by)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                        subscription_id, feed_id, actor.user_id if workspace_id is None else None, workspace_id,
                        folder_id, title, annotate, actor.user_id)
            except asyncpg.UniqueViolationError:
                raise Problem(409, "already-subscribed", "This feed is already subscribed here") from None
            await audit.record(connection, actor_id=actor.user_id, action="feeds.subscribe",
                               object_type=access.OBJECT_TYPE, object_id=subscription_id, workspace_id=workspace_id,
                               source=source, details={"feed_id": str(feed_id)})
    return await get_subscription(actor, kernel, subscription_id)


async def do_update_subscription(actor: Actor, kernel, subscription_id: uuid.UUID, *, title: str | None = None,
                                 folder: str | None = None, annotate: bool | None = None,
                                 clear_title: bool = False, source: Source | None = None) -> SubscriptionView:
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            row = await access.access_subscription(connection, actor, subscription_id, MANAGE)
            changes: dict[str, object] = {}
            if title is not None:
                changes["title"] = _clean_name(title, "title")
            elif clear_title:
                changes["title"] = None
            if folder is not None:
                changes["folder_id"] = await _folder_for(connection, actor, folder, row["workspace_id"])
            if annotate is not None:
                changes["annotate"] = annotate
            if changes:
                assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=2))
                await connection.execute(f"UPDATE feeds_subscription SET {assignments} WHERE id = $1",
                                         subscription_id, *changes.values())
                await audit.record(connection, actor_id=actor.user_id, action="feeds.subscription.update",
                                   object_type=access.OBJECT_TYPE, object_id=subscription_id,
                                   workspace_id=row["workspace_id"], source=source,
                                   details={key: str(value) for key, value in changes.items()})
    return await get_subscription(actor, kernel, subscription_id)


async def do_unsubscribe(actor: Actor, kernel, subscription_id: uuid.UUID, source: Source | None = None) -> None:
    removed: list[tuple[uuid.UUID, uuid.UUID]] = []
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            row = await access.access_subscription(connection, actor, subscription_id, MANAGE)
            await connection.execute("DELETE FROM feeds_subscription WHERE id = $1", subscription_id)
            if row["workspace_id"] is not None:
                from sygmax.auth import policy

                await policy.forget_object(connection, workspace_id=row["workspace_id"],
                                           object_type=access.OBJECT_TYPE, object_id=subscription_id)
            # The last subscriber gone: the feed and its items go too (nobody can read them).
            orphan = await connection.fetchval(
                """SELECT NOT EXISTS (SELECT 1 FROM feeds_subscription WHERE feed_id = $1)""", row["feed_id"])
            if orphan:
                items = await connection.fetch("DELETE FROM feeds_item WHERE feed_id = $1 RETURNING id",
                                               row["feed_id"])
                removed = [(item["id"], subscription_id) for item in items]
                await connection.execute("DELETE FROM feeds_feed WHERE id = $1", row["feed_id"])
            await audit.record(connection, actor_id=actor.user_id, action="feeds.unsubscribe",
                               object_type=access.OBJECT_TYPE, object_id=subscription_id,
                               workspace_id=row["workspace_id"], source=source,
                               details={"feed_id": str(row["feed_id"]), "url": row["url"]})
    if removed:
        await kernel.bus.publish_many(FeedItemRemoved(item_id=item_id, subscription_id=sub_id)
                                      for item_id, sub_id in removed)


async def do_refresh_subscription(actor: Actor, kernel, subscription_id: uuid.UUID) -> SubscriptionView:
    async with kernel.db.pool.acquire() as connection:
        row = await access.access_subscription(connection, actor, subscription_id)
    settings = feeds_settings(kernel)
    async with fetcher_for(settings) as fetcher:
        await do_refresh_feed(kernel, row["feed_id"], fetcher, settings)
    return await get_subscription(actor, kernel, subscription_id)


# ---------------------------------------------------------------------------------------------
# Refresh: fetch, parse, store (the service acts; no user)


def next_interval(settings: FeedsSettings, ttl_minutes: int | None, max_age_s: int | None) -> float:
    """Seconds until the next poll: the feed's own TTL / Cache-Control max-age, within the bounds."""
    wanted = [value for value in (ttl_minutes * 60 if ttl_minutes else None, max_age_s) if value]
    interval = max(wanted) if wanted else settings.default_interval_s
    return float(min(max(interval, settings.min_interval_s), settings.max_interval_s))


def backoff(settings: FeedsSettings, errors: int) -> float:
    """Exponential backoff after ``errors`` consecutive failures."""
    return float(min(settings.min_interval_s * 2 ** min(errors, 20), settings.max_backoff_s))


@dataclass
class RefreshOutcome:
    feed_id: uuid.UUID
    status: str  # "new", "not-modified", "error"
    new_items: int = 0
    error: str | None = None


async def do_refresh_feed(kernel, feed_id: uuid.UUID, fetcher: Fetcher,
                          settings: FeedsSettings | None = None) -> RefreshOutcome:
    """Poll one feed now; errors are stored on the feed (shown on every subscription), not raised."""
    settings = settings or feeds_settings(kernel)
    pool = kernel.db.pool
    feed = await pool.fetchrow("SELECT id, url, etag, last_modified, error_count FROM feeds_feed WHERE id = $1",
                               feed_id)
    if feed is None:
        return RefreshOutcome(feed_id, "error", error="no such feed")
    try:
        result = await fetcher.fetch(feed["url"], feed["etag"], feed["last_modified"])
        if result.status == 304:
            await pool.execute(
                """UPDATE feeds_feed SET last_polled_at = now(), last_success_at = now(), error_count = 0,
                          last_error = NULL, etag = $2, last_modified = $3,
                          next_poll_at = now() + make_interval(secs => $4),
                          url = CASE WHEN $5::text IS NULL OR EXISTS (SELECT 1 FROM feeds_feed o WHERE o.url = $5)
                                     THEN url ELSE $5 END
                   WHERE id = $1""",
                feed_id, result.etag, result.last_modified, next_interval(settings, None, result.max_age_s),
                result.permanent_url)
            return RefreshOutcome(feed_id, "not-modified")
        if looks_like_html(result.body, result.content_type):
            raise FeedParseError("the URL now answers with a web page, not a feed")
        parsed = parse_feed(result.body, result.url)
    except (FetchError, FeedParseError) as exc:
        errors = feed["error_count"] + 1
        message = str(exc)[:500]
        await pool.execute(
            """UPDATE feeds_feed SET last_polled_at = now(), error_count = $2, last_error = $3,
                      next_poll_at = now() + make_interval(secs => $4) WHERE id = $1""",
            feed_id, errors, message, backoff(settings, errors))
        log.info("feed_refresh_failed", feed_id=str(feed_id), error=message, errors=errors)
        return RefreshOutcome(feed_id, "error", error=message)
    async with pool.acquire() as connection:
        async with connection.transaction():
            events = await _store(connection, kernel, settings, feed_id, parsed, result, publish=True)
    if events:
        await kernel.bus.publish_many(events)
    return RefreshOutcome(feed_id, "new", new_items=len({event.item_id for event in events}))


_INSERT_ITEMS = """
INSERT INTO feeds_item (id, feed_id, dedupe_key, content_hash, guid, url, title, author, content_html, content_text,
                        published_at, ts_config)
SELECT u.id, $1, u.dedupe_key, u.content_hash, u.guid, u.url, u.title, u.author, u.content_html, u.content_text,
       u.published_at, $2::regconfig
FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
            $11::text[], $12::timestamptz[])
     AS u(id, dedupe_key, content_hash, guid, url, title, author, content_html, content_text, published_at)
ON CONFLICT DO NOTHING
RETURNING id, seq, title, url, content_text, author
"""


async def _store(connection, kernel, settings: FeedsSettings, feed_id: uuid.UUID, parsed: ParsedFeed, result,
                 publish: bool) -> list[FeedItemAdded]:
    """Update the feed's state and insert new items (duplicates fall to the unique constraints)."""
    now = _now()
    await connection.execute(
        """UPDATE feeds_feed SET title = CASE WHEN $2 <> '' THEN $2 ELSE title END,
                  site_url = coalesce($3, site_url), language = coalesce($4, language), etag = $5,
                  last_modified = $6, last_polled_at = now(), last_success_at = now(), error_count = 0,
                  last_error = NULL, next_poll_at = now() + make_interval(secs => $7),
                  url = CASE WHEN $8::text IS NULL OR EXISTS (SELECT 1 FROM feeds_feed o WHERE o.url = $8)
                             THEN url ELSE $8 END
           WHERE id = $1""",
        feed_id, parsed.title, parsed.site_url, parsed.language, result.etag, result.last_modified,
        next_interval(settings, parsed.ttl_minutes, result.max_age_s), result.permanent_url)
    # Items older than the retention window are not (re)inserted: retention deleted them once.
    horizon = now - timedelta(days=settings.retention_days)
    fresh = [item for item in parsed.items if item.published_at is None or item.published_at >= horizon]
    if fresh:
        # Most of a feed is already stored: find those first, so only new items are sanitised
        # and sent to INSERT (whose generated search column is computed before ON CONFLICT).
        known = await connection.fetch(
            """SELECT dedupe_key, content_hash FROM feeds_item
               WHERE feed_id = $1 AND (dedupe_key = ANY($2::text[]) OR content_hash = ANY($3::bytea[]))""",
            feed_id, [item.dedupe_key for item in fresh], [item.content_hash for item in fresh])
        keys = {row["dedupe_key"] for row in known}
        hashes = {bytes(row["content_hash"]) for row in known}
        fresh = [item for item in fresh if item.dedupe_key not in keys and item.content_hash not in hashes]
    if not fresh:
        return []
    columns: list[list] = [[] for _ in range(10)]
    for offset, item in enumerate(fresh):
        # Undated items keep the document's order: the first one is the newest.
        published = item.published_at or (now - timedelta(microseconds=offset))
        for column, value in zip(columns, (uuid.uuid4(), item.dedupe_key, item.content_hash, item.guid, item.url,
                                           item.title, item.author, item.content_html, item.content_text,
                                           published)):
            column.append(value)
    inserted = await connection.fetch(_INSERT_ITEMS, feed_id, ts_config_for(parsed.language), *columns)
    if not inserted:
        return []
    subscriptions = await connection.fetch(
        "SELECT id, user_id, workspace_id, annotate FROM feeds_subscription WHERE feed_id = $1", feed_id)
    await _apply_rules(connection, feed_id, inserted, subscriptions)
    if not publish:
        return []
    return [FeedItemAdded(item_id=item["id"], subscription_id=sub["id"], user_id=sub["user_id"],
                          workspace_id=sub["workspace_id"], title=item["title"], url=item["url"],
                          text=item["content_text"][:20_000], annotate=sub["annotate"])
            for item in inserted for sub in subscriptions]


def rule_matches(rule, item) -> bool:
    keyword = rule["keyword"].lower()
    fields = {"title": item["title"], "content": item["content_text"], "author": item["author"],
              "url": item["url"] or ""}
    haystacks = fields.values() if rule["field"] == "any" else [fields[rule["field"]]]
    return any(keyword in (text or "").lower() for text in haystacks)


async def _apply_rules(connection, feed_id: uuid.UUID, items: Sequence, subscriptions: Sequence) -> None:
    """Keyword rules of the subscribers: mark read, star or tag matching new items."""
    personal = {sub["user_id"]: sub["id"] for sub in subscriptions if sub["user_id"] is not None}
    workspace_ids = [sub["workspace_id"] for sub in subscriptions if sub["workspace_id"] is not None]
    rules = await connection.fetch(
        """SELECT r.user_id, r.subscription_id, r.field, r.keyword, r.action, r.tag FROM feeds_rule r
           WHERE (r.subscription_id = ANY($1::uuid[]))
              OR (r.subscription_id IS NULL AND (r.user_id = ANY($2::uuid[])
                  OR r.user_id IN (SELECT user_id FROM sygmax_membership WHERE workspace_id = ANY($3::uuid[]))))""",
        [sub["id"] for sub in subscriptions], list(personal), workspace_ids)
    if not rules:
        return
    states: dict[tuple, dict] = {}
    for rule in rules:
        for item in items:
            if rule_matches(rule, item):
                state = states.setdefault((rule["user_id"], item["id"]), {"read": None, "starred": False, "tags": []})
                if rule["action"] == "mark_read":
                    state["read"] = True
                elif rule["action"] == "star":
                    state["starred"] = True
                elif rule["tag"] and rule["tag"] not in state["tags"]:
                    state["tags"].append(rule["tag"])
    if states:
        await connection.executemany(
            """INSERT INTO feeds_item_state (user_id, item_id, read, starred, tags) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (user_id, item_id) DO NOTHING""",
            [(user_id, item_id, s["read"], s["starred"], s["tags"]) for (user_id, item_id), s in states.items()])


# ---------------------------------------------------------------------------------------------
# Items


CURSOR_PATTERN = r"^[0-9]{1,16}_[0-9]{1,18}$"


def encode_cursor(published_at: datetime, seq: int) -> str:
    """``<microseconds since 1970>_<seq>``: digits only, so the schema can say exactly what is valid."""
    micros = round(published_at.timestamp() * 1_000_000)
    return f"{max(micros, 0)}_{seq}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        micros, seq = cursor.split("_")
        published = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(micros))
        return published, int(seq)
    except (ValueError, OverflowError):
        raise Problem(400, "invalid-cursor", "cursor: not a cursor this API returned", field="cursor") from None


@dataclass
class ItemFilter:
    subscription_id: uuid.UUID | None = None
    folder_id: uuid.UUID | None = None
    unread: bool | None = None
    starred: bool | None = None
    tag: str | None = None
    q: str | None = None
    item_ids: Sequence[uuid.UUID] | None = None
    item_seqs: Sequence[int] | None = None
    newer_than: datetime | None = None
    older_than: datetime | None = None
    oldest_first: bool = False


async def scope_feeds(connection, actor: Actor, flt: ItemFilter) -> dict[uuid.UUID, uuid.UUID]:
    """feed id -> subscription id of the visible subscriptions the filter selects."""
    subscriptions = await access.visible_subscriptions(connection, actor)
    if flt.subscription_id is not None:
        if not any(row["id"] == flt.subscription_id for row in subscriptions):
            raise Problem(404, "not-found", "No such subscription")
        subscriptions = [row for row in subscriptions if row["id"] == flt.subscription_id]
    if flt.folder_id is not None:
        subscriptions = [row for row in subscriptions if row["folder_id"] == flt.folder_id]
    feeds: dict[uuid.UUID, uuid.UUID] = {}
    for row in subscriptions:
        feeds.setdefault(row["feed_id"], row["id"])
    return feeds


async def list_items(actor: Actor, kernel, flt: ItemFilter, cursor: str | None = None,
                     limit: int = 50) -> ItemPage:
    limit = max(1, min(limit, PAGE_MAX))
    async with kernel.db.pool.acquire() as connection:
        if flt.folder_id is not None:
            await access.access_folder(connection, actor, flt.folder_id)
        feeds = await scope_feeds(connection, actor, flt)
        if not feeds:
            return ItemPage([], None)
        rows = await query_items(connection, actor.user_id, list(feeds), flt, cursor, limit + 1)
    views = [_item_view(row, feeds) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]["published_at"], rows[limit - 1]["seq"]) if len(rows) > limit else None
    return ItemPage(views, next_cursor)


async def query_items(connection, user_id: uuid.UUID, feed_ids: list[uuid.UUID], flt: ItemFilter,
                      cursor: str | None, limit: int, columns: str | None = None) -> list[asyncpg.Record]:
    conditions = ["i.feed_id = ANY($2::uuid[])"]
    args: list[object] = [user_id, feed_ids]

    def arg(value) -> str:
        args.append(value)
        return f"${len(args)}"

    if flt.unread is not None:
        conditions.append(f"{'NOT ' if flt.unread else ''}{READ_SQL}")
    if flt.starred is not None:
        conditions.append("coalesce(st.starred, false)" if flt.starred else "NOT coalesce(st.starred, false)")
    if flt.tag is not None:
        conditions.append(f"{arg(flt.tag)} = ANY(coalesce(st.tags, '{{}}'))")
    if flt.q:
        conditions.append(f"i.search @@ websearch_to_tsquery(i.ts_config, {arg(flt.q)})")
    if flt.item_ids is not None:
        conditions.append(f"i.id = ANY({arg(list(flt.item_ids))}::uuid[])")
    if flt.item_seqs is not None:
        conditions.append(f"i.seq = ANY({arg(list(flt.item_seqs))}::bigint[])")
    if flt.newer_than is not None:
        conditions.append(f"i.published_at >= {arg(flt.newer_than)}")
    if flt.older_than is not None:
        conditions.append(f"i.published_at < {arg(flt.older_than)}")
    direction = "ASC" if flt.oldest_first else "DESC"
    if cursor:
        published, seq = decode_cursor(cursor)
        comparison = ">" if flt.oldest_first else "<"
        conditions.append(f"(i.published_at, i.seq) {comparison} ({arg(published)}, {arg(seq)})")
    selected = columns or """i.id, i.seq, i.feed_id, i.url, i.title, i.author, i.content_html, i.published_at,
        i.fetched_at, i.ai_summary, i.ai_tags"""
    return await connection.fetch(
        f"""SELECT {selected}, {READ_SQL} AS read, coalesce(st.starred, false) AS starred,
                   coalesce(st.tags, '{{}}') AS tags
            FROM feeds_item i {STATE_JOIN}
            WHERE {' AND '.join(conditions)}
            ORDER BY i.published_at {direction}, i.seq {direction} LIMIT {int(limit)}""", *args)


# Sanitised HTML (nh3) writes every attribute as name="value": the image sources are found
# reliably by a pattern, in document order.
_IMG_SRC = re.compile(r'(<img\b[^>]*?\ssrc=")([^"]*)(")')
IMAGE_PROXY = "/api/v1/feeds/items/{item_id}/images/{index}"


def image_sources(content_html: str) -> list[str]:
    return [html_module.unescape(match.group(2)) for match in _IMG_SRC.finditer(content_html)]


def proxy_images(item_id: uuid.UUID, content_html: str) -> str:
    """Point every image at the image proxy: the reader's page then loads pictures from its own
    origin (the Content-Security-Policy allows no other), and the picture's host never sees
    the reader's address or cookies."""
    counter = iter(range(10_000))
    return _IMG_SRC.sub(lambda match: match.group(1) + IMAGE_PROXY.format(item_id=item_id, index=next(counter))
                        + match.group(3), content_html)


def _item_view(row, feeds: dict[uuid.UUID, uuid.UUID]) -> ItemView:
    return ItemView(
        id=row["id"], seq=row["seq"], feed_id=row["feed_id"], subscription_id=feeds[row["feed_id"]], url=row["url"],
        title=row["title"], author=row["author"], content_html=proxy_images(row["id"], row["content_html"]),
        published_at=row["published_at"],
        fetched_at=row["fetched_at"], read=row["read"], starred=row["starred"], tags=list(row["tags"]),
        ai_summary=row["ai_summary"], ai_tags=list(row["ai_tags"]))


async def get_item(actor: Actor, kernel, item_id: uuid.UUID) -> ItemView:
    async with kernel.db.pool.acquire() as connection:
        item, subscription = await access.access_item(connection, actor, item_id)
        rows = await query_items(connection, actor.user_id, [item["feed_id"]], ItemFilter(item_ids=[item_id]), None, 1)
    return _item_view(rows[0], {item["feed_id"]: subscription["id"]})


IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/x-icon",
               "image/vnd.microsoft.icon", "image/bmp"}  # no SVG: it can carry script
MAX_IMAGE_BYTES = 10 * 1024 * 1024


async def fetch_item_image(actor: Actor, kernel, item_id: uuid.UUID, index: int) -> tuple[bytes, str]:
    """The ``index``-th image of an item the actor may read, fetched through the SSRF guard."""
    async with kernel.db.pool.acquire() as connection:
        await access.access_item(connection, actor, item_id)
        content = await connection.fetchval("SELECT content_html FROM feeds_item WHERE id = $1", item_id)
    sources = image_sources(content or "")
    if not 0 <= index < len(sources):
        raise Problem(404, "not-found", "No such image")
    settings = feeds_settings(kernel)
    limited = settings.model_copy(update={"max_body_bytes": min(settings.max_body_bytes, MAX_IMAGE_BYTES)})
    async with fetcher_for(limited) as fetcher:
        try:
            result = await fetcher.fetch(sources[index])
        except (FetchError, BlockedAddress) as exc:
            raise Problem(404, "image-unavailable", f"The image could not be fetched: {exc}") from None
    content_type = result.content_type.split(";")[0].strip().lower()
    if result.status != 200 or content_type not in IMAGE_TYPES:
        raise Problem(404, "image-unavailable", f"The source did not answer with an image ({content_type or 'no type'})")
    return result.body, content_type


def _clean_tags(tags: Iterable[str]) -> list[str]:
    cleaned = []
    for tag in tags:
        tag = _clean_name(tag, "tags")
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise Problem(400, "validation-error", f"tags: at most {MAX_TAGS}", field="tags")
    return cleaned


async def set_item_states(connection, user_id: uuid.UUID, item_ids: Sequence[uuid.UUID], *, read: bool | None = None,
                          starred: bool | None = None, tags: list[str] | None = None) -> None:
    """Upsert the reader's explicit state for already-authorised items."""
    if not item_ids:
        return
    await connection.execute(
        """INSERT INTO feeds_item_state (user_id, item_id, read, starred, tags)
           SELECT $1, id, $3::boolean, coalesce($4::boolean, false), coalesce($5::text[], '{}')
           FROM unnest($2::uuid[]) AS id
           ON CONFLICT (user_id, item_id) DO UPDATE SET
               read = CASE WHEN $3::boolean IS NULL THEN feeds_item_state.read ELSE $3 END,
               starred = coalesce($4, feeds_item_state.starred),
               tags = coalesce($5::text[], feeds_item_state.tags),
               changed_at = now()""",
        user_id, list(item_ids), read, starred, tags)


async def do_update_item(actor: Actor, kernel, item_id: uuid.UUID, *, read: bool | None = None,
                         starred: bool | None = None, tags: list[str] | None = None) -> ItemView:
    """Read/starred/tags are the reader's own state: no audit row (like read receipts)."""
    access.require_scope(actor, READ)
    async with kernel.db.pool.acquire() as connection:
        await access.access_item(connection, actor, item_id)
        if tags is not None:
            tags = _clean_tags(tags)
        await set_item_states(connection, actor.user_id, [item_id], read=read, starred=starred, tags=tags)
    return await get_item(actor, kernel, item_id)


async def do_mark_all_read(actor: Actor, kernel, flt: ItemFilter, up_to_seq: int | None = None) -> int:
    """Mark every selected item up to ``up_to_seq`` (default: the newest now) read; returns how many feeds."""
    async with kernel.db.pool.acquire() as connection:
        if flt.folder_id is not None:
            await access.access_folder(connection, actor, flt.folder_id)
        feeds = list(await scope_feeds(connection, actor, flt))
        if not feeds:
            return 0
        if flt.starred is not None or flt.tag is not None:
            # A selection by the reader's own state (starred, a tag): mark exactly those items.
            rows = await query_items(connection, actor.user_id, feeds, ItemFilter(
                starred=flt.starred, tag=flt.tag, older_than=flt.older_than), None, 100_000, columns="i.id, i.seq")
            await set_item_states(connection, actor.user_id,
                                  [row["id"] for row in rows if up_to_seq is None or row["seq"] <= up_to_seq],
                                  read=True)
            return len(feeds)
        if up_to_seq is not None:
            up_to_seq = min(max(up_to_seq, 0), 2**63 - 1)
        async with connection.transaction():
            if up_to_seq is None:
                up_to_seq = await connection.fetchval(
                    "SELECT coalesce(max(seq), 0) FROM feeds_item WHERE feed_id = ANY($1::uuid[])", feeds)
            if flt.older_than is not None:
                # A time bound ("older than the moment I looked"): the newest seq published before it.
                up_to = await connection.fetch(
                    """SELECT feed_id, max(seq) AS seq FROM feeds_item
                       WHERE feed_id = ANY($1::uuid[]) AND published_at < $2 AND seq <= $3 GROUP BY feed_id""",
                    feeds, flt.older_than, up_to_seq)
                marks = [(row["feed_id"], row["seq"]) for row in up_to]
                await connection.execute(
                    """INSERT INTO feeds_item_state (user_id, item_id, read)
                       SELECT $1, id, true FROM feeds_item
                       WHERE feed_id = ANY($2::uuid[]) AND published_at < $3 AND seq <= $4
                       ON CONFLICT (user_id, item_id) DO UPDATE SET read = true, changed_at = now()""",
                    actor.user_id, feeds, flt.older_than, up_to_seq)
                return len(marks)
            await connection.executemany(
                """INSERT INTO feeds_read_mark (user_id, feed_id, up_to_seq) VALUES ($1, $2, $3)
                   ON CONFLICT (user_id, feed_id) DO UPDATE
                   SET up_to_seq = greatest(feeds_read_mark.up_to_seq, EXCLUDED.up_to_seq)""",
                [(actor.user_id, feed_id, up_to_seq) for feed_id in feeds])
            # Explicit "unread" answers inside the range give way to the new watermark.
            await connection.execute(
                """UPDATE feeds_item_state st SET read = NULL, changed_at = now() FROM feeds_item i
                   WHERE st.user_id = $1 AND st.item_id = i.id AND i.feed_id = ANY($2::uuid[]) AND i.seq <= $3
                     AND st.read IS FALSE""",
                actor.user_id, feeds, up_to_seq)
    return len(feeds)


# ---------------------------------------------------------------------------------------------
# Folders


async def list_folders(actor: Actor, kernel) -> list[FolderView]:
    access.require_scope(actor, READ)
    async with kernel.db.pool.acquire() as connection:
        subscriptions = await access.visible_subscriptions(connection, actor)
        counts = await unread_counts(connection, actor.user_id, [row["feed_id"] for row in subscriptions])
        workspace_ids = list({row["workspace_id"] for row in subscriptions if row["workspace_id"] is not None})
        rows = await connection.fetch(
            """SELECT id, name, workspace_id FROM feeds_folder WHERE user_id = $1 OR workspace_id = ANY($2::uuid[])
               ORDER BY lower(name)""", actor.user_id, workspace_ids)
    unread: dict[uuid.UUID, int] = {}
    for row in subscriptions:
        if row["folder_id"] is not None:
            unread[row["folder_id"]] = unread.get(row["folder_id"], 0) + counts.get(row["feed_id"], 0)
    return [FolderView(row["id"], row["name"], row["workspace_id"], unread.get(row["id"], 0)) for row in rows]


async def do_create_folder(actor: Actor, kernel, name: str, source: Source | None = None) -> FolderView:
    access.require_scope(actor, MANAGE)
    name = _clean_name(name, "name")
    folder_id = uuid.uuid4()
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            try:
                async with connection.transaction():
                    await connection.execute("INSERT INTO feeds_folder (id, user_id, name) VALUES ($1, $2, $3)",
                                             folder_id, actor.user_id, name)
            except asyncpg.UniqueViolationError:
                raise Problem(409, "folder-exists", f"You already have a folder called {name}") from None
            await audit.record(connection, actor_id=actor.user_id, action="feeds.folder.create",
                               object_type="feeds.folder", object_id=folder_id, source=source, details={"name": name})
    return FolderView(folder_id, name, None, 0)


async def do_rename_folder(actor: Actor, kernel, folder_id: uuid.UUID, name: str,
                           source: Source | None = None) -> FolderView:
    name = _clean_name(name, "name")
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            row = await access.access_folder(connection, actor, folder_id, MANAGE)
            try:
                async with connection.transaction():
                    await connection.execute("UPDATE feeds_folder SET name = $2 WHERE id = $1", folder_id, name)
            except asyncpg.UniqueViolationError:
                raise Problem(409, "folder-exists", f"There is already a folder called {name}") from None
            await audit.record(connection, actor_id=actor.user_id, action="feeds.folder.rename",
                               object_type="feeds.folder", object_id=folder_id, workspace_id=row["workspace_id"],
                               source=source, details={"name": name})
    folders = await list_folders(actor, kernel)
    return next(folder for folder in folders if folder.id == folder_id)


async def do_delete_folder(actor: Actor, kernel, folder_id: uuid.UUID, source: Source | None = None) -> None:
    """The folder goes; its subscriptions stay, outside any folder."""
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            row = await access.access_folder(connection, actor, folder_id, MANAGE)
            await connection.execute("DELETE FROM feeds_folder WHERE id = $1", folder_id)
            await audit.record(connection, actor_id=actor.user_id, action="feeds.folder.delete",
                               object_type="feeds.folder", object_id=folder_id, workspace_id=row["workspace_id"],
                               source=source, details={"name": row["name"]})


# ---------------------------------------------------------------------------------------------
# Filter rules


def _rule_view(row) -> RuleView:
    action = f"tag:{row['tag']}" if row["action"] == "tag" else row["action"]
    return RuleView(row["id"], row["subscription_id"], row["field"], row["keyword"], action, row["created_at"])


async def list_rules(actor: Actor, kernel) -> list[RuleView]:
    access.require_scope(actor, READ)
    rows = await kernel.db.pool.fetch("SELECT * FROM feeds_rule WHERE user_id = $1 ORDER BY created_at, id",
                                      actor.user_id)
    return [_rule_view(row) for row in rows]


async def do_create_rule(actor: Actor, kernel, *, field: str, keyword: str, action: str,
                         subscription_id: uuid.UUID | None, source: Source | None = None) -> RuleView:
    """``action`` is ``mark_read``, ``star`` or ``tag:<name>``."""
    access.require_scope(actor, READ)
    keyword = keyword.strip()
    if not keyword or _CONTROL.search(keyword):
        raise Problem(400, "validation-error", "keyword: plain text, not empty", field="keyword")
    tag = None
    if action.startswith("tag:"):
        action, tag = "tag", _clean_name(action[4:], "action")
    elif action not in ("mark_read", "star"):
        raise Problem(400, "validation-error", "action: mark_read, star or tag:<name>", field="action")
    rule_id = uuid.uuid4()
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            if subscription_id is not None:
                await access.access_subscription(connection, actor, subscription_id)
            count = await connection.fetchval("SELECT count(*) FROM feeds_rule WHERE user_id = $1", actor.user_id)
            if count >= MAX_RULES:
                raise Problem(409, "too-many-rules", f"You already have {MAX_RULES} rules, the most allowed")
            row = await connection.fetchrow(
                """INSERT INTO feeds_rule (id, user_id, subscription_id, field, keyword, action, tag)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
                rule_id, actor.user_id, subscription_id, field, keyword, action, tag)
            await audit.record(connection, actor_id=actor.user_id, action="feeds.rule.create",
                               object_type="feeds.rule", object_id=rule_id, source=source,
                               details={"field": field, "keyword": keyword, "action": action, "tag": tag})
    return _rule_view(row)


async def do_delete_rule(actor: Actor, kernel, rule_id: uuid.UUID, source: Source | None = None) -> None:
    access.require_scope(actor, READ)
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            deleted = await connection.fetchval("DELETE FROM feeds_rule WHERE id = $1 AND user_id = $2 RETURNING id",
                                                rule_id, actor.user_id)
            if deleted is None:
                raise Problem(404, "not-found", "No such rule")
            await audit.record(connection, actor_id=actor.user_id, action="feeds.rule.delete",
                               object_type="feeds.rule", object_id=rule_id, source=source)


# ---------------------------------------------------------------------------------------------
# Preferences (digest, Google Reader API password)


async def get_preferences(actor: Actor, kernel) -> PreferenceView:
    access.require_scope(actor, READ)
    row = await kernel.db.pool.fetchrow(
        "SELECT digest, digest_sent_at, api_password IS NOT NULL AS has_password FROM feeds_preference "
        "WHERE user_id = $1", actor.user_id)
    if row is None:
        return PreferenceView("off", None, False)
    return PreferenceView(row["digest"], row["digest_sent_at"], row["has_password"])


async def do_set_preferences(actor: Actor, kernel, *, digest: str | None = None, api_password: str | None = None,
                             clear_api_password: bool = False, source: Source | None = None) -> PreferenceView:
    access.require_scope(actor, MANAGE)
    hashed = None
    if api_password is not None:
        from sygmax.auth.passwords import check_password_policy, hash_password

        check_password_policy(api_password, actor.email, field="api_password")
        hashed = await hash_password(kernel.settings.auth, api_password)
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            await connection.execute(
                """INSERT INTO feeds_preference (user_id, digest, api_password) VALUES ($1, coalesce($2, 'off'), $3)
                   ON CONFLICT (user_id) DO UPDATE SET
                       digest = coalesce($2, feeds_preference.digest),
                       api_password = CASE WHEN $4 THEN NULL ELSE coalesce($3, feeds_preference.api_password) END""",
                actor.user_id, digest, hashed, clear_api_password)
            if hashed is not None or clear_api_password:
                # A new or removed API password ends every Google Reader client login.
                await connection.execute("DELETE FROM feeds_greader_session WHERE user_id = $1", actor.user_id)
            await audit.record(connection, actor_id=actor.user_id, action="feeds.preferences.update",
                               object_type="feeds.preference", object_id=actor.user_id, source=source,
                               details={"digest": digest, "api_password": "set" if hashed else (
                                   "cleared" if clear_api_password else None)})
    return await get_preferences(actor, kernel)


# ---------------------------------------------------------------------------------------------
# Service jobs: annotations from the AI module, retention


async def store_annotation(kernel, group: str, event_id: str, item_id: uuid.UUID, summary: str,
                           tags: list[str]) -> bool:
    """Keep the AI module's summary and tags on the item, once per event."""
    from sygmax.events.bus import record_processed

    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            if not await record_processed(connection, group, event_id):
                return False
            status = await connection.execute(
                "UPDATE feeds_item SET ai_summary = $2, ai_tags = $3 WHERE id = $1",
                item_id, summary[:10_000], [tag[:100] for tag in tags[:MAX_TAGS]])
    return status == "UPDATE 1"


async def do_apply_retention(kernel, settings: FeedsSettings | None = None) -> int:
    """Delete items older than ``retention_days`` that nobody starred; publish FeedItemRemoved."""
    settings = settings or feeds_settings(kernel)
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            rows = await connection.fetch(
                """DELETE FROM feeds_item i
                   WHERE i.fetched_at < now() - make_interval(days => $1)
                     AND i.published_at < now() - make_interval(days => $1)
                     AND NOT EXISTS (SELECT 1 FROM feeds_item_state st WHERE st.item_id = i.id AND st.starred)
                   RETURNING i.id, i.feed_id""", settings.retention_days)
            if not rows:
                return 0
            subscriptions = await connection.fetch(
                "SELECT id, feed_id FROM feeds_subscription WHERE feed_id = ANY($1::uuid[])",
                list({row["feed_id"] for row in rows}))
    by_feed: dict[uuid.UUID, list[uuid.UUID]] = {}
    for sub in subscriptions:
        by_feed.setdefault(sub["feed_id"], []).append(sub["id"])
    await kernel.bus.publish_many(FeedItemRemoved(item_id=row["id"], subscription_id=sub_id)
                                  for row in rows for sub_id in by_feed.get(row["feed_id"], []))
    return len(rows)
