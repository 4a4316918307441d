"""Authentication costs: password logins at the configured argon2id parameters, JWT and
personal-token authentication, each beside its raw peer measured in the same run.

    python bench/auth.py [--logins 400] [--concurrency 32] [--verifies 20000] [--no-write]

Throwaway PostgreSQL and Redis (tests/servers.py), migrated; a Kernel in this process.

* ``argon2_raw``: ``argon2.PasswordHasher.verify`` with the same parameters, one thread
  (microseconds per verify) and one thread per CPU (verifies per second): the ceiling a
  login can reach.
* ``login``: concurrent *direct calls* of ``sygmax.auth.accounts.do_login`` (lockout check
  in Redis, user query, argon2 verify in the hashing thread pool, session + refresh token +
  audit row in one transaction, JWT minted), ``--concurrency`` at a time, over 64 accounts;
  logins per second and latency percentiles.
* ``jwt``: ``sygmax.auth.keys.verify_access_token`` (header check, kid lookup, EdDSA verify,
  claim checks) vs raw ``jwt.decode(token, key, algorithms=["EdDSA"])``; and the full
  ``sygmax.auth.tokens.authenticate`` for a JWT bearer (verification plus the session's
  Redis deny-list lookup) vs a bare Redis ``EXISTS`` round trip.
* ``personal_token``: ``authenticate`` for a ``syg_`` token (SHA-256 + one indexed query)
  vs the raw ``fetchrow`` of the same query.

Prints one JSON object and writes it to bench/results/auth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
from argon2 import PasswordHasher, Type  # noqa: E402

from bench.report import emit  # noqa: E402
from sygmax.auth import accounts  # noqa: E402
from sygmax.auth.audit import Source  # noqa: E402
from sygmax.auth.keys import keyring, verify_access_token  # noqa: E402
from sygmax.auth.tokens import _LOOKUP, authenticate, hash_token, issue_token  # noqa: E402
from sygmax.config import load_settings  # noqa: E402
from sygmax.db.migrations import migrate, plan  # noqa: E402
from sygmax.kernel import Kernel  # noqa: E402
from sygmax.plugins import discover_plugins, order_plugins  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "auth.json"
PASSWORD = "bench password 123"
ACCOUNTS = 64


def _percentiles(samples_s: list[float], unit: float) -> dict:
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * unit, 3)

    return {"p50": pick(0.50), "p99": pick(0.99), "mean": round(statistics.fmean(ordered) * unit, 3),
            "n": len(ordered)}


def _timed_loop(function, n: int) -> dict:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return _percentiles(samples, 1e6)


async def _timed_async(function, n: int) -> dict:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await function()
        samples.append(time.perf_counter() - start)
    return _percentiles(samples, 1e6)


def bench_argon2(settings, verifies: int) -> dict:
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib,
                            parallelism=settings.argon2_parallelism, hash_len=32, salt_len=16, type=Type.ID)
    stored = hasher.hash(PASSWORD)
    single = _timed_loop(lambda: hasher.verify(stored, PASSWORD), verifies)
    threads = os.cpu_count() or 1
    total = threads * max(4, verifies // 4)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: hasher.verify(stored, PASSWORD), range(total)))
    elapsed = time.perf_counter() - start
    return {"single_thread_us": single, "threads": threads, "parallel_verifies_per_s": round(total / elapsed, 1)}


async def bench_logins(kernel: Kernel, logins: int, concurrency: int) -> dict:
    source = Source("198.51.100.1", None)
    semaphore = asyncio.Semaphore(concurrency)
    samples: list[float] = []

    async def one(index: int) -> None:
        async with semaphore:
            start = time.perf_counter()
            await accounts.do_login(kernel, f"user{index % ACCOUNTS}@example.org", PASSWORD, source)
            samples.append(time.perf_counter() - start)

    await asyncio.gather(*(one(index) for index in range(min(logins, 2 * concurrency))))  # warm-up
    samples.clear()
    start = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(logins)))
    elapsed = time.perf_counter() - start
    return {"mode": "direct calls of sygmax.auth.accounts.do_login", "concurrency": concurrency,
            "logins_per_s": round(logins / elapsed, 1), "latency_ms": _percentiles(samples, 1e3)}


async def bench_tokens(kernel: Kernel, verifies: int) -> dict:
    settings = kernel.settings.auth
    pair = await accounts.do_login(kernel, "user0@example.org", PASSWORD, Source())
    token = pair.access_token
    kid = jwt.get_unverified_header(token)["kid"]
    public = keyring(settings).public_key(kid)
    assert public is not None
    raw = _timed_loop(lambda: jwt.decode(token, public, algorithms=["EdDSA"], issuer=settings.issuer), verifies)
    ours = _timed_loop(lambda: verify_access_token(settings, token), verifies)
    header = f"Bearer {token}"
    full = await _timed_async(lambda: authenticate(kernel, header), verifies // 4)
    redis_exists = await _timed_async(lambda: kernel.redis.exists("sygmax:auth:revoked-session:x"), verifies // 4)

    user_id = await kernel.db.pool.fetchval("SELECT id FROM sygmax_user WHERE email = 'user0@example.org'")
    personal = await issue_token(kernel.db.pool, user_id, "bench")
    personal_header = f"Bearer {personal}"
    digest = hash_token(personal)
    personal_auth = await _timed_async(lambda: authenticate(kernel, personal_header), verifies // 4)
    raw_query = await _timed_async(lambda: kernel.db.pool.fetchrow(_LOOKUP, digest), verifies // 4)
    return {
        "jwt": {
            "sygmax_verify_access_token_us": ours,
            "peer_raw_jwt_decode_us": raw,
            "sygmax_authenticate_jwt_us": full,
            "peer_redis_exists_round_trip_us": redis_exists,
        },
        "personal_token": {
            "sygmax_authenticate_us": personal_auth,
            "peer_raw_lookup_query_us": raw_query,
        },
    }


async def run(args, postgres: PostgresServer, redis: RedisServer, scratch: Path) -> dict:
    plugins = discover_plugins()
    steps = plan([(plugin.name, plugin.migrations) for plugin in order_plugins(plugins)])
    await migrate(postgres.url(), steps)
    environ = {
        "SYGMAX_DATABASE_URL": postgres.url(), "SYGMAX_REDIS_URL": redis.url,
        "SYGMAX_STORAGE_URL": f"file://{scratch / 'objects'}", "SYGMAX_STORAGE_PRESIGN_SECRET": "bench",
        "SYGMAX_AUTH_KEYS_DIR": str(scratch / "keys"), "SYGMAX_DATABASE_POOL_MAX": "40",
        "SYGMAX_AUTH_LOGIN_PER_IP_PER_MINUTE": "100000000", "SYGMAX_LOG_LEVEL": "warning",
    }
    settings = load_settings(scratch / "absent.toml", environ=environ)
    kernel = Kernel.build(settings, plugins)
    await kernel.start()
    try:
        for index in range(ACCOUNTS):
            await accounts.do_create_user(None, kernel, f"user{index}@example.org", f"User {index}", PASSWORD, False)
        logins = await bench_logins(kernel, args.logins, args.concurrency)
        tokens = await bench_tokens(kernel, args.verifies)
    finally:
        await kernel.stop()
    return {"settings": settings.auth, "login": logins, **tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--verifies", type=int, default=20000)
    parser.add_argument("--argon2-verifies", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="sygmax-bench-auth-"))
    postgres = PostgresServer().start()
    redis = RedisServer().start()
    started = time.time()
    try:
        measured = asyncio.run(run(args, postgres, redis, scratch))
    finally:
        redis.cleanup()
        postgres.stop()
    auth = measured.pop("settings")
    report = {
        "benchmark": "auth",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "argon2id": {"time_cost": auth.argon2_time_cost, "memory_kib": auth.argon2_memory_kib,
                     "parallelism": auth.argon2_parallelism, "hashing_threads": os.cpu_count()},
        "argon2_raw": bench_argon2(auth, args.argon2_verifies),
        **measured,
    }
    emit(report, RESULTS, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
