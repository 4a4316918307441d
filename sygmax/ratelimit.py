"""Redis token-bucket rate limiting shared by every process of every node.

One Lua script refills and takes tokens atomically in Redis. To keep a Redis round trip
off most requests, each process *leases* a few tokens at a time (at most a hundredth of
the per-minute limit, at most 20) and spends them locally; the only cost is that a
bucket may be overspent by one lease per process at the instant it runs dry. Leases
expire after a second so an idle process does not sit on tokens.

If Redis is unreachable the limiter fails open (requests pass, a warning is logged):
rate limits protect the service, they must not take it down with Redis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sygmax.errors import problem_body

log = structlog.get_logger("sygmax.ratelimit")

# KEYS[1] bucket; ARGV: capacity, refill per second, tokens wanted, now (seconds, float)
# Returns {granted, seconds until one token is available}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
local wait = 0
if granted < want then wait = (1 - (tokens - math.floor(tokens))) / rate end
return {granted, tostring(wait)}
"""

LEASE_SECONDS = 1.0


@dataclass
class _Lease:
    tokens: int
    expires: float


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str = "sygmax:ratelimit") -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(_TAKE)
        self.leases: dict[str, _Lease] = {}

    async def hit(self, key: str, per_minute: int) -> tuple[bool, float, int]:
        """Spend one token of ``key``; return (allowed, retry_after_seconds, remaining_local)."""
        now = time.monotonic()
        lease = self.leases.get(key)
        if lease is not None and lease.tokens > 0 and lease.expires > now:
            lease.tokens -= 1
            return True, 0.0, lease.tokens
        batch = max(1, min(20, per_minute // 100))
        try:
            granted, wait = await self.script(
                keys=[f"{self.prefix}:{key}"], args=[per_minute, per_minute / 60.0, batch, time.time()]
            )
        except RedisError as exc:
            log.warning("rate_limit_unavailable", error=str(exc))
            return True, 0.0, 0
        granted = int(granted)
        if granted <= 0:
            self.leases.pop(key, None)
            return False, float(wait), 0
        if len(self.leases) > 100_000:  # bound memory under a flood of distinct clients
            self.leases.clear()
        self.leases[key] = _Lease(granted - 1, now + LEASE_SECONDS)
        return True, 0.0, granted - 1


def client_ip(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimitMiddleware:
    """Per-IP limit on every HTTP request; answers 429 problem details with Retry-After."""

    def __init__(self, app, limiter: RateLimiter, per_minute: int) -> None:
        self.app = app
        self.limiter = limiter
        self.per_minute = per_minute

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed, retry_after, _ = await self.limiter.hit(f"ip:{client_ip(scope)}", self.per_minute)
        if allowed:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(retry_after))
        body = msgspec.json.encode(problem_body(
            429, "rate-limited", f"Too many requests; retry in {seconds} s", None,
            instance=scope["path"], request_id=scope.get("state", {}).get("request_id"),
        ))
        await send({
            "type": "http.response.start", "status": 429,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
                (b"ratelimit-limit", str(self.per_minute).encode()),
                (b"ratelimit-remaining", b"0"),
                (b"ratelimit-reset", str(seconds).encode()),
            ],
        })
        await send({"type": "http.response.body", "body": body})
