"""Background work of the worker and scheduler profiles.

Worker: one event-bus consumer per plugin ``ConsumerSpec``, group ``<plugin>.<name>``; all
processes of the profile share the group, so each event is handled by one of them.

Scheduler: every process of the profile runs apscheduler, but a job body runs only on the
leader, the holder of a Redis lock renewed every few seconds. When the leader dies its
lock expires and another scheduler takes over within ``LEADER_TTL_S``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sygmax.events.bus import Consumer
from sygmax.observability import EVENTS_HANDLED

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.runtime")

LEADER_KEY = "sygmax:scheduler:leader"
LEADER_TTL_S = 15
# Renew only if we still hold the lock: compare-and-expire in one atomic step.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def process_name() -> str:
    """Unique among live processes (several server workers may share one supervisor program),
    readable in XINFO CONSUMERS: host, supervisor program (e.g. sygmax-worker-1), pid."""
    program = os.environ.get("SUPERVISOR_PROCESS_NAME")
    return "-".join(part for part in (socket.gethostname(), program, str(os.getpid())) if part)


def _counted(kernel: "Kernel", group: str, handler):
    """Bind the kernel as the handler's first argument and count each outcome for /metrics."""
    handled = EVENTS_HANDLED.labels(group, "ok")
    failed = EVENTS_HANDLED.labels(group, "error")

    async def run(event) -> None:
        try:
            await handler(kernel, event)
        except BaseException:
            failed.inc()
            raise
        handled.inc()

    return run


def start_consumers(kernel: "Kernel") -> list[Consumer]:
    stop = asyncio.Event()
    consumers = []
    for plugin in kernel.plugins.values():
        for spec in plugin.consumers:
            group = f"{plugin.name}.{spec.name}"
            handlers = {event_type: _counted(kernel, group, handler) for event_type, handler in spec.handlers.items()}
            consumer = Consumer(kernel.bus, group, handlers, name=process_name())
            consumers.append(consumer)
            kernel.spawn(consumer.run(stop), name=f"consumer:{plugin.name}.{spec.name}")
    log.info("consumers_started", count=len(consumers))
    return consumers


class LeaderScheduler:
    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self.identity = f"{process_name()}-{uuid.uuid4().hex[:8]}"
        self.is_leader = False
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.renew = kernel.redis.register_script(_RENEW)
        self.resign = kernel.redis.register_script(_RESIGN)

    async def _campaign(self) -> None:
        while True:
            try:
                if self.is_leader:
                    self.is_leader = bool(await self.renew(keys=[LEADER_KEY],
                                                           args=[self.identity, LEADER_TTL_S * 1000]))
                if not self.is_leader:
                    self.is_leader = bool(await self.kernel.redis.set(
                        LEADER_KEY, self.identity, nx=True, px=LEADER_TTL_S * 1000))
                    if self.is_leader:
                        log.info("scheduler_leader", identity=self.identity)
            except Exception as exc:  # Redis down: step back rather than risk two leaders
                self.is_leader = False
                log.warning("scheduler_election_failed", error=str(exc))
            await asyncio.sleep(LEADER_TTL_S / 3)

    async def _run(self, plugin: str, schedule) -> None:
        if not self.is_leader:
            return
        try:
            await schedule.job(self.kernel)
        except Exception:
            log.exception("schedule_failed", plugin=plugin, schedule=schedule.name)

    def start(self) -> None:
        for plugin in self.kernel.plugins.values():
            for schedule in plugin.schedules:
                trigger = (IntervalTrigger(seconds=schedule.seconds) if schedule.seconds is not None
                           else CronTrigger.from_crontab(schedule.cron, timezone="UTC"))
                self.scheduler.add_job(self._run, trigger, args=[plugin.name, schedule],
                                       id=f"{plugin.name}.{schedule.name}", max_instances=1, coalesce=True)
        self.scheduler.start()
        self.kernel.spawn(self._campaign(), name="scheduler:leader")

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        if self.is_leader:
            self.is_leader = False
            await self.resign(keys=[LEADER_KEY], args=[self.identity])


def start_scheduler(kernel: "Kernel") -> LeaderScheduler:
    scheduler = LeaderScheduler(kernel)
    scheduler.start()
    return scheduler
