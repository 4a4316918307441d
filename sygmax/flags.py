"""Feature flags: global switch, per user, per workspace, percentage rollout.

A flag (``sygmax_feature_flag``) is on for a caller when its ``enabled`` switch is set and one
rule matches: the user is listed in ``users``, the workspace the check is about is listed in
``workspaces``, or the user's bucket for this flag (a stable hash of flag name + user id,
0..99) is below ``percentage`` (100: everyone, ``sygmax flags set NAME --on``). ``enabled``
false switches the flag off for everyone and keeps its rules (a kill switch). An unknown
flag is off.

Checks are cheap: every process keeps all flags in memory and reloads them (one query)
at most every ``gateway.flag_cache_s`` seconds (5 s by default); concurrent checks share one
reload. A change made through this process is visible here at once, elsewhere within that
time. Evaluating a flag is then a dict lookup and, for a percentage rollout, one SHA-256.

Writes (``do_set_flag``, ``do_delete_flag``) take the actor first (None: the operator at
the CLI), run in one transaction with their audit row, and drop this process's cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import structlog

from sygmax.auth import audit
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.auth.workspaces import transaction
from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.flags")

FLAG_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_TARGETS = 1000
_COLUMNS = "name, description, enabled, percentage, users, workspaces, created_at, updated_at, updated_by"


class Flag(msgspec.Struct, frozen=True):
    name: str
    description: str
    enabled: bool
    percentage: int
    users: list[uuid.UUID]
    workspaces: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime
    updated_by: uuid.UUID | None


class FlagIn(msgspec.Struct, forbid_unknown_fields=True):
    """A flag's whole definition (PUT replaces it)."""

    enabled: bool
    percentage: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    users: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_TARGETS)] = []
    workspaces: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_TARGETS)] = []
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


@dataclass(frozen=True)
class _Compiled:
    enabled: bool
    percentage: int
    users: frozenset[uuid.UUID]
    workspaces: frozenset[uuid.UUID]


def bucket(flag: str, user_id: uuid.UUID | str) -> int:
    """0..99, stable for (flag, user): raising the percentage only ever adds users."""
    raw = user_id.bytes if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id)).bytes
    digest = hashlib.sha256(flag.encode() + b":" + raw).digest()
    return int.from_bytes(digest[:8], "big") % 100


def evaluate(name: str, rule: _Compiled | None, user_id: uuid.UUID | None,
             workspace_id: uuid.UUID | None = None) -> bool:
    if rule is None or not rule.enabled:
        return False
    if rule.percentage >= 100:
        return True
    if user_id is not None and user_id in rule.users:
        return True
    if workspace_id is not None and workspace_id in rule.workspaces:
        return True
    return user_id is not None and rule.percentage > 0 and bucket(name, user_id) < rule.percentage


def _flag(row) -> Flag:
    return Flag(row["name"], row["description"], row["enabled"], row["percentage"], list(row["users"]),
                list(row["workspaces"]), row["created_at"], row["updated_at"], row["updated_by"])


class FlagCache:
    """All flags of the installation, reloaded at most every ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.rules: dict[str, _Compiled] = {}
        self.loaded_at = float("-inf")
        self.lock = asyncio.Lock()

    def fresh(self) -> bool:
        return time.monotonic() - self.loaded_at < self.ttl

    def invalidate(self) -> None:
        self.loaded_at = float("-inf")

    async def get(self, pool) -> dict[str, _Compiled]:
        if self.fresh():
            return self.rules
        async with self.lock:
            if not self.fresh():  # another task may have reloaded while this one waited
                rows = await pool.fetch("SELECT name, enabled, percentage, users, workspaces FROM sygmax_feature_flag")
                self.rules = {row["name"]: _Compiled(row["enabled"], row["percentage"], frozenset(row["users"]),
                                                     frozenset(row["workspaces"])) for row in rows}
                self.loaded_at = time.monotonic()
        return self.rules


_caches: "weakref.WeakKeyDictionary[Any, FlagCache]" = weakref.WeakKeyDictionary()


def cache_of(kernel: "Kernel") -> FlagCache:
    cache = _caches.get(kernel)
    if cache is None:
        cache = _caches[kernel] = FlagCache(kernel.settings.gateway.flag_cache_s)
    return cache


async def is_enabled(kernel: "Kernel", flag: str, actor: Actor | None,
                     workspace_id: uuid.UUID | None = None) -> bool:
    """Whether ``flag`` is on for ``actor`` (None: an anonymous caller) in ``workspace_id``."""
    rules = await cache_of(kernel).get(kernel.db.pool)
    return evaluate(flag, rules.get(flag), actor.user_id if actor is not None else None, workspace_id)


async def evaluate_all(kernel: "Kernel", actor: Actor, workspace_id: uuid.UUID | None = None) -> dict[str, bool]:
    rules = await cache_of(kernel).get(kernel.db.pool)
    return {name: evaluate(name, rule, actor.user_id, workspace_id) for name, rule in sorted(rules.items())}


# ---------------------------------------------------------------------------------------------
# Administration (instance admins over HTTP; the operator at the CLI)


def check_admin(actor: Actor | None, request_id: str | None = None) -> None:
    """Only instance administrators manage flags (403 for everybody else; the API's existence is no secret)."""
    if actor is not None and not actor.is_admin:
        log.warning("auth_denied", reason="not_instance_admin", user_id=str(actor.user_id), request_id=request_id)
        raise Problem(403, "forbidden", "Only instance administrators manage feature flags")


def check_flag_name(name: str) -> str:
    if not FLAG_NAME.match(name) or name == "me":
        raise Problem(400, "validation-error",
                      "name: 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter (not 'me')",
                      field="name")
    return name


async def list_flags(actor: Actor | None, pool, request_id: str | None = None) -> list[Flag]:
    check_admin(actor, request_id)
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM sygmax_feature_flag ORDER BY name")
    return [_flag(row) for row in rows]


async def get_flag(actor: Actor | None, pool, name: str, request_id: str | None = None) -> Flag:
    check_admin(actor, request_id)
    check_flag_name(name)
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM sygmax_feature_flag WHERE name = $1", name)
    if row is None:
        raise Problem(404, "not-found", f"No feature flag named {name}")
    return _flag(row)


async def _check_targets(connection, table: str, ids: list[uuid.UUID], field: str) -> list[uuid.UUID]:
    ids = list(dict.fromkeys(ids))  # de-duplicate, keep order
    if not ids:
        return ids
    found = {row["id"] for row in await connection.fetch(f"SELECT id FROM {table} WHERE id = ANY($1::uuid[])", ids)}
    missing = [str(value) for value in ids if value not in found]
    if missing:
        # 404 like any reference to something that does not exist; ``field`` says which list.
        raise Problem(404, "not-found", f"{field}: unknown id(s) {', '.join(missing[:5])}", field=field)
    return ids


def _audit_view(flag: Flag | None) -> dict | None:
    if flag is None:
        return None
    return {"enabled": flag.enabled, "percentage": flag.percentage, "users": [str(u) for u in flag.users],
            "workspaces": [str(w) for w in flag.workspaces], "description": flag.description}


async def do_set_flag(actor: Actor | None, db, name: str, data: FlagIn, *, source: Source | None = None,
                      kernel: "Kernel | None" = None) -> tuple[Flag, bool]:
    """Create or replace a flag; returns it and whether it was created."""
    check_admin(actor, source and source.request_id)
    check_flag_name(name)
    actor_id = actor.user_id if actor is not None else None
    async with transaction(db) as connection:
        users = await _check_targets(connection, "sygmax_user", data.users, "users")
        workspaces = await _check_targets(connection, "sygmax_workspace", data.workspaces, "workspaces")
        before = await connection.fetchrow(f"SELECT {_COLUMNS} FROM sygmax_feature_flag WHERE name = $1 "
                                           "FOR UPDATE", name)
        row = await connection.fetchrow(
            f"""INSERT INTO sygmax_feature_flag (name, description, enabled, percentage, users, workspaces,
                                                updated_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (name) DO UPDATE SET description = $2, enabled = $3, percentage = $4, users = $5,
                    workspaces = $6, updated_by = $7, updated_at = now()
                RETURNING {_COLUMNS}""",
            name, data.description, data.enabled, data.percentage, users, workspaces, actor_id)
        flag = _flag(row)
        await audit.record(connection, actor_id=actor_id, action="flag.set", object_type="feature_flag",
                           object_id=name, source=source,
                           details={"before": _audit_view(_flag(before) if before else None),
                                    "after": _audit_view(flag), "via": "cli" if actor is None else "api"})
    if kernel is not None:
        cache_of(kernel).invalidate()
    return flag, before is None


async def do_delete_flag(actor: Actor | None, db, name: str, *, source: Source | None = None,
                         kernel: "Kernel | None" = None) -> None:
    check_admin(actor, source and source.request_id)
    check_flag_name(name)
    actor_id = actor.user_id if actor is not None else None
    async with transaction(db) as connection:
        row = await connection.fetchrow(f"DELETE FROM sygmax_feature_flag WHERE name = $1 RETURNING {_COLUMNS}",
                                        name)
        if row is None:
            raise Problem(404, "not-found", f"No feature flag named {name}")
        await audit.record(connection, actor_id=actor_id, action="flag.delete", object_type="feature_flag",
                           object_id=name, source=source,
                           details={"before": _audit_view(_flag(row)), "via": "cli" if actor is None else "api"})
    if kernel is not None:
        cache_of(kernel).invalidate()
