"""Event bus throughput and latency: Sygmax's typed, idempotent, retrying bus vs raw redis-py.

    python bench/eventbus.py [--events 100000] [--batch-size 100] [--rounds 3]
                             [--paced-rate 2000] [--paced-events 4000]

Both systems run in the same invocation against the same throwaway redis-server, each with two
consumer processes in one consumer group and the publisher in this process:

* raw: ``XADD`` pipelined per batch, ``XREADGROUP COUNT batch`` + one ``XACK`` per batch;
* sygmax: ``EventBus.publish_many`` + ``Consumer`` with everything on: msgspec-typed events,
  done-marker dedupe check and write, attempt counting, dead-lettering, keepalive, reclaim.

Phases, each with ``--events`` events:

* publish only: a backlog is published while the consumers wait;
* consume only: the consumers drain that backlog (read -> handle -> ack);
* end to end: publish flat out while consuming, timed from the first publish to the last
  acknowledgement (group pending and lag both zero). Its latency is mostly queueing;
* paced: ``--paced-events`` at ``--paced-rate``/s, well under capacity: the latency figure to
  quote. Latency is handler time minus the publish time carried in the event.

The rounds alternate raw and sygmax so background load hits both alike; the run with the median
end-to-end throughput is reported for each. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from sygmax.config import EventSettings
from sygmax.events.bus import Consumer, Event, EventBus
from tests.servers import RedisServer

GROUP = "bench"
PREFIX = "sygmax:events"
RAW_STREAM = "raw:bench.tick"
FILLER = "x" * 64  # a small realistic body next to the timing fields


class Tick(Event):
    event_type = "bench.tick"
    sent_at: float
    phase: int
    body: str = FILLER


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(cuts[49] * 1000, 3), "p99": round(cuts[98] * 1000, 3)}


# --- consumer processes ---------------------------------------------------------------------------

DRAIN, FLAT_OUT, PACED = 0, 1, 2  # benchmark phases, carried in each event for the latency split


def consumer_process(kind: str, url: str, name: str, batch: int, ready: Any, go: Any, results: Any) -> None:
    asyncio.run(_consume(kind, url, name, batch, ready, go, results))


async def _consume(kind: str, url: str, name: str, batch: int, ready: Any, go: Any, results: Any) -> None:
    """Create the group, report ready, wait for ``go``, consume until SIGTERM, send latencies."""
    redis = Redis.from_url(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    latencies: tuple[list[float], ...] = ([], [], [])
    try:
        if kind == "sygmax":
            bus = EventBus(redis, EventSettings(stream_prefix=PREFIX, batch_size=batch))

            async def handle(event: Tick) -> None:
                latencies[event.phase].append(time.time() - event.sent_at)

            await bus.ensure_group(bus.stream_for(Tick), GROUP)
            ready.put(name)
            await asyncio.to_thread(go.wait)
            await Consumer(bus, GROUP, {Tick: handle}, name).run(stop)
        else:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: the other consumer made it first
                await redis.xgroup_create(RAW_STREAM, GROUP, id="0", mkstream=True)
            ready.put(name)
            await asyncio.to_thread(go.wait)
            streams = {RAW_STREAM: ">"}
            while not stop.is_set():
                response = await redis.xreadgroup(GROUP, name, streams, count=batch, block=1000)
                for stream, entries in response:
                    ids = []
                    for entry_id, fields in entries:
                        latencies[int(fields[b"p"])].append(time.time() - float(fields[b"t"]))
                        ids.append(entry_id)
                    await redis.xack(stream, GROUP, *ids)
    finally:
        await redis.aclose()
    results.put(latencies)


# --- publisher and measurement ---------------------------------------------------------------------


async def publish_batch(kind: str, redis: Redis, bus: EventBus, size: int, phase: int) -> None:
    """One batch of ``size`` events, the idiomatic way for each system."""
    now = time.time()
    if kind == "sygmax":
        await bus.publish_many([Tick(sent_at=now, phase=phase) for _ in range(size)])
    else:
        pipe = redis.pipeline(transaction=False)
        fields = {"t": repr(now), "p": str(phase), "body": FILLER}
        for _ in range(size):
            pipe.xadd(RAW_STREAM, fields, maxlen=bus.settings.stream_max_len, approximate=True)
        await pipe.execute()


async def _drained(redis: Redis, stream: str, expected: int) -> bool:
    for group in await redis.xinfo_groups(stream):
        if group["name"] == GROUP.encode():
            return int(group["entries-read"] or 0) >= expected and group["pending"] == 0 and group["lag"] == 0
    return False


async def _wait_drained(redis: Redis, stream: str, expected: int) -> None:
    while not await _drained(redis, stream, expected):
        await asyncio.sleep(0.002)


async def run_system(kind: str, url: str, events: int, batch: int, paced_rate: int,
                     paced_events: int) -> dict[str, Any]:
    """Publish-only, consume-only (drain a backlog), end to end flat out, then paced latency."""
    redis = Redis.from_url(url)
    await redis.flushall()
    bus = EventBus(redis, EventSettings(stream_prefix=PREFIX, batch_size=batch))
    stream = bus.stream_for(Tick) if kind == "sygmax" else RAW_STREAM
    spawn = multiprocessing.get_context("spawn")
    ready, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    workers = [spawn.Process(target=consumer_process, args=(kind, url, f"c{i}", batch, ready, go, results))
               for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            await asyncio.to_thread(ready.get, True, 60)

        started = time.perf_counter()
        for start in range(0, events, batch):
            await publish_batch(kind, redis, bus, min(batch, events - start), DRAIN)
        publish_s = time.perf_counter() - started

        started = time.perf_counter()
        go.set()
        await _wait_drained(redis, stream, events)
        drain_s = time.perf_counter() - started

        started = time.perf_counter()
        for start in range(0, events, batch):
            await publish_batch(kind, redis, bus, min(batch, events - start), FLAT_OUT)
        await _wait_drained(redis, stream, 2 * events)
        end_to_end_s = time.perf_counter() - started

        chunk = 10
        begin = time.perf_counter()
        for i in range(0, paced_events, chunk):
            await asyncio.sleep(max(0.0, begin + i / paced_rate - time.perf_counter()))
            await publish_batch(kind, redis, bus, chunk, PACED)
        await _wait_drained(redis, stream, 2 * events + paced_events)

        for worker in workers:
            os.kill(worker.pid, signal.SIGTERM)
        latencies: tuple[list[float], ...] = ([], [], [])
        for _ in workers:
            got = await asyncio.to_thread(results.get, True, 60)
            for phase, samples in enumerate(got):
                latencies[phase].extend(samples)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        await redis.aclose()
    counts = [len(samples) for samples in latencies]
    assert counts == [events, events, paced_events], counts
    return {
        "end_to_end_events_per_s": round(events / end_to_end_s),
        "end_to_end_latency_ms": _percentiles(latencies[FLAT_OUT]),
        "paced_latency_ms": {"rate_per_s": paced_rate, **_percentiles(latencies[PACED])},
        "publish_only_events_per_s": round(events / publish_s),
        "consume_only_events_per_s": round(events / drain_s),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median end-to-end throughput (a whole run, so its figures belong together)."""
    ordered = sorted(runs, key=lambda run: run["end_to_end_events_per_s"])
    return ordered[len(ordered) // 2]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per phase")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--paced-rate", type=int, default=2000, help="events/s in the latency phase")
    parser.add_argument("--paced-events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/sygmax runs; medians reported")
    args = parser.parse_args()
    server = RedisServer().start()
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "sygmax": []}
    try:
        for _ in range(args.rounds):
            for kind in ("raw", "sygmax"):
                runs[kind].append(await run_system(
                    kind, server.url, args.events, args.batch_size, args.paced_rate, args.paced_events))
    finally:
        server.cleanup()
    raw, sygmax = _median_run(runs["raw"]), _median_run(runs["sygmax"])
    ratio = {key: round(sygmax[key] / raw[key], 3) for key in raw if key.endswith("events_per_s")}
    print(json.dumps({
        "events_per_phase": args.events,
        "batch_size": args.batch_size,
        "consumer_processes": 2,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "sygmax": sygmax,
        "raw": raw,
        "ratio_sygmax_over_raw": ratio,
        "end_to_end_events_per_s_each_round": {kind: [r["end_to_end_events_per_s"] for r in rs]
                                                for kind, rs in runs.items()},
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
