"""Brute-force protection for password logins: failure counters in Redis, shared by every process.

Two counters per failed login, both Redis hashes updated atomically by one Lua script:

* per account (``account:<lower-cased e-mail>``; unknown addresses are counted exactly like
  real ones, so the answers never reveal which exist). The first failures are free; past
  ``max(2, threshold - 4)`` each failure makes the account wait 1, 2, 4 ... seconds
  (exponential backoff) before the next attempt, and at ``auth.login_failures_before_lockout``
  failures it is locked for ``auth.lockout_s``. Failures are forgotten ``auth.lockout_s``
  after the last one, and on a successful login or password reset.
* per client IP (``ip:<address>``): more than ``auth.login_per_ip_per_minute`` failures in a
  minute locks the address for a minute, doubling with each repeat (capped at
  ``auth.lockout_s``). A success does not reset it, so an attacker cannot interleave logins
  to a known account to keep spraying passwords.

A locked login answers 429 ``login-locked`` with ``Retry-After`` before any password is
checked. Admins list and clear entries (``GET/DELETE /api/v1/auth/lockouts``). If Redis is
unreachable the checks fail open (logins still need the password) and say so in the log.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

PREFIX = "sygmax:auth:lock:"
IP_WINDOW_S = 60

# KEYS[1] account key, KEYS[2] ip key.
# ARGV: now, threshold, free failures, lockout_s, ip limit per minute, ip window, subject (account)
# Returns the seconds the account must now wait (0: none).
_FAIL = """
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local free = tonumber(ARGV[3])
local lockout = tonumber(ARGV[4])
local ip_limit = tonumber(ARGV[5])
local ip_window = tonumber(ARGV[6])

local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local wait = 0
if n >= threshold then
  wait = lockout
elseif n > free then
  wait = math.min(lockout, 2 ^ (n - free - 1))
end
redis.call('HSET', KEYS[1], 'subject', ARGV[7], 'last_failure', now)
if wait > 0 then
  redis.call('HSET', KEYS[1], 'locked_until', now + wait)
end
redis.call('EXPIRE', KEYS[1], math.ceil(lockout + wait) + 1)

local state = redis.call('HMGET', KEYS[2], 'failures', 'window_start', 'strikes')
local failures = tonumber(state[1]) or 0
local start = tonumber(state[2]) or now
local strikes = tonumber(state[3]) or 0
if now - start > ip_window then
  failures = 0
  start = now
end
failures = failures + 1
local ip_wait = 0
if failures > ip_limit then
  strikes = strikes + 1
  ip_wait = math.min(lockout, ip_window * 2 ^ (strikes - 1))
  failures = 0
  start = now
  redis.call('HSET', KEYS[2], 'locked_until', now + ip_wait)
end
redis.call('HSET', KEYS[2], 'failures', failures, 'window_start', start, 'strikes', strikes, 'last_failure', now,
           'subject', ARGV[8])
redis.call('EXPIRE', KEYS[2], math.ceil(math.max(lockout * 4, ip_wait)) + 1)
return tostring(wait)
"""


def account_key(email: str) -> str:
    return f"account:{email.strip().lower()}"


def ip_key(ip: str | None) -> str:
    return f"ip:{ip or 'unknown'}"


@dataclass(frozen=True)
class Lockout:
    key: str
    kind: str
    subject: str
    failures: int
    locked_until: float
    last_failure: float


def _locked(retry_after: float, request_id: str | None, key_kind: str) -> Problem:
    seconds = max(1, math.ceil(retry_after))
    log.warning("auth_denied", reason="login-locked", scope=key_kind, retry_after=seconds, request_id=request_id)
    return Problem(429, "login-locked", f"Too many failed logins; try again in {seconds} s",
                   headers={"Retry-After": str(seconds)}, retry_after=seconds)


async def check(kernel: "Kernel", email: str, ip: str | None, request_id: str | None) -> None:
    """429 ``login-locked`` (with Retry-After) if the account or the client address must wait."""
    now = time.time()
    try:
        async with kernel.redis.pipeline(transaction=False) as pipe:
            pipe.hget(PREFIX + account_key(email), "locked_until")
            pipe.hget(PREFIX + ip_key(ip), "locked_until")
            account_until, ip_until = await pipe.execute()
    except RedisError as exc:
        log.warning("lockout_unavailable", error=str(exc))
        return
    waits = [(float(value) - now, kind) for value, kind in ((account_until, "account"), (ip_until, "ip"))
             if value is not None and float(value) > now]
    if waits:
        wait, kind = max(waits)
        raise _locked(wait, request_id, kind)


async def record_failure(kernel: "Kernel", email: str, ip: str | None) -> float:
    """Count a failed login for the account and the address; returns the account's new wait in seconds."""
    settings = kernel.settings.auth
    threshold = settings.login_failures_before_lockout
    free = max(2, threshold - 4)
    try:
        wait = await kernel.redis.eval(
            _FAIL, 2, PREFIX + account_key(email), PREFIX + ip_key(ip),
            time.time(), threshold, free, settings.lockout_s, settings.login_per_ip_per_minute, IP_WINDOW_S,
            email.strip().lower(), ip or "unknown",
        )
    except RedisError as exc:
        log.warning("lockout_unavailable", error=str(exc))
        return 0.0
    return float(wait)


async def clear_account(kernel: "Kernel", email: str) -> None:
    try:
        await kernel.redis.delete(PREFIX + account_key(email))
    except RedisError as exc:
        log.warning("lockout_unavailable", error=str(exc))


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def list_lockouts(kernel: "Kernel", include_unlocked: bool = False) -> list[Lockout]:
    """Entries that are locked now (or, with ``include_unlocked``, every entry with failures)."""
    now = time.time()
    found: list[Lockout] = []
    async for raw_key in kernel.redis.scan_iter(match=PREFIX + "*", count=500):
        key = _decode(raw_key)[len(PREFIX):]
        data = {_decode(k): _decode(v) for k, v in (await kernel.redis.hgetall(raw_key)).items()}
        if not data:
            continue
        until = float(data.get("locked_until", 0) or 0)
        if until <= now and not include_unlocked:
            continue
        kind = key.partition(":")[0]
        found.append(Lockout(key, kind, data.get("subject", key.partition(":")[2]),
                             int(data.get("failures", 0) or 0), until, float(data.get("last_failure", 0) or 0)))
        if len(found) >= 1000:
            break
    return sorted(found, key=lambda entry: (-entry.locked_until, entry.key))


async def clear(kernel: "Kernel", key: str) -> bool:
    """Forget one entry (``account:<email>`` or ``ip:<address>``); False if there was none."""
    if not key.startswith(("account:", "ip:")) or len(key) > 300:
        return False
    return bool(await kernel.redis.delete(PREFIX + key))
