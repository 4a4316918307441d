"""Where Sygmax's per-request time goes: drive the ASGI apps in-process, no HTTP server.

    python bench/profile_asgi.py [--requests 20000] [--concurrency 32] [--single-process]
                                 [--cprofile]

Starts throwaway PostgreSQL/Redis, then times (µs of one process's CPU per request, with
``--concurrency`` requests in flight on uvloop) the same request through progressively more
of the stack: a bare Litestar app, Sygmax's Litestar app alone, + ObservabilityMiddleware,
+ access log, + RateLimitMiddleware; and GET /api/v1/users/me likewise, plus the raw asyncpg
queries it makes with and without asyncpg's reset-on-release. ``--cprofile`` adds the top
functions of the full stack. By default PROMETHEUS_MULTIPROC_DIR is set, as ``sygmax run``
does with more than one worker; ``--single-process`` leaves it unset.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


REDIS_CALLS = [0]  # EVALSHA calls made by the rate limiter


def scope_for(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }


async def one(app, path: str, headers) -> int:
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_for(path, headers), receive, send)
    return status


async def drive(app, path: str, headers, total: int, concurrency: int) -> dict:
    per_task = total // concurrency
    bad = 0

    async def client():
        nonlocal bad
        for _ in range(per_task):
            if await one(app, path, headers) != 200:
                bad += 1

    await asyncio.gather(*(client() for _ in range(min(concurrency, 64))))  # warm-up
    calls0 = REDIS_CALLS[0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = per_task * concurrency
    return {"us_cpu_per_request": round(cpu / n * 1e6, 1), "us_wall_per_request": round(wall / n * 1e6, 1),
            "requests_per_s_one_process": round(n / wall), "non_200": bad,
            "ratelimit_redis_calls_per_request": round((REDIS_CALLS[0] - calls0) / n, 3)}


async def lifespan(app, event: str) -> None:
    messages = [{"type": f"lifespan.{event}"}]
    done = asyncio.get_running_loop().create_future()

    async def receive():
        return messages.pop(0) if messages else await asyncio.Future()

    async def send(message):
        if not done.done():
            done.set_result(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    reply = await done
    if not reply["type"].endswith(".complete"):
        raise RuntimeError(reply)
    return task


async def users_me_variants(kernel, auth, n: int, c: int) -> dict:
    """GET /me variants on a Litestar app without Sygmax's wrappers, sharing the real kernel."""
    import asyncpg
    from litestar import Litestar, get
    from litestar.datastructures import State
    from litestar.di import Provide

    from sygmax.auth.routes import UserOut
    from sygmax.auth.tokens import Actor, CurrentActor, provide_actor
    from sygmax.kernel import Kernel, KernelDep

    sql = "SELECT id, email, display_name, is_admin FROM sygmax_user WHERE id = $1"

    @get("/as_is")
    async def as_is(actor: CurrentActor, kernel: KernelDep) -> UserOut:  # today's handler
        row = await kernel.db.pool.fetchrow(sql, actor.user_id)
        return UserOut(row["id"], row["email"], row["display_name"], row["is_admin"])

    @get("/state_kernel")
    async def state_kernel(actor: CurrentActor, state: State) -> UserOut:  # one dependency: no task group
        row = await state.kernel.db.pool.fetchrow(sql, actor.user_id)
        return UserOut(row["id"], row["email"], row["display_name"], row["is_admin"])

    @get("/actor_only")
    async def actor_only(actor: CurrentActor) -> UserOut:  # token lookup only, no second query
        return UserOut(actor.user_id, actor.email, actor.display_name, actor.is_admin)

    def provide_kernel(state: State) -> Kernel:
        return state.kernel

    variant = Litestar(
        [as_is, state_kernel, actor_only],
        dependencies={"kernel": Provide(provide_kernel, sync_to_thread=False), "actor": Provide(provide_actor)},
        signature_namespace={"Kernel": Kernel, "Actor": Actor, "CurrentActor": CurrentActor, "KernelDep": KernelDep,
                             "UserOut": UserOut, "State": State},
        state=State({"kernel": kernel}), debug=False,
    )
    out = {}
    for path in ("/as_is", "/state_kernel", "/actor_only"):
        out[path.strip("/")] = await drive(variant, path, auth, n, c)
    # The same with a pool whose release skips asyncpg's reset query (transactions are still
    # rolled back by Connection._reset; session SET/LISTEN/advisory locks are not undone).
    engine = kernel.db.engine
    original = engine.pool

    async def no_reset_query(connection):
        return None

    lean = await asyncpg.create_pool(dsn=engine.config["dsn"], min_size=2, max_size=kernel.settings.database.pool_max,
                                     reset=no_reset_query)
    engine.pool = lean
    try:
        for path in ("/as_is", "/state_kernel", "/actor_only"):
            out[path.strip("/") + "+pool_reset_noop"] = await drive(variant, path, auth, n, c)
    finally:
        engine.pool = original
        await lean.close()
    return out


def micro(settings) -> dict:
    import timeit
    import uuid

    import structlog

    from sygmax.auth.tokens import hash_token
    from sygmax.observability import IN_FLIGHT, REQUEST_LATENCY

    log = structlog.get_logger("sygmax.access")
    number = 20000

    def t(fn) -> float:
        return round(min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6, 2)

    return {
        "uuid4_hex": t(lambda: uuid.uuid4().hex),
        "in_flight_inc_dec": t(lambda: (IN_FLIGHT.inc(), IN_FLIGHT.dec())),
        "latency_labels_observe": t(lambda: REQUEST_LATENCY.labels("/healthz", "GET", "200").observe(0.001)),
        "access_log_info": t(lambda: log.info("request", request_id="0" * 32, method="GET", route="/healthz",
                                              status=200, ms=0.12)),
        "hash_token_sha256": t(lambda: hash_token("syg_" + "a" * 43)),
    }


async def main_async(args, env: dict[str, str]) -> dict:
    from litestar import Litestar, get

    from sygmax.app import create_app
    from sygmax.config import load_settings
    from sygmax.plugins import discover_plugins

    @get("/healthz", cache=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    bare = Litestar([healthz], debug=False)
    settings = load_settings(env["SYGMAX_CONFIG"], environ=env)
    app = create_app("api", settings=settings, plugins=discover_plugins())
    from sygmax.observability import ObservabilityMiddleware

    # Sygmax's wrappers around Litestar's own handler, outermost first (Observability, gateway, ...).
    full = app.asgi_handler
    layers, inner = [], full
    while type(inner).__module__.startswith("sygmax.") and hasattr(inner, "app"):
        layers.append(inner)
        inner = inner.app
    litestar_only = inner
    life = await lifespan(app, "startup")
    limiter = next((layer.limiter for layer in layers if getattr(layer, "limiter", None) is not None), None)
    if limiter is not None:
        original_script = limiter.script

        async def counting(*a, **k):
            REDIS_CALLS[0] += 1
            return await original_script(*a, **k)

        limiter.script = counting
    kernel = app.state.kernel
    token = args.token
    auth = [(b"authorization", f"Bearer {token}".encode())]

    def as_app(handler):
        # Litestar's outer __call__ sets scope keys the inner handler expects; swap the handler.
        async def call(scope, receive, send):
            app.asgi_handler = handler
            await app(scope, receive, send)
        return call

    # Stacks from the inside out: litestar, +innermost wrapper, ..., +all wrappers but the access log, full.
    stacks = [("litestar_only", litestar_only)]
    for layer in reversed(layers):
        if isinstance(layer, ObservabilityMiddleware):
            stacks.append((f"+{type(layer).__name__}(no access log)",
                           ObservabilityMiddleware(layer.app, access_log=False)))
        stacks.append((f"+{type(layer).__name__}", layer))
    out: dict = {"layers_outermost_first": [type(layer).__name__ for layer in layers],
                 "healthz": {}, "users_me": {}, "asyncpg": {}}
    n, c = args.requests, args.concurrency
    out["healthz"]["bare_litestar_app"] = await drive(bare, "/healthz", [], n, c)
    for name, handler in stacks:
        out["healthz"][name] = await drive(as_app(handler), "/healthz", [], n, c)
    for name, handler in stacks:
        out["users_me"][name] = await drive(as_app(handler), "/api/v1/users/me", auth, n // 2, c)
    app.asgi_handler = full

    # The two statements users/me runs, straight on the pool (acquire+query+reset+release).
    from sygmax.auth.tokens import _LOOKUP, hash_token

    pool = kernel.db.pool
    digest = hash_token(token)
    row = await pool.fetchrow(_LOOKUP, digest)
    user_id = row["id"]

    async def two_queries(scope=None, receive=None, send=None):
        await pool.fetchrow(_LOOKUP, digest)
        await pool.fetchrow("SELECT id, email, display_name, is_admin FROM sygmax_user WHERE id = $1", user_id)

    async def two_queries_one_acquire(scope=None, receive=None, send=None):
        async with pool.acquire() as conn:
            await conn.fetchrow(_LOOKUP, digest)
            await conn.fetchrow("SELECT id, email, display_name, is_admin FROM sygmax_user WHERE id = $1",
                                user_id)

    async def reset_only(scope=None, receive=None, send=None):
        async with pool.acquire() as conn:
            await conn.execute(conn.get_reset_query())

    async def ok(fn):
        async def call(scope, receive, send):
            await fn()
            await send({"type": "http.response.start", "status": 200})
        return call

    out["asyncpg"]["reset_query"] = None
    async with pool.acquire() as conn:
        out["asyncpg"]["reset_query"] = conn.get_reset_query()
    out["asyncpg"]["pool_max"] = settings.database.pool_max
    out["asyncpg"]["two_pool_fetchrow_default_reset"] = await drive(await ok(two_queries), "/", [], n // 2, c)
    out["asyncpg"]["two_fetchrow_one_acquire"] = await drive(await ok(two_queries_one_acquire), "/", [], n // 2, c)
    out["asyncpg"]["acquire_reset_release_only"] = await drive(await ok(reset_only), "/", [], n // 2, c)

    out["users_me_variants_litestar_only"] = await users_me_variants(kernel, auth, n // 2, c)
    out["micro_us_per_call"] = micro(settings)

    if args.cprofile:
        for label, path, headers, count in [("healthz", "/healthz", [], n), ("users_me", "/api/v1/users/me", auth, n // 2)]:
            profiler = cProfile.Profile()
            profiler.enable()
            await drive(app, path, headers, count, c)
            profiler.disable()
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats("tottime").print_stats(30)
            out[f"cprofile_{label}_tottime"] = buffer.getvalue()
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats("cumulative").print_stats(45)
            out[f"cprofile_{label}_cumulative"] = buffer.getvalue()

    await kernel.stop()
    life.cancel()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--single-process", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="sygmax-prof-"))
    if not args.single_process:
        (scratch / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(scratch / "metrics")

    from bench.http_baseline import prepare_database, unlimited_rate_limits
    from tests.servers import PostgresServer, RedisServer

    real_stdout = sys.stdout
    postgres = redis = None
    try:
        postgres = PostgresServer().start()
        redis = RedisServer().start()
        args.token = prepare_database(postgres)
        (scratch / "objects").mkdir()
        env = {
            "SYGMAX_CONFIG": str(scratch / "absent.toml"),
            "SYGMAX_DATABASE_URL": postgres.url(), "SYGMAX_REDIS_URL": redis.url,
            "SYGMAX_STORAGE_URL": f"file://{scratch / 'objects'}", "SYGMAX_STORAGE_PRESIGN_SECRET": "x",
            "SYGMAX_LOG_ACCESS_LOG": "true", "SYGMAX_RATE_LIMIT_ENABLED": "true",
            **unlimited_rate_limits(),
        }
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access log (structlog binds sys.stdout at configure time)
        import uvloop

        result = uvloop.run(main_async(args, env))
    finally:
        sys.stdout = real_stdout
        if redis is not None:
            redis.cleanup()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    result["multiprocess_metrics"] = not args.single_process
    texts = {k: result.pop(k) for k in list(result) if k.startswith("cprofile_")}
    print(json.dumps(result, indent=2))
    for key, text in texts.items():
        print(f"\n===== {key}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
