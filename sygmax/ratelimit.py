"""Redis token-bucket rate limiting shared by every process of every node.

One Lua script refills and takes tokens atomically in Redis. To keep a Redis round trip
off most requests, each process *leases* a few tokens at a time (at most a hundredth of
the per-minute limit, at most 200) and spends them locally; the only cost is that a
bucket may be overspent by one lease per process at the instant it runs dry. Leases
expire after a second so an idle process does not sit on tokens.

If Redis is unreachable the limiter fails open (requests pass, a warning is logged):
rate limits protect the service, they must not take it down with Redis.

Four buckets, each checked where its key is known and nowhere else:

* per client IP, every HTTP request: :class:`RateLimitMiddleware`, before routing;
* login, stricter, per client IP on the credential endpoints (``auth.login_per_ip_per_minute``):
  the same middleware, by a string test on the path, before routing;
* per authenticated user (``rate_limit.per_user_per_minute``): :class:`CallerLimits`, inside
  the ``actor`` dependency right after authentication, so only routes that authenticate pay
  for it (``/healthz`` does not);
* per route (``rate_limit.routes``), per caller: for routes that authenticate in the same
  place (keyed by user), for the others in an app-level ``before_request`` hook (keyed by IP),
  installed only when the table is not empty. The table is resolved against the app's route
  templates once at start-up, so a request costs one dict lookup. (Litestar runs only the
  innermost ``before_request``: a router or handler that declared its own would skip this
  hook for its routes; none does.)
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import structlog
from litestar import Request
from litestar.di import NamedDependency
from litestar.types import Scope
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sygmax.auth.tokens import Actor
from sygmax.errors import Problem, problem_body

if TYPE_CHECKING:
    from litestar import Litestar

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
MAX_LEASE = 200


def lease_size(per_minute: int) -> int:
    """Tokens taken per Redis call: 1% of the budget, so the overshoot is bounded at 1% per process."""
    return max(1, min(MAX_LEASE, per_minute // 100))


@dataclass
class _Lease:
    tokens: int
    expires: float
    retry_at: float = 0.0  # after a refusal: when Redis may have a token again


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str = "sygmax:ratelimit") -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(_TAKE)
        self.leases: dict[str, _Lease] = {}
        # One refill in flight per key: concurrent requests that find the lease empty wait for
        # it instead of each calling Redis and overwriting each other's tokens.
        self._refills: dict[str, asyncio.Future] = {}

    async def hit(self, key: str, per_minute: int) -> tuple[bool, float, int]:
        """Spend one token of ``key``; return (allowed, retry_after_seconds, remaining_local)."""
        while True:
            now = time.monotonic()
            lease = self.leases.get(key)
            if lease is not None and lease.expires > now:
                if lease.tokens > 0:
                    lease.tokens -= 1
                    return True, 0.0, lease.tokens
                if lease.retry_at > now:  # refused moments ago: refuse locally, no Redis call
                    return False, lease.retry_at - now, 0
            pending = self._refills.get(key)
            if pending is None:
                pending = self._refills[key] = asyncio.ensure_future(self._refill(key, per_minute))
            if not await asyncio.shield(pending):
                return True, 0.0, 0  # Redis unavailable: fail open

    async def _refill(self, key: str, per_minute: int) -> bool:
        batch = lease_size(per_minute)
        try:
            granted, wait = await self.script(
                keys=[f"{self.prefix}:{key}"], args=[per_minute, per_minute / 60.0, batch, time.time()]
            )
        except RedisError as exc:
            log.warning("rate_limit_unavailable", error=str(exc))
            return False
        finally:
            # Unregistered here, before any waiter resumes: awaiting an already finished
            # future does not yield, so a waiter that found it still registered would spin.
            self._refills.pop(key, None)
        now = time.monotonic()
        lease = self.leases.get(key)
        if lease is None or lease.expires <= now:
            if len(self.leases) > 100_000:  # bound memory under a flood of distinct clients
                self.leases.clear()
            lease = self.leases[key] = _Lease(0, now)
        lease.tokens += int(granted)
        lease.expires = now + LEASE_SECONDS
        lease.retry_at = now + float(wait) if int(granted) == 0 else 0.0
        return True


def client_ip(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def limit_headers(limit: int, retry_after: float) -> dict[str, str]:
    """Retry-After and the RateLimit-* fields of a 429 answer (seconds, rounded up, at least 1)."""
    seconds = str(max(1, math.ceil(retry_after)))
    return {"retry-after": seconds, "ratelimit-limit": str(limit), "ratelimit-remaining": "0",
            "ratelimit-reset": seconds}


def rate_limited(limit: int, retry_after: float, what: str) -> Problem:
    headers = limit_headers(limit, retry_after)
    return Problem(429, "rate-limited", f"Too many requests ({what}); retry in {headers['retry-after']} s",
                   headers=headers)


# Credential endpoints: a much smaller per-IP budget than the rest of the API (password guessing,
# account creation, reset-mail floods, OIDC callbacks that each cost the server outbound calls).
LOGIN_PATHS = frozenset({"/api/v1/auth/login", "/api/v1/auth/register"})
LOGIN_PREFIXES = ("/api/v1/auth/password/",)
OIDC_PREFIX = "/api/v1/auth/oidc/"


def is_login_request(method: str, path: str) -> bool:
    if method == "POST":
        return path in LOGIN_PATHS or path.startswith(LOGIN_PREFIXES)
    return method == "GET" and path.startswith(OIDC_PREFIX) and path.endswith(("/login", "/callback"))


class RateLimitMiddleware:
    """Per-IP limit on every HTTP request, a stricter one on login; answers 429 problem details."""

    def __init__(self, app, limiter: RateLimiter, per_minute: int, login_per_minute: int | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.per_minute = per_minute
        self.login_per_minute = login_per_minute

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope)
        allowed, retry_after, _ = await self.limiter.hit(f"ip:{ip}", self.per_minute)
        limit, bucket = self.per_minute, "ip"
        if allowed and self.login_per_minute is not None and is_login_request(scope["method"], scope["path"]):
            allowed, retry_after, _ = await self.limiter.hit(f"login:{ip}", self.login_per_minute)
            limit, bucket = self.login_per_minute, "login"
        if allowed:
            await self.app(scope, receive, send)
            return
        headers = limit_headers(limit, retry_after)
        log.warning("rate_limited", bucket=bucket, request_id=scope.get("state", {}).get("request_id"))
        body = msgspec.json.encode(problem_body(
            429, "rate-limited", f"Too many requests; retry in {headers['retry-after']} s", None,
            instance=scope["path"], request_id=scope.get("state", {}).get("request_id"),
        ))
        await send({
            "type": "http.response.start", "status": 429,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *((name.encode(), value.encode()) for name, value in headers.items()),
            ],
        })
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class RouteRule:
    limit: int
    label: str  # the configured key, so every route under one prefix shares its name in logs
    authenticated: bool


def _match(table: dict[str, int], method: str, template: str) -> tuple[str, int] | None:
    """The most specific entry for a route: exact beats prefix, a method beats none, longer beats shorter."""
    best: tuple[tuple[int, int, int], str, int] | None = None
    for key, limit in table.items():
        key_method, _, path = key.rpartition(" ")
        if key_method and key_method.upper() != method:
            continue
        if path.endswith("/*"):
            prefix = path[:-1]
            if not (template.startswith(prefix) or template == prefix[:-1]):
                continue
            rank = (0, len(prefix), bool(key_method))
        elif path.rstrip("/") == template.rstrip("/"):
            rank = (1, len(path), bool(key_method))
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, key, limit)
    return None if best is None else (best[1], best[2])


class CallerLimits:
    """Per-user and per-route limits, applied after routing (and after authentication)."""

    def __init__(self, limiter: RateLimiter, per_user_per_minute: int, routes: dict[str, int]) -> None:
        self.limiter = limiter
        self.per_user = per_user_per_minute
        self.table = dict(routes)
        self.rules: dict[tuple[str, str], RouteRule] = {}

    def bind(self, app: "Litestar") -> None:
        """Resolve the route table against every route of ``app`` (once, at start-up)."""
        if not self.table:
            return
        for route in app.routes:
            for method, entry in getattr(route, "route_handler_map", {}).items():
                if not isinstance(entry, tuple):
                    continue
                _, kwargs_model = entry
                found = _match(self.table, method, route.path_format)
                if found is None:
                    continue
                authenticated = "actor" in _dependency_keys(kwargs_model.dependency_batches)
                self.rules[(method, route.path_format)] = RouteRule(found[1], found[0], authenticated)

    async def _take(self, key: str, limit: int, what: str, scope: Scope) -> None:
        allowed, retry_after, _ = await self.limiter.hit(key, limit)
        if not allowed:
            log.warning("rate_limited", bucket=what, request_id=scope.get("state", {}).get("request_id"))
            raise rate_limited(limit, retry_after, what)

    async def provide_actor(self, scope: Scope, authenticated_actor: NamedDependency[Actor]) -> Actor:
        """The ``actor`` dependency when limits are on: authenticate (nested), then spend the user's tokens."""
        user = authenticated_actor.user_id
        await self._take(f"user:{user}", self.per_user, "per user", scope)
        if self.rules:
            rule = self.rules.get((scope.get("method", "WS"), scope.get("path_template", "")))
            if rule is not None and rule.authenticated:
                await self._take(f"route:{rule.label}:u:{user}", rule.limit, f"route {rule.label}", scope)
        return authenticated_actor

    async def before_request(self, request: Request) -> None:
        """App-level hook (only installed with a route table): routes that do not authenticate, by IP."""
        rule = self.rules.get((request.scope["method"], request.scope.get("path_template", "")))
        if rule is not None and not rule.authenticated:
            await self._take(f"route:{rule.label}:ip:{client_ip(request.scope)}", rule.limit,
                             f"route {rule.label}", request.scope)
        return None


def _dependency_keys(batches) -> set[str]:
    """Every dependency key a handler needs, nested ones included."""
    seen: set[str] = set()
    stack = [dependency for batch in batches for dependency in batch]
    while stack:
        dependency = stack.pop()
        seen.add(dependency.key)
        stack.extend(dependency.dependencies)
    return seen
