"""Per-process state of the chats module: rate limiter, presence, frame encoding, fan-out topics.

One :class:`ChatsRuntime` per kernel (so two apps in one test process do not share state),
made on first use. Frames are encoded here, once per event: the same bytes go to Redis and,
from there, to every local subscriber of every process.
"""

from __future__ import annotations

import uuid
import weakref
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from plugins.chats.config import ChatsSettings
from plugins.chats.presence import Presence
from sygmax.ratelimit import RateLimiter

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.chats")

_encoder = msgspec.json.Encoder()
encode = _encoder.encode


def channel_topic(channel_id: uuid.UUID | str) -> str:
    return f"chats:c:{channel_id}"


def presence_topic(workspace_id: uuid.UUID | str) -> str:
    return f"chats:p:{workspace_id}"


class ChatsRuntime:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        # Defaults when the app was built from settings loaded without plugin sections (some tests).
        self.settings: ChatsSettings = kernel.settings.plugin_sections.get("chats") or ChatsSettings()
        self.limiter = RateLimiter(kernel.redis, prefix="sygmax:chats:ratelimit")
        self.presence = Presence(kernel.redis, self.settings.presence_ttl_s)
        self.hub: Any = None  # the realtime profile's Hub (plugins/chats/realtime.py)

    async def publish(self, channel_id: uuid.UUID, frame: dict[str, Any]) -> None:
        """Fan a frame out to the channel's subscribers in every process; a lost frame is
        recovered by the subscribers' gap filling, so a Redis hiccup is logged, not raised."""
        try:
            await self.kernel.fanout.publish(channel_topic(channel_id), encode(frame))
        except Exception as exc:  # noqa: BLE001 - the message is committed; clients resync by seq
            log.warning("chats_fanout_failed", channel_id=str(channel_id), error=str(exc))

    async def publish_event(self, event) -> None:
        try:
            await self.kernel.bus.publish(event)
        except Exception as exc:  # noqa: BLE001 - the change is committed; losing the event must not undo it
            log.error("chats_event_publish_failed", event_type=event.event_type, error=str(exc))

    async def announce_presence(self, user_id: uuid.UUID, status: str) -> None:
        """Tell every workspace the user belongs to (presence frames go per workspace)."""
        try:
            async with self.kernel.db.pool.acquire() as connection:
                rows = await connection.fetch("SELECT workspace_id FROM sygmax_membership WHERE user_id = $1", user_id)
            data = encode({"type": "presence", "user_id": user_id, "status": status})
            for row in rows:
                await self.kernel.fanout.publish(presence_topic(row["workspace_id"]), data)
        except Exception as exc:  # noqa: BLE001 - presence is best effort; the next transition corrects it
            log.warning("chats_presence_publish_failed", user_id=str(user_id), error=str(exc))


_runtimes: weakref.WeakKeyDictionary[Kernel, ChatsRuntime] = weakref.WeakKeyDictionary()


def runtime(kernel: Kernel) -> ChatsRuntime:
    found = _runtimes.get(kernel)
    if found is None:
        found = _runtimes[kernel] = ChatsRuntime(kernel)
    return found


__all__ = ["ChatsRuntime", "channel_topic", "encode", "presence_topic", "runtime"]
