"""Login sessions: a short-lived JWT access token plus a rotating refresh token.

A session is a *refresh-token family* (``sygmax_session``). Logging in (password, OIDC,
a password-set link) creates one and returns a :class:`TokenPair`. ``POST /auth/refresh``
exchanges the family's current refresh token for a new pair; the old token is marked used
but kept, so when anyone presents it again (a stolen copy, or the victim after the thief
refreshed first) the whole family is revoked and the caller gets 401: reuse detection.

Access tokens are verified without a database query (:mod:`sygmax.auth.keys`). A revoked
session's access tokens are refused at once through a Redis deny-list entry per session id
that lives as long as an access token can (``auth.access_token_ttl_s``); if Redis is
unreachable, they stop working at the latest when they expire, within
``auth.access_token_ttl_s``. Refreshing always checks the database (session revoked or
expired, account disabled or erased).

Only SHA-256 digests of refresh tokens are stored (256 random bits each, so a fast hash
suffices and a leaked table yields nothing usable).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable

import msgspec
import structlog
from redis.exceptions import RedisError

from sygmax.auth import audit
from sygmax.auth.audit import Source
from sygmax.auth.keys import LEEWAY_S, mint_access_token
from sygmax.errors import Problem

if TYPE_CHECKING:
    import asyncpg

    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

REFRESH_PREFIX = "sygr_"
DENY_PREFIX = "sygmax:auth:revoked-session:"


class TokenPair(msgspec.Struct):
    """What a login or a refresh returns (OAuth2 token response shape)."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = 900


def hash_refresh(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _origin(source: Source | str | None) -> tuple[Source, str]:
    """``source`` may be the request's audit Source or a login method name ("password", "oidc:google")."""
    if isinstance(source, Source):
        return source, "password"
    return Source(), source or "password"


def access_claims(user_id: uuid.UUID, session_id: uuid.UUID, email: str, display_name: str,
                  is_admin: bool) -> dict:
    """What an access token carries: everything ``Actor`` needs, so verifying it needs no query."""
    return {"sub": str(user_id), "sid": str(session_id), "email": email, "name": display_name,
            "adm": bool(is_admin)}


async def _new_refresh(connection: "asyncpg.Connection", session_id: uuid.UUID, generation: int) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    await connection.execute(
        "INSERT INTO sygmax_refresh_token (token_hash, session_id, generation) VALUES ($1, $2, $3)",
        hash_refresh(token), session_id, generation,
    )
    return token


async def issue_session(kernel: "Kernel", connection: "asyncpg.Connection", user_id: uuid.UUID,
                        source: Source | str | None, *, method: str | None = None,
                        user_agent: str | None = None) -> TokenPair:
    """Start a session for ``user_id`` (already authenticated by the caller) and return its tokens.

    ``source`` is the request's :class:`~sygmax.auth.audit.Source` (``source_of(request)``) or
    a string naming the login method (``"oidc:google"``); ``method`` names it when ``source``
    is a Source. Runs in the caller's transaction when there is one (the session and its
    audit row commit with the caller's change). Disabled or erased accounts get 403.
    """
    origin, default_method = _origin(source)
    method = (method or default_method)[:64]
    settings = kernel.settings.auth
    async with connection.transaction():
        user = await connection.fetchrow(
            "SELECT id, email, display_name, is_admin, is_active FROM sygmax_user WHERE id = $1", user_id)
        if user is None:
            raise Problem(404, "not-found", "No such user")
        if not user["is_active"]:
            log.warning("auth_denied", reason="account-disabled", user_id=str(user_id),
                        request_id=origin.request_id)
            raise Problem(403, "account-disabled", "This account is disabled")
        session_id = uuid.uuid4()
        expires = datetime.now(timezone.utc) + timedelta(seconds=settings.refresh_token_ttl_s)
        await connection.execute(
            """INSERT INTO sygmax_session (id, user_id, source, expires_at, created_ip, user_agent)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            session_id, user_id, method, expires, origin.ip, (user_agent or "")[:256] or None,
        )
        refresh = await _new_refresh(connection, session_id, 0)
        await connection.execute("UPDATE sygmax_user SET last_login_at = now() WHERE id = $1", user_id)
        # Forget long-dead sessions of this user so the tables stay small.
        await connection.execute(
            """DELETE FROM sygmax_session WHERE user_id = $1
               AND (expires_at < now() - interval '30 days' OR revoked_at < now() - interval '30 days')""",
            user_id)
        await audit.record(connection, actor_id=user_id, action="session.create", object_type="session",
                           object_id=session_id, source=origin, details={"method": method})
    access = mint_access_token(settings, access_claims(user_id, session_id, user["email"],
                                                       user["display_name"], user["is_admin"]))
    return TokenPair(access, refresh, "bearer", settings.access_token_ttl_s)


_REFRESH_LOOKUP = """
SELECT r.session_id, r.generation, r.used_at, s.user_id, s.revoked_at, s.expires_at,
       u.email, u.display_name, u.is_admin, u.is_active
FROM sygmax_refresh_token r
JOIN sygmax_session s ON s.id = r.session_id
JOIN sygmax_user u ON u.id = s.user_id
WHERE r.token_hash = $1
FOR UPDATE OF r, s
"""


def _invalid_refresh(reason: str, source: Source) -> Problem:
    log.warning("auth_denied", reason=reason, request_id=source.request_id)
    return Problem(401, "invalid-refresh-token", "The refresh token is unknown, expired or revoked")


async def refresh_session(kernel: "Kernel", refresh_token: str, source: Source) -> tuple[TokenPair, uuid.UUID]:
    """Rotate: exchange a family's current refresh token for a new pair (reuse revokes the family)."""
    if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > 200:
        raise _invalid_refresh("refresh-malformed", source)
    settings = kernel.settings.auth
    reused: uuid.UUID | None = None
    async with kernel.db.pool.acquire() as connection:
        async with connection.transaction():
            row = await connection.fetchrow(_REFRESH_LOOKUP, hash_refresh(refresh_token))
            if row is None:
                raise _invalid_refresh("refresh-unknown", source)
            session_id = row["session_id"]
            if row["revoked_at"] is not None or row["expires_at"] <= datetime.now(timezone.utc):
                raise _invalid_refresh("refresh-session-ended", source)
            if row["used_at"] is not None:
                await _revoke(connection, [session_id], "refresh-token-reused")
                await audit.record(connection, actor_id=row["user_id"], action="session.revoke",
                                   object_type="session", object_id=session_id, source=source,
                                   details={"reason": "refresh-token-reused"})
                reused = session_id
            elif not row["is_active"]:
                log.warning("auth_denied", reason="account-disabled", user_id=str(row["user_id"]),
                            request_id=source.request_id)
                raise Problem(403, "account-disabled", "This account is disabled")
            else:
                await connection.execute(
                    "UPDATE sygmax_refresh_token SET used_at = now() WHERE token_hash = $1",
                    hash_refresh(refresh_token))
                refresh = await _new_refresh(connection, session_id, row["generation"] + 1)
                await connection.execute(
                    "UPDATE sygmax_session SET last_used_at = now(), expires_at = $2 WHERE id = $1",
                    session_id, datetime.now(timezone.utc) + timedelta(seconds=settings.refresh_token_ttl_s))
    if reused is not None:
        await forget_sessions(kernel, [reused])
        log.warning("auth_denied", reason="refresh-token-reused", session_id=str(reused),
                    request_id=source.request_id)
        raise Problem(401, "refresh-token-reused",
                      "This refresh token was already used; the session has been revoked, log in again")
    access = mint_access_token(settings, access_claims(row["user_id"], session_id, row["email"],
                                                       row["display_name"], row["is_admin"]))
    return TokenPair(access, refresh, "bearer", settings.access_token_ttl_s), row["user_id"]


async def _revoke(connection: "asyncpg.Connection", session_ids: list[uuid.UUID], reason: str) -> None:
    await connection.execute(
        "UPDATE sygmax_session SET revoked_at = now(), revoked_reason = $2 "
        "WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL", session_ids, reason[:64])


async def revoke_session(connection: "asyncpg.Connection", session_id: uuid.UUID, reason: str) -> bool:
    """Revoke one session (in the caller's transaction); True if it was live. Call
    :func:`forget_sessions` after commit so its access tokens stop at once."""
    status = await connection.execute(
        "UPDATE sygmax_session SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
        session_id, reason[:64])
    return status.endswith(" 1")


async def revoke_user_sessions(connection: "asyncpg.Connection", user_id: uuid.UUID, reason: str,
                               except_session: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Revoke every live session of a user (in the caller's transaction); returns their ids."""
    rows = await connection.fetch(
        """UPDATE sygmax_session SET revoked_at = now(), revoked_reason = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3)
           RETURNING id""", user_id, reason[:64], except_session)
    return [row["id"] for row in rows]


async def forget_sessions(kernel: "Kernel", session_ids: Iterable[uuid.UUID]) -> None:
    """Deny-list revoked sessions' access tokens until they would have expired anyway (after commit)."""
    ids = [str(session_id) for session_id in session_ids]
    if not ids:
        return
    ttl = kernel.settings.auth.access_token_ttl_s + LEEWAY_S + 5
    try:
        async with kernel.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.set(DENY_PREFIX + session_id, "1", ex=ttl)
            await pipe.execute()
    except RedisError as exc:
        log.warning("session_denylist_unavailable", error=str(exc), sessions=len(ids))


async def session_revoked(kernel: "Kernel", session_id: str) -> bool:
    """Whether a session's access tokens are deny-listed (fails open, see the module docstring)."""
    try:
        return bool(await kernel.redis.exists(DENY_PREFIX + session_id))
    except RedisError as exc:
        log.warning("session_denylist_unavailable", error=str(exc))
        return False




async def session_of_refresh(connection: "asyncpg.Connection", refresh_token: str) -> "asyncpg.Record | None":
    """The (id, user_id) of the family a refresh token (current or used) belongs to."""
    if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > 200:
        return None
    return await connection.fetchrow(
        """SELECT s.id, s.user_id FROM sygmax_refresh_token r JOIN sygmax_session s ON s.id = r.session_id
           WHERE r.token_hash = $1""", hash_refresh(refresh_token))


async def do_end_session(kernel: "Kernel", session_id: uuid.UUID, user_id: uuid.UUID, reason: str,
                         source: Source, actor_id: uuid.UUID | None = None) -> bool:
    """Revoke one session (logout), audit it, and deny-list its access tokens; False if it had ended."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        live = await revoke_session(connection, session_id, reason)
        if live:
            await audit.record(connection, actor_id=actor_id or user_id, action="session.revoke",
                               object_type="session", object_id=session_id, source=source,
                               details={"reason": reason})
    await forget_sessions(kernel, [session_id])
    return live


__all__ = ["TokenPair", "issue_session", "refresh_session", "revoke_session", "revoke_user_sessions",
           "forget_sessions", "session_revoked", "access_claims", "session_of_refresh", "do_end_session",
           "REFRESH_PREFIX"]
