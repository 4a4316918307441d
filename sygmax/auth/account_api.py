"""HTTP handlers for accounts, sessions and personal tokens (thin: parse, call an action, answer).

Routes (all under ``/api/v1``; documented in docs/api.md):

* ``POST /auth/register``, ``/auth/verify-email``, ``/auth/verify-email/resend``,
  ``/auth/password/forgot``, ``/auth/password/reset``
* ``POST /auth/login`` (bearer tokens), ``/auth/refresh``, ``/auth/logout``
* ``POST /auth/session`` (web UI: cookies), ``/auth/session/refresh``
* ``GET/POST /auth/tokens``, ``DELETE /auth/tokens/{id}``
* ``GET /auth/lockouts``, ``DELETE /auth/lockouts/{key}`` (instance admins)
* ``PATCH/DELETE /users/me``, ``POST /users/me/password``, ``GET /users/me/export``,
  ``GET /users/me/sessions``, ``DELETE /users/me/sessions/{id}``
* ``GET/PUT /users/me/notifications`` (notification preferences, sygmax/notification_prefs.py)
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, delete, get, patch, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, JSONBody, KwargDefinition
from litestar.response import Response
from msgspec import Meta

from sygmax import notification_prefs
from sygmax.auth import accounts, api_tokens, links, lockout, passwords
from sygmax.auth.audit import source_of
from sygmax.auth.cookies import cleared_cookies, session_cookies
from sygmax.auth.routes import UserOut
from sygmax.auth.sessions import TokenPair, do_end_session, refresh_session, session_of_refresh
from sygmax.auth.tokens import (
    ACCESS_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    CurrentActor,
    authenticate,
    check_csrf,
)
from sygmax.errors import Problem
from sygmax.kernel import KernelDep

log = structlog.get_logger("sygmax.auth")

Email = Annotated[str, Meta(min_length=3, max_length=254, pattern=accounts.EMAIL_PATTERN)]
Password = Annotated[str, Meta(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH,
                               pattern=passwords.PASSWORD_PATTERN)]
# What a login or a confirmation accepts: any string (a wrong guess is 401/403, not 400).
AnyPassword = Annotated[str, Meta(min_length=1, max_length=1024)]
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=accounts.NAME_PATTERN)]
LinkToken = Annotated[str, Meta(min_length=20, max_length=100, pattern=links.LINK_TOKEN_PATTERN)]
InviteToken = Annotated[str, Meta(min_length=10, max_length=200, pattern=accounts.INVITE_TOKEN_PATTERN)]
SecretToken = Annotated[str, Meta(min_length=1, max_length=200)]
# Litestar documents constraints on list items only from its own KwargDefinition; msgspec enforces Meta.
Scope = Annotated[str, Meta(min_length=1, max_length=100, pattern=api_tokens.SCOPE_PATTERN),
                  KwargDefinition(min_length=1, max_length=100, pattern=api_tokens.SCOPE_PATTERN)]

_BEARER = [{"bearer": []}]
_TEXT = {401: "Not authenticated", 403: "Not allowed (disabled account, token scope, CSRF check, admins only)",
         404: "No such object (or no live link with this token)", 409: "Conflicts with the current state", 503: "A dependency is unavailable"}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    """Error answers beyond the ones every route documents (sygmax.openapi adds the problem body)."""
    return {code: ResponseSpec(data_container=None, description=_TEXT[code]) for code in codes}

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: Name
    invite_token: InviteToken | None = None


class StatusOut(msgspec.Struct):
    status: str
    detail: str


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: AnyPassword


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: SecretToken


class LogoutIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: SecretToken | None = None


class CookieSessionOut(msgspec.Struct):
    """A cookie login: the tokens are in HttpOnly cookies; send ``csrf_token`` as X-CSRF-Token."""

    csrf_token: str
    expires_in: int
    token_type: str = "cookie"


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken


class ForgotIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email


class ResetIn(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken
    password: Password


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    display_name: Name


class PasswordChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    current_password: AnyPassword
    new_password: Password


class EraseIn(msgspec.Struct, forbid_unknown_fields=True):
    password: AnyPassword


class ChannelsIn(msgspec.Struct, forbid_unknown_fields=True):
    in_app: bool
    email: bool


_CATEGORY_PATTERN = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.-]{0,62}$"
CategoryCode = Annotated[str, Meta(min_length=3, max_length=96, pattern=_CATEGORY_PATTERN)]
# Litestar's schema leaves out dict key constraints and forbid_unknown_fields; the fuzz test
# (tests/test_fuzz.py) sends whatever the schema allows, so the document states what msgspec enforces.
_CATEGORIES_SCHEMA = {
    "property_names": Schema(type=OpenAPIType.STRING, min_length=3, max_length=96, pattern=_CATEGORY_PATTERN),
    "max_properties": 200,
    "additional_properties": Schema(
        type=OpenAPIType.OBJECT, required=["in_app", "email"], additional_properties=False,
        properties={"in_app": Schema(type=OpenAPIType.BOOLEAN), "email": Schema(type=OpenAPIType.BOOLEAN)}),
}


class NotificationPrefsIn(msgspec.Struct, forbid_unknown_fields=True):
    categories: Annotated[dict[CategoryCode, ChannelsIn], Meta(max_length=200),
                          KwargDefinition(schema_extra=_CATEGORIES_SCHEMA)]


class CategoryPrefOut(msgspec.Struct):
    code: str
    description: str
    in_app: bool
    email: bool
    default_in_app: bool
    default_email: bool


class NotificationPrefsOut(msgspec.Struct):
    categories: list[CategoryPrefOut]


class ApiTokenIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=api_tokens.MAX_SCOPES)]
    expires_in_days: Annotated[int, Meta(ge=1, le=api_tokens.MAX_EXPIRY_DAYS)] | None = None


class ApiTokenOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(msgspec.Struct):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    token: str


class LockoutOut(msgspec.Struct):
    key: str
    kind: str
    subject: str
    failures: int
    locked: bool
    locked_until: datetime | None
    retry_after: int


class SessionOut(msgspec.Struct):
    id: uuid.UUID
    source: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    created_ip: str | None
    user_agent: str | None
    current: bool


def _token_out(row) -> ApiTokenOut:
    return ApiTokenOut(row["id"], row["name"], list(row["scopes"]), row["created_at"], row["expires_at"],
                       row["last_used_at"])


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    return request.scope.get("state", {}).get("request_id")


# --- registration, verification, reset ---------------------------------------------------------

@post("/api/v1/auth/register", responses=_errors(403, 404, 409, 503), tags=["auth"], status_code=202,
      summary="Create an account (auth.registration: open, invite or closed; the first account is the owner)")
async def register(data: JSONBody[RegisterIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> StatusOut:
    await accounts.do_register(kernel, data.email, data.password, data.display_name, data.invite_token,
                               source_of(request))
    return StatusOut("accepted", "If the address can be registered, the account exists now and a verification "
                                 "link is on its way; log in with your password")


@post("/api/v1/auth/verify-email", responses=_errors(404), tags=["auth"], status_code=200, summary="Confirm an e-mail address (link token)")
async def verify_email(data: JSONBody[TokenIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> StatusOut:
    await accounts.do_verify_email(kernel, data.token, source_of(request))
    return StatusOut("verified", "The e-mail address is confirmed")


@post("/api/v1/auth/verify-email/resend", responses=_errors(403),
      tags=["auth"], status_code=202, security=_BEARER,
      summary="Send a new verification link to your address")
async def resend_verification(actor: CurrentActor, kernel: KernelDep, request: Request[Any, Any, Any]) -> StatusOut:
    sent = await accounts.do_resend_verification(actor, kernel, source_of(request))
    if not sent:
        return StatusOut("already-verified", "The address is confirmed already")
    return StatusOut("sent", "A new verification link is on its way")


@post("/api/v1/auth/password/forgot", tags=["auth"], status_code=202,
      summary="Mail a password reset link (always 202, whether or not the account exists)")
async def forgot_password(data: JSONBody[ForgotIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> StatusOut:
    await accounts.do_forgot_password(kernel, data.email, source_of(request))
    return StatusOut("accepted", "If an account has this address, a reset link is on its way")


@post("/api/v1/auth/password/reset", responses=_errors(404), tags=["auth"], status_code=200,
      summary="Set a new password with a reset link's token (ends every session)")
async def reset_password(data: JSONBody[ResetIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> StatusOut:
    await accounts.do_reset_password(kernel, data.token, data.password, source_of(request))
    return StatusOut("password-reset", "The password is changed and every session was ended; log in again")


# --- login, refresh, logout --------------------------------------------------------------------

@post("/api/v1/auth/login", responses=_errors(401, 403), tags=["auth"], status_code=200,
      summary="Log in with e-mail and password: access and refresh tokens")
async def login(data: JSONBody[LoginIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> Response[TokenPair]:
    pair = await accounts.do_login(kernel, data.email, data.password, source_of(request),
                                   request.headers.get("user-agent"))
    return Response(pair, headers=_NO_STORE)


@post("/api/v1/auth/refresh", responses=_errors(401, 403), tags=["auth"], status_code=200,
      summary="Exchange a refresh token for a new pair (a reused refresh token ends its session)")
async def refresh(data: JSONBody[RefreshIn], kernel: KernelDep, request: Request[Any, Any, Any]) -> Response[TokenPair]:
    pair, _ = await refresh_session(kernel, data.refresh_token, source_of(request))
    return Response(pair, headers=_NO_STORE)


@post("/api/v1/auth/session", responses=_errors(401, 403), tags=["auth"], status_code=200,
      summary="Web UI login: tokens in HttpOnly cookies, a CSRF token to echo in X-CSRF-Token")
async def cookie_login(data: JSONBody[LoginIn], kernel: KernelDep,
                       request: Request[Any, Any, Any]) -> Response[CookieSessionOut]:
    pair = await accounts.do_login(kernel, data.email, data.password, source_of(request),
                                   request.headers.get("user-agent"))
    cookies, csrf = session_cookies(kernel.settings.auth, pair)
    return Response(CookieSessionOut(csrf, pair.expires_in), cookies=cookies, headers=_NO_STORE)


@post("/api/v1/auth/session/refresh", responses=_errors(401, 403), tags=["auth"], status_code=200,
      summary="Web UI refresh: new cookies from the refresh cookie (X-CSRF-Token required)")
async def cookie_refresh(kernel: KernelDep, request: Request[Any, Any, Any]) -> Response[CookieSessionOut]:
    cookies = request.cookies
    token = cookies.get(REFRESH_COOKIE)
    if not token:
        raise Problem(401, "unauthenticated", "No session cookie: log in again")
    check_csrf(cookies, request.headers.get(CSRF_HEADER), cookies.get(ACCESS_COOKIE), _request_id(request))
    pair, _ = await refresh_session(kernel, token, source_of(request))
    new_cookies, csrf = session_cookies(kernel.settings.auth, pair)
    return Response(CookieSessionOut(csrf, pair.expires_in), cookies=new_cookies, headers=_NO_STORE)


@post("/api/v1/auth/logout", responses=_errors(401, 403, 409), tags=["auth"], status_code=204,
      summary="End the session: of the bearer access token, of a refresh token in the body, or of the cookies")
async def logout(kernel: KernelDep, request: Request[Any, Any, Any],
                 data: JSONBody[LogoutIn | None] = None) -> None:
    # Annotated None so the schema documents an empty 204; the Response returned below only adds cookies.
    source = source_of(request)
    cookies = request.cookies
    authorization = request.headers.get("authorization")
    clear = False
    target: tuple[uuid.UUID, uuid.UUID] | None = None
    if authorization:
        actor = await authenticate(kernel, authorization, request_id=source.request_id)
        if actor.session_id is None:
            raise Problem(409, "not-a-session",
                          "A personal API token has no session to end; revoke it with DELETE /api/v1/auth/tokens/{id}")
        target = (actor.session_id, actor.user_id)
    elif data is not None and data.refresh_token:
        async with kernel.db.pool.acquire() as connection:
            row = await session_of_refresh(connection, data.refresh_token)
        target = (row["id"], row["user_id"]) if row else None
    elif cookies.get(ACCESS_COOKIE) or cookies.get(REFRESH_COOKIE):
        check_csrf(cookies, request.headers.get(CSRF_HEADER), cookies.get(ACCESS_COOKIE), source.request_id)
        clear = True
        if cookies.get(REFRESH_COOKIE):
            async with kernel.db.pool.acquire() as connection:
                row = await session_of_refresh(connection, cookies[REFRESH_COOKIE])
            target = (row["id"], row["user_id"]) if row else None
        else:
            actor = await authenticate(kernel, None, cookies=cookies, method="GET", request_id=source.request_id)
            target = (actor.session_id, actor.user_id) if actor.session_id else None
    else:
        raise Problem(401, "unauthenticated", "Nothing to log out: no token, refresh token or session cookie",
                      headers={"WWW-Authenticate": "Bearer"})
    if target is not None:
        await do_end_session(kernel, target[0], target[1], "logout", source)
    return Response(None, status_code=204,  # type: ignore[return-value]
                    cookies=cleared_cookies(kernel.settings.auth) if clear else None)


# --- the account -------------------------------------------------------------------------------

@patch("/api/v1/users/me", responses=_errors(403),
       tags=["users"], security=_BEARER, summary="Change your display name")
async def update_me(data: JSONBody[ProfileIn], actor: CurrentActor, kernel: KernelDep,
                    request: Request[Any, Any, Any]) -> UserOut:
    row = await accounts.do_update_profile(actor, kernel, data.display_name, source_of(request))
    return UserOut(row["id"], row["email"], row["display_name"], row["is_admin"])


@post("/api/v1/users/me/password", responses=_errors(403), tags=["users"], status_code=204, security=_BEARER,
      summary="Change your password (your other sessions end)")
async def change_password(data: JSONBody[PasswordChangeIn], actor: CurrentActor, kernel: KernelDep,
                          request: Request[Any, Any, Any]) -> None:
    await accounts.do_change_password(actor, kernel, data.current_password, data.new_password, source_of(request))


@get("/api/v1/users/me/export", responses=_errors(403),
     tags=["users"], security=_BEARER, media_type="application/zip", cache=False,
     summary="GDPR export: a zip of JSON files with everything the server holds about you")
async def export_me(actor: CurrentActor, kernel: KernelDep) -> Response[bytes]:
    archive = await accounts.export_user(actor, kernel)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Response(archive, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="sygmax-export-{stamp}.zip"', **_NO_STORE})


@delete("/api/v1/users/me", responses=_errors(403, 409), tags=["users"], status_code=204, security=_BEARER,
        summary="Erase your account (GDPR): personal data removed, audit history kept pseudonymously")
async def erase_me(data: JSONBody[EraseIn], actor: CurrentActor, kernel: KernelDep,
                   request: Request[Any, Any, Any]) -> None:
    # Annotated None so the schema documents an empty 204; the Response returned below only adds cookies.
    await accounts.do_erase_self(actor, kernel, data.password, source_of(request))
    clear = actor.via == "cookie"
    return Response(None, status_code=204,  # type: ignore[return-value]
                    cookies=cleared_cookies(kernel.settings.auth) if clear else None)


@get("/api/v1/users/me/sessions", responses=_errors(403),
     tags=["users"], security=_BEARER, summary="Your live sessions (logins)")
async def list_sessions(actor: CurrentActor, kernel: KernelDep) -> list[SessionOut]:
    rows = await kernel.db.pool.fetch(
        """SELECT id, source, created_at, last_used_at, expires_at, created_ip, user_agent FROM sygmax_session
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at, id""", actor.user_id)
    return [SessionOut(row["id"], row["source"], row["created_at"], row["last_used_at"], row["expires_at"],
                       row["created_ip"], row["user_agent"], row["id"] == actor.session_id) for row in rows]


@delete("/api/v1/users/me/sessions/{session_id:uuid}", responses=_errors(403),
        tags=["users"], status_code=204, security=_BEARER,
        summary="End one of your sessions")
async def end_session(session_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                      request: Request[Any, Any, Any]) -> None:
    accounts.require_full_access(actor)
    owner = await kernel.db.pool.fetchval(
        "SELECT user_id FROM sygmax_session WHERE id = $1 AND revoked_at IS NULL", session_id)
    if owner != actor.user_id:
        log.warning("auth_denied", reason="session-not-found", user_id=str(actor.user_id),
                    request_id=_request_id(request))
        raise Problem(404, "not-found", "No such session")
    await do_end_session(kernel, session_id, actor.user_id, "ended-by-user", source_of(request))


# --- notification preferences ------------------------------------------------------------------

def _prefs_out(categories, effective: dict[str, dict[str, bool]]) -> NotificationPrefsOut:
    return NotificationPrefsOut([
        CategoryPrefOut(code, category.description, effective[code]["in_app"], effective[code]["email"],
                        "in_app" in category.default_channels, "email" in category.default_channels)
        for code, category in categories.items()])


@get("/api/v1/users/me/notifications", responses=_errors(403), tags=["users"], security=_BEARER,
     summary="Your notification preferences: every category with its channels, defaults filled in")
async def get_notifications(actor: CurrentActor, kernel: KernelDep) -> NotificationPrefsOut:
    categories = notification_prefs.categories_of(kernel.plugins.values())
    async with kernel.db.pool.acquire() as connection:
        effective = await notification_prefs.effective_preferences(connection, actor.user_id, categories)
    return _prefs_out(categories, effective)


@put("/api/v1/users/me/notifications", responses=_errors(403, 404), tags=["users"], security=_BEARER,
     summary="Choose channels (in_app, email) per notification category; categories not named stay as they are")
async def put_notifications(data: JSONBody[NotificationPrefsIn], actor: CurrentActor, kernel: KernelDep,
                            request: Request[Any, Any, Any]) -> NotificationPrefsOut:
    accounts.require_full_access(actor)
    categories = notification_prefs.categories_of(kernel.plugins.values())
    changes = {code: {"in_app": channels.in_app, "email": channels.email} for code, channels in data.categories.items()}
    effective = await notification_prefs.do_update(kernel.db.pool, actor.user_id, categories, changes,
                                                   source_of(request))
    return _prefs_out(categories, effective)


# --- personal API tokens -----------------------------------------------------------------------

@get("/api/v1/auth/tokens", responses=_errors(403),
     tags=["auth"], security=_BEARER, summary="Your personal API tokens (never their secrets)")
async def list_api_tokens(actor: CurrentActor, kernel: KernelDep) -> list[ApiTokenOut]:
    return [_token_out(row) for row in await api_tokens.list_tokens(actor, kernel)]


@post("/api/v1/auth/tokens", responses=_errors(403, 409), tags=["auth"], status_code=201, security=_BEARER,
      summary="Create a personal API token; the answer holds its secret, shown this once")
async def create_api_token(data: JSONBody[ApiTokenIn], actor: CurrentActor, kernel: KernelDep,
                           request: Request[Any, Any, Any]) -> Response[ApiTokenCreated]:
    row, token = await api_tokens.do_create_token(actor, kernel, data.name, list(data.scopes), data.expires_in_days,
                                                  source_of(request))
    return Response(ApiTokenCreated(row["id"], row["name"], list(row["scopes"]), row["created_at"],
                                    row["expires_at"], token), status_code=201, headers=_NO_STORE)


@delete("/api/v1/auth/tokens/{token_id:uuid}", responses=_errors(403),
        tags=["auth"], status_code=204, security=_BEARER,
        summary="Revoke one of your personal API tokens")
async def revoke_api_token(token_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                           request: Request[Any, Any, Any]) -> None:
    await api_tokens.do_revoke_token(actor, kernel, token_id, source_of(request))


# --- lockouts (instance administrators) --------------------------------------------------------

def _require_admin(actor, request: Request[Any, Any, Any]) -> None:
    if not actor.is_admin or not actor.full_access:
        log.warning("auth_denied", reason="not-admin", user_id=str(actor.user_id), request_id=_request_id(request))
        raise Problem(403, "forbidden", "Only instance administrators may do this")


@get("/api/v1/auth/lockouts", responses=_errors(403), tags=["auth"], security=_BEARER,
     summary="Accounts and addresses locked out after failed logins (admins)")
async def list_lockouts(actor: CurrentActor, kernel: KernelDep, request: Request[Any, Any, Any]) -> list[LockoutOut]:
    _require_admin(actor, request)
    now = datetime.now(timezone.utc).timestamp()
    out = []
    for entry in await lockout.list_lockouts(kernel):
        remaining = max(0, int(entry.locked_until - now + 0.999))
        out.append(LockoutOut(entry.key, entry.kind, entry.subject, entry.failures, remaining > 0,
                              datetime.fromtimestamp(entry.locked_until, timezone.utc) if entry.locked_until else None,
                              remaining))
    return out


@delete("/api/v1/auth/lockouts/{key:path}", responses=_errors(403),
        tags=["auth"], status_code=204, security=_BEARER,
        summary="Clear a lockout (admins); key as listed, e.g. account:alice@example.org or ip:203.0.113.9")
async def clear_lockout(key: FromPath[str], actor: CurrentActor, kernel: KernelDep,
                        request: Request[Any, Any, Any]) -> None:
    _require_admin(actor, request)
    await accounts.do_clear_lockout(actor, kernel, key.removeprefix("/"), source_of(request))


def account_handlers() -> list:
    return [register, verify_email, resend_verification, forgot_password, reset_password, login, refresh,
            cookie_login, cookie_refresh, logout, update_me, change_password, export_me, erase_me, list_sessions,
            end_session, get_notifications, put_notifications, list_api_tokens, create_api_token, revoke_api_token, list_lockouts, clear_lockout]
