"""Per-request cost of the API gateway's hot paths, against a bare baseline in the same run.

    python bench/gateway.py [--requests 200000] [--checks 200000] [--repeat 5]

* ``security_headers``: a bare ASGI app (answers 200 with two headers) called directly with a
  fresh scope, without and with :class:`sygmax.security.SecurityHeadersMiddleware` around it
  (plain http and TLS); the difference is what the middleware adds to every response.
* ``feature_flags``: ``sygmax.flags.is_enabled`` with a warm in-process cache, for an unknown
  flag, a flag on for everyone, a user-list flag and a 30 % rollout (one SHA-256), against
  awaiting an empty coroutine; plus the cold path (the one query that reloads every flag) on a
  throwaway PostgreSQL started here and migrated with the real migrations.

Timings are the best of ``--repeat`` runs (least disturbed by the machine), in microseconds per
call. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from sygmax import flags  # noqa: E402
from sygmax.auth.tokens import Actor  # noqa: E402
from sygmax.config import GatewaySettings, ServerSettings  # noqa: E402
from sygmax.db.migrations import migrate, plan  # noqa: E402
from sygmax.plugins import discover_plugins, order_plugins  # noqa: E402
from sygmax.security import SecurityHeadersMiddleware  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402

SCOPE = {"type": "http", "method": "GET", "path": "/api/v1/users/me", "scheme": "http", "headers": [],
         "query_string": b"", "client": ("127.0.0.1", 50000)}
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]}
BODY = {"type": "http.response.body", "body": b"{}"}


async def bare_app(scope, receive, send) -> None:
    await send({**START, "headers": list(START["headers"])})
    await send(BODY)


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message) -> None:
    return None


async def time_asgi(app, scope: dict, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / n * 1e6


async def best(repeat: int, measure) -> float:
    return min([await measure() for _ in range(repeat)])


async def bench_headers(n: int, repeat: int) -> dict:
    gateway = GatewaySettings()
    wrapped = SecurityHeadersMiddleware(bare_app, ServerSettings(), gateway)
    wrapped_https = SecurityHeadersMiddleware(bare_app, ServerSettings(public_url="https://sygmax.example.org"),
                                              gateway)
    await time_asgi(bare_app, SCOPE, 1000)  # warm up
    bare = await best(repeat, lambda: time_asgi(bare_app, SCOPE, n))
    with_headers = await best(repeat, lambda: time_asgi(wrapped, SCOPE, n))
    with_hsts = await best(repeat, lambda: time_asgi(wrapped_https, {**SCOPE, "scheme": "https"}, n))
    return {"bare_us": round(bare, 3), "with_middleware_us": round(with_headers, 3),
            "with_middleware_hsts_us": round(with_hsts, 3),
            "added_us": round(with_headers - bare, 3), "added_hsts_us": round(with_hsts - bare, 3),
            "headers_added": len(wrapped.lists[(False, False)]), "requests_per_run": n}


async def noop() -> bool:
    return False


async def time_calls(make, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await make()
    return (time.perf_counter() - started) / n * 1e6


class FlagKernel:
    """What ``is_enabled`` uses of the Kernel: its gateway settings and the database pool."""

    def __init__(self, pool) -> None:
        self.settings = SimpleNamespace(gateway=GatewaySettings(flag_cache_s=300))
        self.db = SimpleNamespace(pool=pool)


async def bench_flags(n: int, repeat: int, database_url: str) -> dict:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        users = [uuid.uuid4() for _ in range(200)]
        async with pool.acquire() as connection:
            await connection.executemany("INSERT INTO sygmax_user (id, email, display_name) VALUES ($1, $2, $3)",
                                         [(user, f"u{i}@example.org", f"U{i}") for i, user in enumerate(users)])
            for name, data in {"everyone": flags.FlagIn(enabled=True, percentage=100),
                               "listed": flags.FlagIn(enabled=True, users=users[:100]),
                               "rollout": flags.FlagIn(enabled=True, percentage=30)}.items():
                await flags.do_set_flag(None, connection, name, data)
            for i in range(47):  # an installation with ~50 flags
                await flags.do_set_flag(None, connection, f"other-{i}", flags.FlagIn(enabled=i % 2 == 0,
                                                                                    percentage=i * 2))
        kernel = FlagKernel(pool)
        actor = Actor(users[150], "u@example.org", "U", False)
        await flags.is_enabled(kernel, "everyone", actor)  # warm the cache
        result = {"baseline_empty_coroutine_us": round(await best(repeat, lambda: time_calls(noop, n)), 3)}
        for name in ("unknown", "everyone", "listed", "rollout"):
            result[f"is_enabled_{name}_us"] = round(await best(repeat, lambda name=name: time_calls(
                lambda: flags.is_enabled(kernel, name, actor), n)), 3)
        cold = []
        for _ in range(200):
            flags.cache_of(kernel).invalidate()
            started = time.perf_counter()
            await flags.is_enabled(kernel, "rollout", actor)
            cold.append((time.perf_counter() - started) * 1e6)
        result["cold_reload_50_flags_us"] = {"p50": round(statistics.median(cold), 1),
                                             "p99": round(statistics.quantiles(cold, n=100)[98], 1)}
        result["flags"] = 50
        result["checks_per_run"] = n
        return result
    finally:
        await pool.close()


async def main(args) -> dict:
    server = PostgresServer().start()
    try:
        server.psql("postgres", "CREATE DATABASE bench")
        url = server.url("bench")
        plugins = order_plugins(discover_plugins())
        await migrate(url, plan([(plugin.name, plugin.migrations) for plugin in plugins]))
        headers = await bench_headers(args.requests, args.repeat)
        flag_figures = await bench_flags(args.checks, args.repeat, url)
    finally:
        server.stop()
    return {"benchmark": "gateway", "python": platform.python_version(), "machine": platform.machine(),
            "repeat": args.repeat, "security_headers": headers, "feature_flags": flag_figures}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
