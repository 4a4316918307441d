"""The kernel's services for one process: settings, database, Redis, event bus, fan-out, storage.

Handlers get it as the ``kernel`` dependency; consumers and schedules receive it as their
first argument. It is the only door from a plugin to shared infrastructure.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from litestar.di import NamedDependency
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sygmax.auth.models import KERNEL_TABLES
from sygmax.auth.policy import declare_permissions
from sygmax.config import Settings
from sygmax.db import Database
from sygmax.events.bus import EventBus
from sygmax.events.fanout import Fanout
from sygmax.notification_prefs import declare_notification_categories
from sygmax.plugins import Plugin
from sygmax.storage.base import ObjectStore, open_store

READY_TIMEOUT_S = 2.0


def connect_redis(url: str, max_connections: int = 100) -> Redis:
    # One retry with backoff on a dropped connection: a Redis restart costs one slow
    # request, not an error, and no process restart is needed.
    return Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


class Kernel:
    # A plain class, not a dataclass: Litestar's signature model would otherwise try to
    # validate its fields every time a handler receives it as a dependency.
    def __init__(self, settings: Settings, plugins: dict[str, Plugin], db: Database, redis: Redis,
                 bus: EventBus, fanout: Fanout, storage: ObjectStore) -> None:
        self.settings = settings
        self.plugins = plugins
        declare_permissions(plugins.values())  # what the built-in roles hold (sygmax/auth/policy.py)
        declare_notification_categories(plugins.values())  # defaults for sygmax/notification_prefs.py
        self.db = db
        self.redis = redis
        self.bus = bus
        self.fanout = fanout
        self.storage = storage
        self.profiles: frozenset[str] = frozenset()  # the process profiles this process runs (set by create_app)
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def build(cls, settings: Settings, plugins: dict[str, Plugin]) -> "Kernel":
        redis = connect_redis(settings.redis.url, settings.redis.max_connections)
        return cls(
            settings=settings,
            plugins=plugins,
            db=Database(settings.database),
            redis=redis,
            bus=EventBus(redis, settings.events),
            fanout=Fanout(redis),
            storage=open_store(settings.storage, public_base_url=settings.server.public_url),
        )

    def spawn(self, coroutine, name: str) -> asyncio.Task:
        """Start a background task and keep a reference: an unreferenced task can be garbage-collected."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        await self.db.start()
        tables = [table for plugin in self.plugins.values() for table in plugin.tables]
        self.db.bind([*KERNEL_TABLES, *tables])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.fanout.aclose()
        await self.storage.close()
        await self.redis.aclose()
        await self.db.close()

    async def refresh_gauges(self) -> None:
        """Sample event-bus lag for every consumer group of this installation (for /metrics)."""
        from sygmax.observability import EVENT_DEAD, EVENT_LAG

        try:
            EVENT_DEAD.set(await asyncio.wait_for(self.bus.dead_count(), READY_TIMEOUT_S))
        except Exception:  # metrics must render even while Redis is away
            return
        for plugin in self.plugins.values():
            for spec in plugin.consumers:
                group = f"{plugin.name}.{spec.name}"
                streams = [self.bus.stream_for(event_type) for event_type in spec.handlers]
                try:
                    lags = await asyncio.wait_for(self.bus.lag(group, streams), READY_TIMEOUT_S)
                except Exception:
                    continue
                for stream, lag in lags.items():
                    EVENT_LAG.labels(stream, group).set(lag)

    async def readiness(self) -> dict[str, dict]:
        """Check every dependency concurrently; each answer is ``{"ok": bool, "error"?: str}``."""

        async def probe(check) -> dict:
            try:
                await asyncio.wait_for(check(), READY_TIMEOUT_S)
                return {"ok": True}
            except asyncio.TimeoutError:
                return {"ok": False, "error": f"no answer within {READY_TIMEOUT_S:g}s"}
            except Exception as exc:  # the probe reports any failure instead of raising it
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

        names = ("database", "redis", "storage")
        results = await asyncio.gather(
            probe(self.db.check), probe(self.redis.ping), probe(self.storage.check)
        )
        return dict(zip(names, results))


# Handlers declare ``kernel: KernelDep`` to receive the process's Kernel.
KernelDep: TypeAlias = NamedDependency[Kernel]
