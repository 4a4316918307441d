"""The request's actor: personal API tokens, JWT access tokens and the web UI's cookies.

Three ways to authenticate, all resolved by :func:`authenticate` (the ``actor``
dependency every authenticated route uses):

* ``Authorization: Bearer syg_...``: a personal API token. ``syg_`` + 43 url-safe characters
  (256 random bits); only its SHA-256 is stored. A fast hash is right here because the
  secret has full entropy (no dictionary to attack), and it keeps authentication to one
  indexed lookup per request. Its scopes (permission codes, or ``*``) are ``Actor.scopes``.
* ``Authorization: Bearer eyJ...``: a JWT access token from a login session
  (:mod:`sygmax.auth.sessions`). Verified without a database query; the session's Redis
  deny-list entry is checked so logout and disabling take effect at once.
* The web UI's cookies (``sygmax_access`` HttpOnly, see :mod:`sygmax.auth.cookies`): the
  same JWT, plus a CSRF check on unsafe methods: header ``X-CSRF-Token`` must equal the
  ``sygmax_csrf`` cookie *and* the value bound to the access token (double submit, compared
  in constant time), else 403 ``csrf-failed``. Bearer requests need no CSRF token: a
  browser never adds an Authorization header on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping, TypeAlias

import structlog
from litestar.datastructures import Headers
from litestar.di import NamedDependency
from litestar.params import RequestCookies
from litestar.types import Scope

from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

TOKEN_PREFIX = "syg_"
ALL_SCOPES = "*"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
ACCESS_COOKIE = "sygmax_access"
REFRESH_COOKIE = "sygmax_refresh"
CSRF_COOKIE = "sygmax_csrf"
CSRF_HEADER = "x-csrf-token"
LAST_USED_GRANULARITY = timedelta(hours=1)

# One query: the token, its owner, and whether both are usable right now.
_LOOKUP = """
SELECT u.id, u.email, u.display_name, u.is_admin, t.id AS token_id, t.scopes, t.last_used_at
FROM sygmax_api_token t JOIN sygmax_user u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.is_active
"""


@dataclass(frozen=True)
class Actor:
    """Who performs an action: the first argument of every action and query.

    ``via`` is how the request authenticated: ``token`` (personal API token), ``session``
    (JWT bearer) or ``cookie`` (web UI). ``scopes`` holds permission codes the credential
    may use (``<plugin>.*`` for all of a plugin's); ``*`` means everything the user may do
    (sessions always carry ``*``).
    """

    user_id: uuid.UUID
    email: str
    display_name: str
    is_admin: bool
    token_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    session_id: uuid.UUID | None = None
    via: str = "token"

    @property
    def full_access(self) -> bool:
        """No scope limit: a session, or a personal token with ``*`` (or, for old tokens, no scopes)."""
        return not self.scopes or ALL_SCOPES in self.scopes

    def has_scope(self, code: str) -> bool:
        """Same rule as ``sygmax.auth.policy.scope_allows``: ``*``, the code, or ``<plugin>.*``."""
        return self.full_access or code in self.scopes or f"{code.partition('.')[0]}.*" in self.scopes


# Handlers declare ``actor: CurrentActor`` to require authentication and receive the caller.
CurrentActor: TypeAlias = NamedDependency[Actor]


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def csrf_for(access_token: str) -> str:
    """The CSRF token bound to an access token: only who can read the cookies can compute it."""
    return hashlib.sha256(b"sygmax-csrf\x00" + access_token.encode()).hexdigest()[:43]


async def create_user(pool, email: str, display_name: str, is_admin: bool = False) -> uuid.UUID:
    """Insert a bare account (no password; tests and fixtures). Accounts proper: sygmax.auth.accounts."""
    user_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO sygmax_user (id, email, display_name, is_admin) VALUES ($1, $2, $3, $4)",
        user_id, email, display_name, is_admin,
    )
    return user_id


async def issue_token(pool, user_id: uuid.UUID, name: str, scopes: list[str] | None = None,
                      expires_at: datetime | None = None) -> str:
    """Create a token and return its plaintext, which is shown once and never stored.

    ``scopes`` None means every permission of the user (``["*"]``).
    """
    token = new_token()
    await pool.execute(
        """INSERT INTO sygmax_api_token (id, user_id, name, token_hash, scopes, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        uuid.uuid4(), user_id, name, hash_token(token), [ALL_SCOPES] if scopes is None else scopes, expires_at,
    )
    return token


def _deny(status: int, slug: str, detail: str, reason: str, request_id: str | None, bearer: bool = True,
          **context: Any) -> Problem:
    log.warning("auth_denied", reason=reason, request_id=request_id, **context)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 and bearer else None
    return Problem(status, slug, detail, headers=headers)


async def _personal_token(pool, token: str, request_id: str | None) -> Actor:
    row = await pool.fetchrow(_LOOKUP, hash_token(token))
    if row is None:
        raise _deny(401, "invalid-token", "The bearer token is unknown, expired or revoked",
                    "token-unknown", request_id)
    last_used = row["last_used_at"]
    if last_used is None or datetime.now(timezone.utc) - last_used > LAST_USED_GRANULARITY:
        await pool.execute("UPDATE sygmax_api_token SET last_used_at = now() WHERE id = $1", row["token_id"])
    return Actor(row["id"], row["email"], row["display_name"], row["is_admin"], row["token_id"],
                 frozenset(row["scopes"]), None, "token")


async def _access_token(kernel: "Kernel", token: str, via: str, request_id: str | None) -> Actor:
    from sygmax.auth.keys import InvalidAccessToken, verify_access_token
    from sygmax.auth.sessions import session_revoked

    try:
        claims = verify_access_token(kernel.settings.auth, token)
        user_id, session_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
        email, name, admin = claims.get("email"), claims.get("name"), claims.get("adm")
        if not isinstance(email, str) or not isinstance(name, str) or not isinstance(admin, bool):
            raise InvalidAccessToken("missing profile claims")
    except (InvalidAccessToken, ValueError) as exc:
        reason = exc.reason if isinstance(exc, InvalidAccessToken) else "malformed ids"
        raise _deny(401, "invalid-token", "The access token is invalid or expired", "jwt-invalid",
                    request_id, bearer=via == "session", detail_reason=reason) from None
    if await session_revoked(kernel, claims["sid"]):
        raise _deny(401, "invalid-token", "The access token's session has ended", "session-revoked",
                    request_id, bearer=via == "session", session_id=claims["sid"])
    return Actor(user_id, email, name, admin, None, frozenset({ALL_SCOPES}), session_id, via)


def check_csrf(cookies: Mapping[str, str], header: str | None, access_token: str | None,
               request_id: str | None) -> None:
    """Double-submit check for cookie-authenticated unsafe requests (403 ``csrf-failed``)."""
    cookie = cookies.get(CSRF_COOKIE) or ""
    header = header or ""
    ok = bool(cookie) and hmac.compare_digest(header.encode(), cookie.encode())
    if ok and access_token is not None:
        ok = hmac.compare_digest(header.encode(), csrf_for(access_token).encode())
    if not ok:
        raise _deny(403, "csrf-failed",
                    "Cookie-authenticated requests must send the sygmax_csrf cookie's value in X-CSRF-Token",
                    "csrf-missing" if not header else "csrf-mismatch", request_id)


async def authenticate(
    kernel: "Kernel | Any",
    authorization: str | None,
    *,
    cookies: Mapping[str, str] | None = None,
    method: str = "GET",
    csrf_header: str | None = None,
    request_id: str | None = None,
) -> Actor:
    """Resolve the caller from a bearer credential or the web UI's cookies (see the module docstring).

    ``kernel`` may also be a bare asyncpg pool/connection: then only personal tokens are accepted.
    """
    pool = kernel.db.pool if hasattr(kernel, "settings") else kernel
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 4096:
            raise _deny(401, "invalid-token", "The bearer token is malformed", "bearer-malformed", request_id)
        if token.startswith(TOKEN_PREFIX):
            if len(token) > 200:
                raise _deny(401, "invalid-token", "The bearer token is malformed", "bearer-malformed", request_id)
            return await _personal_token(pool, token, request_id)
        if token.count(".") == 2 and hasattr(kernel, "settings"):
            return await _access_token(kernel, token, "session", request_id)
        raise _deny(401, "invalid-token", "The bearer token is malformed", "bearer-malformed", request_id)
    access = (cookies or {}).get(ACCESS_COOKIE)
    if access and hasattr(kernel, "settings"):
        actor = await _access_token(kernel, access, "cookie", request_id)
        if method.upper() not in SAFE_METHODS:
            check_csrf(cookies or {}, csrf_header, access, request_id)
        return actor
    raise _deny(401, "unauthenticated", "Authentication required: send Authorization: Bearer <token>",
                "no-credentials", request_id)


def _same_origin(kernel: "Kernel", origin: str | None) -> bool:
    """WebSockets carry no CSRF header: a cookie-authenticated socket must come from our own origin."""
    from urllib.parse import urlsplit

    if not origin:
        return False
    allowed = {kernel.settings.server.public_url.rstrip("/")}
    allowed.update(value.rstrip("/") for value in kernel.settings.cors.allow_origins)
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" in allowed


async def provide_actor(kernel: NamedDependency[Any], headers: Headers, cookies: RequestCookies,
                        scope: Scope) -> Actor:
    """Litestar dependency (HTTP and WebSocket): handlers that take ``actor`` require authentication.

    It takes the ``kernel`` dependency rather than reading ``state`` so that Litestar resolves
    the two one after the other: a handler asking for both would otherwise get them from a
    concurrent task group, which costs more than the work itself (~65 us per request).
    """
    request_id = scope.get("state", {}).get("request_id")
    authorization = headers.get("authorization")
    if scope["type"] == "websocket" and not authorization and cookies.get(ACCESS_COOKIE):
        if not _same_origin(kernel, headers.get("origin")):
            raise _deny(403, "csrf-failed", "Cookie-authenticated WebSockets must come from this site's origin",
                        "websocket-origin", request_id)
    return await authenticate(kernel, authorization, cookies=cookies, method=scope.get("method", "GET"),
                              csrf_header=headers.get(CSRF_HEADER), request_id=request_id)
