"""The chats module: channels, direct messages, threads, reactions, search and realtime delivery."""

from __future__ import annotations

from pathlib import Path

from plugins.chats.api import HANDLERS
from plugins.chats.config import ChatsSettings
from plugins.chats.models import TABLES
from plugins.chats.realtime import HANDLERS as WEBSOCKET_HANDLERS
from plugins.chats.realtime import stop_hub
from plugins.chats.runtime import runtime
from plugins.chats.workers import CONSUMERS
from sygmax.plugins import NotificationCategory, Permission, Plugin, UIPage


async def _check_language(kernel) -> None:
    """Refuse to start with a text search configuration PostgreSQL does not have (not a 500 on first post)."""
    chats = runtime(kernel)
    async with kernel.db.pool.acquire() as connection:
        found = await connection.fetchval("SELECT count(*) FROM pg_ts_config WHERE cfgname = $1",
                                          chats.settings.search_language)
    if not found:
        raise RuntimeError(f"[chats] search_language {chats.settings.search_language!r} is not a PostgreSQL text "
                           f"search configuration; see SELECT cfgname FROM pg_ts_config")


plugin = Plugin(
    name="chats",
    version="1",
    description="Team chat: public and private channels, direct and group messages, threads, reactions, "
                "mentions, pins, read markers, presence, search and attachments, delivered in realtime",
    http_handlers=HANDLERS,
    websocket_handlers=WEBSOCKET_HANDLERS,
    tables=TABLES,
    migrations=Path(__file__).parent / "migrations",
    consumers=CONSUMERS,
    permissions=[
        Permission("chats.read", "Read channels and search messages", default_roles=("editor", "viewer")),
        Permission("chats.post", "Post, react, pin, and open direct conversations"),
        Permission("chats.create", "Create channels"),
        Permission("chats.manage", "Rename and delete channels, manage members, delete others' messages",
                   default_roles=()),
    ],
    settings=ChatsSettings,
    ui_pages=[UIPage("/chats", "Chats", icon="message-circle")],
    notification_categories=[
        NotificationCategory("chats.mention", "Someone mentions you in a channel", ("in_app", "email")),
        NotificationCategory("chats.direct", "A direct or group message to you", ("in_app", "email")),
    ],
    on_startup=[_check_language],
    on_shutdown=[stop_hub],
)
