"""Daily or weekly email digest of unread items, per user (``feeds_preference.digest``).

The scheduler runs :func:`send_due_digests` every hour; a user is due when their last digest
is a day (daily) or a week (weekly) old, or was never sent. A digest lists the unread items
that arrived since the previous one (at most ``digest_max_items``), as plain text and as
HTML built from escaped titles and links only (never the feeds' own HTML), and goes through
the kernel's ``send_mail`` to the configured relay. Nothing new, no mail; the clock still
moves on so the next digest does not repeat old items.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone

import structlog

from sygmax.auth.tokens import Actor
from sygmax.mail import MailError, send_mail

from plugins.feeds.actions import ItemFilter, query_items, scope_feeds
from plugins.feeds.settings import feeds_settings

log = structlog.get_logger("sygmax.feeds")

PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


def render_digest(items, period: str, public_url: str) -> tuple[str, str, str]:
    """(subject, text, html) of a digest."""
    subject = f"Your {period} feeds digest: {len(items)} new item{'s' if len(items) != 1 else ''}"
    lines = [subject, ""]
    parts = [f"<h1>{html.escape(subject)}</h1>", "<ul>"]
    for item in items:
        title = item["title"] or "(untitled)"
        lines.append(f"- {title}")
        if item["url"]:
            lines.append(f"  {item['url']}")
            parts.append(f'<li><a href="{html.escape(item["url"], quote=True)}">{html.escape(title)}</a></li>')
        else:
            parts.append(f"<li>{html.escape(title)}</li>")
    parts.append("</ul>")
    reader = public_url.rstrip("/") + "/feeds"
    lines += ["", f"Read them all: {reader}"]
    parts.append(f'<p><a href="{html.escape(reader, quote=True)}">Read them all</a></p>')
    return subject, "\n".join(lines), "\n".join(parts)


async def send_digest(kernel, user, period: str, now: datetime) -> bool:
    """Send one user's digest if anything is new; returns whether a mail went out."""
    settings = feeds_settings(kernel)
    since = user["digest_sent_at"] or (now - PERIODS[period])
    actor = Actor(user["id"], user["email"], user["display_name"], False, scopes=frozenset({"*"}), via="service")
    async with kernel.db.pool.acquire() as connection:
        feeds = await scope_feeds(connection, actor, ItemFilter())
        rows = []
        if feeds:
            rows = await query_items(connection, user["id"], list(feeds), ItemFilter(unread=True), None,
                                     settings.digest_max_items + 1000, columns="i.id, i.seq, i.title, i.url, i.fetched_at")
        rows = [row for row in rows if row["fetched_at"] > since][:settings.digest_max_items]
    sent = False
    if rows:
        subject, text, body = render_digest(rows, period, kernel.settings.server.public_url)
        await send_mail(kernel.settings.smtp, user["email"], subject, text, body)
        sent = True
    await kernel.db.pool.execute("UPDATE feeds_preference SET digest_sent_at = $2 WHERE user_id = $1", user["id"], now)
    return sent


async def send_due_digests(kernel, now: datetime | None = None) -> int:
    """Scheduler job: every user whose daily/weekly digest is due gets it."""
    now = now or datetime.now(timezone.utc)
    users = await kernel.db.pool.fetch(
        """SELECT u.id, u.email, u.display_name, p.digest, p.digest_sent_at
           FROM feeds_preference p JOIN sygmax_user u ON u.id = p.user_id
           WHERE u.is_active AND p.digest <> 'off'
             AND (p.digest_sent_at IS NULL
                  OR p.digest_sent_at <= $1::timestamptz - CASE p.digest WHEN 'daily' THEN interval '1 day'
                                                            ELSE interval '7 days' END + interval '5 minutes')""",
        now)
    sent = 0
    for user in users:
        try:
            sent += await send_digest(kernel, user, user["digest"], now)
        except MailError as exc:  # the relay is down: try again next hour, the others still get theirs
            log.warning("feeds_digest_failed", user_id=str(user["id"]), error=str(exc))
    return sent


__all__ = ["send_due_digests", "send_digest", "render_digest", "PERIODS"]
