"""Presence across processes: online, away or offline, kept in Redis.

Each WebSocket connection is a field of the user's hash ``<prefix>conns:<user>`` holding its
status and an expiry time; the process that holds the connection refreshes it every
``heartbeat_s`` (one pipeline per process, not a write per connection), so the fields of a
crashed process simply expire. A user is online if any live connection is online, away if
all live ones are away, offline if there are none.

One Lua script applies a change and recomputes the user's status atomically, and reports
whether the status changed: exactly one caller sees each transition and publishes it, so
two processes never announce the same change twice or miss one. A sorted set of every
user's latest expiry lets each process's heartbeat find users whose last process died
(their fields expired with nobody left to say so) and announce them offline.
"""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

STATUSES = ("online", "away", "offline")
REFRESH_BATCH = 500  # users per refresh call: bounds how long one call occupies Redis

# Recomputes one user's status from their connections' fields, pruning expired ones; returns
# {status, changed}. Shared by both scripts below.
_STATUS = """
local function status_of(conns, status_key, expiry_key, user, now)
  local all = redis.call('HGETALL', conns)
  local best = 'offline'
  local latest = 0
  for i = 1, #all, 2 do
    local value = all[i + 1]
    local sep = string.find(value, '|', 1, true)
    local status = string.sub(value, 1, sep - 1)
    local expiry = tonumber(string.sub(value, sep + 1))
    if expiry <= now then
      redis.call('HDEL', conns, all[i])
    else
      if expiry > latest then latest = expiry end
      if status == 'online' then best = 'online' elseif best ~= 'online' then best = 'away' end
    end
  end
  if latest > 0 then
    redis.call('EXPIRE', conns, math.ceil(latest - now) + 1)
    redis.call('ZADD', expiry_key, latest, user)
  else
    redis.call('ZREM', expiry_key, user)
  end
  local old = redis.call('GET', status_key) or 'offline'
  if old == best then return {best, 0} end
  if best == 'offline' then redis.call('DEL', status_key) else redis.call('SET', status_key, best) end
  return {best, 1}
end
"""

# KEYS: conns hash, status string, expiry zset. ARGV: now, op (set|del|check), user, conn, status, expiry.
# Returns {status, changed}.
_SCRIPT = _STATUS + """
local now = tonumber(ARGV[1])
local op = ARGV[2]
if op == 'set' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5] .. '|' .. ARGV[6])
elseif op == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[4])
end
return status_of(KEYS[1], KEYS[2], KEYS[3], ARGV[3], now)
"""

# A process's heartbeat in one command. KEYS: expiry zset, then per user its conns hash and
# status string. ARGV: now, expiry, then per user: user, n, and n pairs of connection, status.
# Returns {status, changed, status, changed, ...}, one pair per user in order.
_REFRESH = _STATUS + """
local now = tonumber(ARGV[1])
local expiry = ARGV[2]
local out = {}
local a = 3
for k = 2, #KEYS, 2 do
  local user = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HSET', KEYS[k], ARGV[a], ARGV[a + 1] .. '|' .. expiry)
    a = a + 2
  end
  local answer = status_of(KEYS[k], KEYS[k + 1], KEYS[1], user, now)
  out[#out + 1] = answer[1]
  out[#out + 1] = answer[2]
end
return out
"""


class Presence:
    def __init__(self, redis: Redis, ttl_s: float, prefix: str = "sygmax:chats:presence:") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.script = redis.register_script(_SCRIPT)
        self.refresh_script = redis.register_script(_REFRESH)

    def _keys(self, user_id: uuid.UUID | str) -> list[str]:
        return [f"{self.prefix}conns:{user_id}", f"{self.prefix}status:{user_id}", f"{self.prefix}expiry"]

    @staticmethod
    def _answer(result) -> tuple[str, bool]:
        status, changed = result
        return (status.decode() if isinstance(status, bytes) else status), bool(int(changed))

    async def set(self, user_id: uuid.UUID, connection_id: str, status: str) -> tuple[str, bool]:
        """Record a connection's status (online or away); returns (user's status, changed)."""
        now = time.time()
        return self._answer(await self.script(keys=self._keys(user_id),
                                              args=[now, "set", str(user_id), connection_id, status, now + self.ttl_s]))

    async def drop(self, user_id: uuid.UUID, connection_id: str) -> tuple[str, bool]:
        return self._answer(await self.script(keys=self._keys(user_id),
                                              args=[time.time(), "del", str(user_id), connection_id, "", 0]))

    async def refresh(self, connections: list[tuple[uuid.UUID, str, str]]) -> list[tuple[uuid.UUID, str, bool]]:
        """Extend every (user, connection, status) of this process; returns each user's (status, changed).

        One script call per ``REFRESH_BATCH`` users rather than a script call per connection: with
        thousands of connections, building and parsing a pipeline of that many calls held the
        event loop for hundreds of milliseconds every heartbeat, delaying every frame behind it.
        """
        if not connections:
            return []
        now = time.time()
        by_user: dict[uuid.UUID, list[str]] = {}
        for user_id, connection_id, status in connections:
            by_user.setdefault(user_id, []).extend((connection_id, status))
        users = list(by_user)
        changes = []
        for start in range(0, len(users), REFRESH_BATCH):
            batch = users[start:start + REFRESH_BATCH]
            keys, args = [f"{self.prefix}expiry"], [now, now + self.ttl_s]
            for user_id in batch:
                keys += self._keys(user_id)[:2]
                fields = by_user[user_id]
                args += [str(user_id), len(fields) // 2, *fields]
            answer = await self.refresh_script(keys=keys, args=args)
            changes += [(user_id, *self._answer(answer[2 * i:2 * i + 2])) for i, user_id in enumerate(batch)]
        return changes

    async def statuses(self, user_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, str, bool]]:
        """Each user's current status, recomputed (expired connections pruned) atomically."""
        if not user_ids:
            return []
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                await self.script(keys=self._keys(user_id), args=[now, "check", str(user_id), "", "", 0], client=pipe)
            results = await pipe.execute()
        return [(user_id, *self._answer(result)) for user_id, result in zip(user_ids, results)]

    async def expired_users(self) -> list[uuid.UUID]:
        """Users whose every connection has expired but who were not yet announced offline."""
        found = await self.redis.zrangebyscore(f"{self.prefix}expiry", "-inf", time.time(), start=0, num=1000)
        return [uuid.UUID(value.decode() if isinstance(value, bytes) else value) for value in found]


__all__ = ["STATUSES", "Presence"]
