"""Personal API tokens and the request's actor.

A token is ``syg_`` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored:
a fast hash is right here because the secret has full entropy (no dictionary to attack),
and it keeps authentication to one indexed lookup per request.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TypeAlias

from litestar.datastructures import Headers, State
from litestar.di import NamedDependency

from sygmax.errors import Problem

TOKEN_PREFIX = "syg_"

# One query: the token, its owner, and whether both are usable right now.
_LOOKUP = """
SELECT u.id, u.email, u.display_name, u.is_admin, t.id AS token_id, t.scopes
FROM sygmax_api_token t JOIN sygmax_user u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.is_active
"""


@dataclass(frozen=True)
class Actor:
    """Who performs an action: the first argument of every action and query."""

    user_id: uuid.UUID
    email: str
    display_name: str
    is_admin: bool
    token_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)


# Handlers declare ``actor: CurrentActor`` to require authentication and receive the caller.
CurrentActor: TypeAlias = NamedDependency[Actor]


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_user(pool, email: str, display_name: str, is_admin: bool = False) -> uuid.UUID:
    user_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO sygmax_user (id, email, display_name, is_admin) VALUES ($1, $2, $3, $4)",
        user_id, email, display_name, is_admin,
    )
    return user_id


async def issue_token(pool, user_id: uuid.UUID, name: str, scopes: list[str] | None = None) -> str:
    """Create a token and return its plaintext, which is shown once and never stored."""
    token = new_token()
    await pool.execute(
        "INSERT INTO sygmax_api_token (id, user_id, name, token_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
        uuid.uuid4(), user_id, name, hash_token(token), scopes or [],
    )
    return token


async def authenticate(pool, authorization: str | None) -> Actor:
    if not authorization:
        raise Problem(401, "unauthenticated", "Authentication required: send Authorization: Bearer <token>",
                      headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Problem(401, "invalid-token", "The bearer token is malformed", headers={"WWW-Authenticate": "Bearer"})
    row = await pool.fetchrow(_LOOKUP, hash_token(token))
    if row is None:
        raise Problem(401, "invalid-token", "The bearer token is unknown, expired or revoked",
                      headers={"WWW-Authenticate": "Bearer"})
    return Actor(row["id"], row["email"], row["display_name"], row["is_admin"], row["token_id"],
                 frozenset(row["scopes"]))


async def provide_actor(state: State, headers: Headers) -> Actor:
    """Litestar dependency (HTTP and WebSocket): handlers that take ``actor`` require authentication."""
    return await authenticate(state.kernel.db.pool, headers.get("authorization"))
