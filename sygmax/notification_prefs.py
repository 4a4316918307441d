"""Per-user notification preferences: which channels deliver each category of notification.

Plugins declare their categories (``Plugin.notification_categories``, e.g. ``chats.mention``)
with default channels; a user's choices are stored in ``sygmax_notification_pref`` only for
the categories they changed, so a new category or a changed default needs no data migration.
Channels are ``in_app`` and ``email``.

A deliverer (the notifications module) asks, per recipient::

    channels = await notification_channels(connection, user_id, "chats.mention")
    if "email" in channels: ...

The account API (``GET/PUT /api/v1/users/me/notifications``, sygmax/auth/account_api.py)
reads and changes the preferences through :func:`effective_preferences` and :func:`do_update`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import asyncpg

from sygmax.auth import audit
from sygmax.auth.audit import Source
from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.plugins import NotificationCategory, Plugin

CHANNELS = ("in_app", "email")

# Categories known to this process (code -> NotificationCategory), declared by the kernel at start-up
# so that a deliverer holding only a connection can still fill in the defaults.
_declared: dict[str, NotificationCategory] = {}


def declare_notification_categories(plugins: Iterable[Plugin]) -> None:
    """Make the plugins' notification categories known to :func:`notification_channels`."""
    for plugin in plugins:
        for category in plugin.notification_categories:
            _declared[category.code] = category


def categories_of(plugins: Iterable[Plugin]) -> dict[str, NotificationCategory]:
    """The categories the given plugins declare, sorted by code."""
    found = {category.code: category for plugin in plugins for category in plugin.notification_categories}
    return dict(sorted(found.items()))


async def _stored(connection: asyncpg.Connection, user_id: uuid.UUID, *, for_update: bool = False
                  ) -> dict[str, dict[str, bool]]:
    rows = await connection.fetch(
        "SELECT category, in_app, email FROM sygmax_notification_pref WHERE user_id = $1"
        + (" FOR UPDATE" if for_update else ""), user_id)
    return {row["category"]: {"in_app": row["in_app"], "email": row["email"]} for row in rows}


def _default(category: NotificationCategory) -> dict[str, bool]:
    return {channel: channel in category.default_channels for channel in CHANNELS}


async def effective_preferences(connection: asyncpg.Connection, user_id: uuid.UUID,
                                categories: Mapping[str, NotificationCategory]) -> dict[str, dict[str, bool]]:
    """Every category's channels for the user: what they chose, else the category's defaults."""
    stored = await _stored(connection, user_id)
    return {code: stored.get(code, _default(category)) for code, category in categories.items()}


async def notification_channels(connection: asyncpg.Connection, user_id: uuid.UUID, category: str) -> set[str]:
    """The channels (subset of ``{"in_app", "email"}``) by which ``user_id`` wants ``category`` delivered.

    The user's stored choice wins; otherwise the declaring plugin's ``default_channels``. A
    category no enabled plugin declares raises ``KeyError``: that is a deliverer's bug, and
    guessing a channel could mail people who never agreed to it.
    """
    declared = _declared.get(category)
    if declared is None:
        raise KeyError(f"notification category {category!r} is not declared by any enabled plugin")
    row = await connection.fetchrow(
        "SELECT in_app, email FROM sygmax_notification_pref WHERE user_id = $1 AND category = $2", user_id, category)
    chosen = {"in_app": row["in_app"], "email": row["email"]} if row else _default(declared)
    return {channel for channel in CHANNELS if chosen[channel]}


async def do_update(pool: asyncpg.Pool, user_id: uuid.UUID, categories: Mapping[str, NotificationCategory],
                    changes: Mapping[str, Mapping[str, bool]], source: Source) -> dict[str, dict[str, bool]]:
    """Set the user's channels for the categories in ``changes``; returns the effective preferences.

    A well-formed code no enabled plugin declares is refused like any unknown id (404
    ``unknown-category``, naming the field) before anything changes; the writes
    and their audit row commit together. Setting what is already in effect records nothing.
    """
    for code in changes:
        if code not in categories:
            raise Problem(404, "unknown-category", f"No notification category {code!r}; GET "
                          f"/api/v1/users/me/notifications lists them", field=f"categories.{code}")
    async with pool.acquire() as connection, connection.transaction():
        # Lock the user row so two concurrent saves cannot interleave their before/after views.
        await connection.execute("SELECT 1 FROM sygmax_user WHERE id = $1 FOR UPDATE", user_id)
        before = await effective_preferences(connection, user_id, categories)
        changed = {code: dict(channels) for code, channels in changes.items() if before[code] != dict(channels)}
        if changed:
            await connection.executemany(
                """INSERT INTO sygmax_notification_pref (user_id, category, in_app, email) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (user_id, category)
                   DO UPDATE SET in_app = excluded.in_app, email = excluded.email, updated_at = now()""",
                [(user_id, code, channels["in_app"], channels["email"]) for code, channels in changed.items()])
            await audit.record(connection, actor_id=user_id, action="user.notifications.update", object_type="user",
                               object_id=user_id, source=source, details={"categories": changed})
        return await effective_preferences(connection, user_id, categories)
