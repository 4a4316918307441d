"""Personal API tokens: create (plaintext shown once), list, revoke; scopes validated.

A scope is a permission code the token may use: a kernel permission
(``sygmax.auth.policy.KERNEL_PERMISSIONS``), a permission an enabled plugin declares,
``<plugin or kernel prefix>.*`` for all of one module's, or ``*`` for everything its owner
may do. A token can never be given more than the credential creating it holds: a token
limited to ``chats.*`` cannot mint a ``*`` token. A malformed scope is 400; a well-formed one
that names no permission of this installation is 403 ``unknown-scope`` (nobody holds it).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import asyncpg
import structlog

from sygmax.auth import audit
from sygmax.auth.accounts import check_name
from sygmax.auth.audit import Source
from sygmax.auth.tokens import ALL_SCOPES, Actor, hash_token, new_token
from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

MAX_TOKENS_PER_USER = 100
MAX_SCOPES = 100
MAX_EXPIRY_DAYS = 3650
SCOPE_PATTERN = r"^(\*|[a-z][a-z0-9_]{0,31}\.(\*|[a-z0-9_.-]{1,64}))$"
_SCOPE = re.compile(SCOPE_PATTERN)


def known_scopes(kernel: "Kernel") -> set[str]:
    """Every scope a token may carry on this installation."""
    from sygmax.auth.policy import KERNEL_PERMISSIONS

    codes = set(KERNEL_PERMISSIONS)
    for plugin in kernel.plugins.values():
        codes.update(permission.code for permission in plugin.permissions)
    prefixes = {code.partition(".")[0] + ".*" for code in codes}
    prefixes.update(f"{name}.*" for name in kernel.plugins)
    return codes | prefixes | {ALL_SCOPES}


def check_scopes(actor: Actor, kernel: "Kernel", scopes: list[str]) -> list[str]:
    if not scopes:
        raise Problem(400, "invalid-scope", "scopes: give at least one scope (\"*\" for everything)", field="scopes")
    malformed = [scope for scope in scopes if not _SCOPE.match(scope)]
    if malformed:
        raise Problem(400, "invalid-scope", f"scopes: {malformed[0][:80]!r} is not a permission code", field="scopes")
    known = known_scopes(kernel)
    unknown = [scope for scope in scopes if scope not in known]
    if unknown:
        # Well-formed but not a permission of this installation: nobody holds it, so nobody may grant it.
        log.warning("auth_denied", reason="unknown-scope", user_id=str(actor.user_id))
        raise Problem(403, "unknown-scope", f"scopes: no permission {unknown[0]!r} on this installation "
                                            "(GET /api/v1/permissions lists them)", field="scopes",
                      unknown=unknown[:10])
    cleaned = sorted(set(scopes))
    if ALL_SCOPES in cleaned:
        cleaned = [ALL_SCOPES]
    for scope in cleaned:
        if scope == ALL_SCOPES:
            allowed = actor.full_access
        elif scope.endswith(".*"):
            allowed = actor.full_access or scope in actor.scopes
        else:
            allowed = actor.has_scope(scope)
        if not allowed:
            log.warning("auth_denied", reason="scope-escalation", user_id=str(actor.user_id))
            raise Problem(403, "insufficient-scope", f"scopes: this token may not grant {scope!r}", field="scopes")
    return cleaned


async def do_create_token(actor: Actor, kernel: "Kernel", name: str, scopes: list[str],
                          expires_in_days: int | None, source: Source) -> tuple[asyncpg.Record, str]:
    """A new token of the actor's; returns (its row, the plaintext shown once)."""
    name = check_name(name, field="name")
    scopes = check_scopes(actor, kernel, scopes)
    expires_at = None
    if expires_in_days is not None:
        expires_at = datetime.now(timezone.utc) + timedelta(days=expires_in_days)
    token = new_token()
    token_id = uuid.uuid4()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT 1 FROM sygmax_user WHERE id = $1 FOR UPDATE", actor.user_id)
        count = await connection.fetchval(
            "SELECT count(*) FROM sygmax_api_token WHERE user_id = $1 AND revoked_at IS NULL", actor.user_id)
        if count >= MAX_TOKENS_PER_USER:
            raise Problem(409, "too-many-tokens", f"at most {MAX_TOKENS_PER_USER} live tokens; revoke some first")
        row = await connection.fetchrow(
            """INSERT INTO sygmax_api_token (id, user_id, name, token_hash, scopes, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING id, name, scopes, created_at, expires_at, last_used_at""",
            token_id, actor.user_id, name, hash_token(token), scopes, expires_at)
        await audit.record(connection, actor_id=actor.user_id, action="api_token.create", object_type="api_token",
                           object_id=token_id, source=source,
                           details={"scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None})
    return row, token


async def list_tokens(actor: Actor, kernel: "Kernel") -> list[asyncpg.Record]:
    return await kernel.db.pool.fetch(
        """SELECT id, name, scopes, created_at, expires_at, last_used_at FROM sygmax_api_token
           WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id""", actor.user_id)


async def do_revoke_token(actor: Actor, kernel: "Kernel", token_id: uuid.UUID, source: Source) -> None:
    """Revoke one of the actor's tokens; anyone else's (or an unknown id) is 404."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        revoked = await connection.fetchval(
            """UPDATE sygmax_api_token SET revoked_at = now()
               WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id""", token_id, actor.user_id)
        if revoked is None:
            log.warning("auth_denied", reason="token-not-found", user_id=str(actor.user_id),
                        request_id=source.request_id)
            raise Problem(404, "not-found", "No such token")
        await audit.record(connection, actor_id=actor.user_id, action="api_token.revoke", object_type="api_token",
                           object_id=token_id, source=source)
