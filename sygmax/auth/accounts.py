"""Accounts: registration, login, e-mail verification, passwords, profile, disabling, GDPR.

Every write is a ``do_<verb>`` function taking the actor first (``None`` for anonymous
requests and the CLI, which act as the system) and writing its audit row in the same
transaction. Handlers (:mod:`sygmax.auth.account_api`) and the CLI (``sygmax user``) only
parse input and call these.

Registration (``auth.registration``): ``open`` lets anyone register, ``invite`` needs a
valid invitation token (claimed through :mod:`sygmax.auth.invites` in the same transaction),
``closed`` refuses. Whatever the mode, the first account of a fresh installation may
register and becomes its owner (``is_owner``, ``is_admin``); registrations are serialised by
a transaction-scoped advisory lock and a unique partial index allows one owner, so two
simultaneous first registrations yield exactly one owner. The answer is the same 202
whether or not the address already had an account (its owner gets a notice by mail), so
registration does not reveal which addresses exist.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import uuid
import zipfile
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from redis.exceptions import RedisError

from sygmax.auth import audit, links, lockout
from sygmax.auth.audit import Source
from sygmax.auth.passwords import check_password_policy, hash_password, verify_password
from sygmax.auth.sessions import TokenPair, forget_sessions, issue_session, revoke_user_sessions
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

REGISTRATION_LOCK_KEY = 0x5947_4D41_5852_4547
MAX_EMAIL = 254
MAX_NAME = 100
# Input rules as JSON-schema patterns (the API's types carry them, so the OpenAPI document tells
# exactly what is accepted) and the same regexes here for the CLI and direct callers.
EMAIL_PATTERN = (r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                 r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_EMAIL = re.compile(EMAIL_PATTERN)
# Names: no control, line-separator, bidi-override or zero-width characters, none of < > ; " ` { } [ ] | \,
# no leading or trailing space.
_NAME_BAD = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff<>;\"`{}\[\]|\\"
NAME_PATTERN = rf"^[^\s{_NAME_BAD}](?:[^{_NAME_BAD}]*[^\s{_NAME_BAD}])?$"
_NAME = re.compile(NAME_PATTERN)
ERASED_NAME = "Deleted user"
INVITE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{10,200}$"
_INVITE_TOKEN = re.compile(INVITE_TOKEN_PATTERN)
FORGOT_COOLDOWN_S = 60


# --- input rules -------------------------------------------------------------------------------

def normalize_email(value: str, field: str = "email") -> str:
    """The address lower-cased, or 400 ``invalid-email`` (plain ASCII addresses: no quotes, no spaces)."""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise Problem(400, "invalid-email", f"{field}: not a valid e-mail address", field=field)
    return email


def check_name(value: str, field: str = "display_name") -> str:
    """1..100 characters, no control or invisible characters, none of ``< > ; " ` { } [ ] | \\``, else 400."""
    name = unicodedata.normalize("NFC", value.strip())
    if not name or len(name) > MAX_NAME:
        raise Problem(400, "invalid-name", f"{field}: 1 to {MAX_NAME} characters", field=field)
    if not _NAME.match(name):
        raise Problem(400, "invalid-name", f"{field}: control characters and < > ; \" ` {{ }} [ ] | \\ are not "
                                           "allowed", field=field)
    return name


def require_full_access(actor: Actor) -> None:
    """Account management needs a session or a personal token with scope ``*``."""
    if not actor.full_access:
        log.warning("auth_denied", reason="insufficient-scope", user_id=str(actor.user_id))
        raise Problem(403, "insufficient-scope", "This token's scopes do not allow managing the account")


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- registration ------------------------------------------------------------------------------

async def do_register(kernel: "Kernel", email: str, password: str, display_name: str,
                      invite_token: str | None, source: Source) -> uuid.UUID | None:
    """Create an account per ``auth.registration``; the new id, or None if the address was taken."""
    email = normalize_email(email)
    display_name = check_name(display_name)
    check_password_policy(password, email)
    if invite_token is not None and not _INVITE_TOKEN.match(invite_token):
        raise Problem(400, "invalid-invite", "invite_token: not an invitation token", field="invite_token")
    password_hash = await hash_password(kernel.settings.auth, password)
    mode = kernel.settings.auth.registration
    user_id = uuid.uuid4()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", REGISTRATION_LOCK_KEY)
        first = not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM sygmax_user)")
        if not first and mode == "closed":
            log.warning("auth_denied", reason="registration-closed", request_id=source.request_id)
            raise Problem(403, "registration-closed", "Registration is closed; ask an administrator for an account")
        if not first and mode == "invite" and not invite_token:
            log.warning("auth_denied", reason="invite-required", request_id=source.request_id)
            raise Problem(403, "invite-required", "Registration needs an invitation", field="invite_token")
        existing = await connection.fetchrow("SELECT id, display_name FROM sygmax_user WHERE lower(email) = $1",
                                             email)
        if existing is not None:
            log.info("registration_for_existing_address", request_id=source.request_id)
            kernel.spawn(links.mail_text(
                kernel, email, "Someone tried to register with your address",
                f"Hello {existing['display_name']},\n\nsomeone tried to create a Sygmax account with this address, "
                "which already has one. If it was you, log in or reset your password instead. Otherwise ignore "
                "this message.\n", "registration-existing"), name="mail:registration-existing")
            return None
        await connection.execute(
            """INSERT INTO sygmax_user (id, email, display_name, is_admin, is_owner, password_hash,
                                        password_changed_at)
               VALUES ($1, $2, $3, $4, $4, $5, now())""",
            user_id, email, display_name, first, password_hash)
        if invite_token and not first:
            try:
                from sygmax.auth.invites import claim_invite
            except ImportError:
                raise Problem(503, "invites-unavailable", "Invitations are not available on this server") from None
            await claim_invite(connection, invite_token, email, user_id)
        token = await links.create_link(connection, user_id, "verify", email,
                                        kernel.settings.auth.verification_link_ttl_s)
        await audit.record(connection, actor_id=user_id, action="user.register", object_type="user",
                           object_id=user_id, source=source,
                           details={"owner": first, "mode": mode, "invited": bool(invite_token and not first)})
    kernel.spawn(links.mail_link(kernel, "verify", email, display_name, token,
                                 kernel.settings.auth.verification_link_ttl_s), name="mail:verify")
    return user_id


async def do_create_user(actor: Actor | None, kernel: "Kernel", email: str, display_name: str | None,
                         password: str | None, admin: bool, source: Source | None = None) -> tuple[uuid.UUID, str | None]:
    """Administrative creation (CLI); without a password returns a one-time password-set link."""
    source = source or Source()
    email = normalize_email(email)
    display_name = check_name(display_name if display_name is not None else email.partition("@")[0])
    password_hash = None
    if password is not None:
        check_password_policy(password, email)
        password_hash = await hash_password(kernel.settings.auth, password)
    user_id = uuid.uuid4()
    url = None
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", REGISTRATION_LOCK_KEY)
        if await connection.fetchval("SELECT EXISTS (SELECT 1 FROM sygmax_user WHERE lower(email) = $1)", email):
            raise Problem(409, "email-taken", f"an account with {email} already exists", field="email")
        first = not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM sygmax_user)")
        await connection.execute(
            """INSERT INTO sygmax_user (id, email, display_name, is_admin, is_owner, password_hash,
                                        password_changed_at, email_verified_at)
               VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6::text IS NULL THEN NULL ELSE now() END, NULL)""",
            user_id, email, display_name, admin or first, first, password_hash)
        if password_hash is None:
            token = await links.create_link(connection, user_id, "reset", email, kernel.settings.auth.reset_link_ttl_s)
            url = links.link_url(kernel.settings.server.public_url, "reset", token)
        await audit.record(connection, actor_id=actor.user_id if actor else None, action="user.create",
                           object_type="user", object_id=user_id, source=source,
                           details={"admin": admin or first, "owner": first, "password_set": password_hash is not None})
    return user_id, url


# --- login -------------------------------------------------------------------------------------

def _invalid_credentials(reason: str, source: Source) -> Problem:
    log.warning("auth_denied", reason=reason, request_id=source.request_id, ip=source.ip)
    return Problem(401, "invalid-credentials", "Wrong e-mail address or password")


async def do_login(kernel: "Kernel", email: str, password: str, source: Source,
                   user_agent: str | None = None) -> TokenPair:
    """Check the password (with brute-force limits) and start a session."""
    email = normalize_email(email)  # a malformed address is 400: its format says nothing about accounts
    if not password or len(password) > 1024:
        raise _invalid_credentials("malformed-password", source)
    await lockout.check(kernel, email, source.ip, source.request_id)
    row = await kernel.db.pool.fetchrow(
        "SELECT id, password_hash, is_active FROM sygmax_user WHERE lower(email) = $1", email)
    ok, new_hash = await verify_password(kernel.settings.auth, row["password_hash"] if row else None, password)
    if not ok:
        await lockout.record_failure(kernel, email, source.ip)
        raise _invalid_credentials("wrong-password" if row else "unknown-account", source)
    if not row["is_active"]:
        log.warning("auth_denied", reason="account-disabled", user_id=str(row["id"]), request_id=source.request_id)
        raise Problem(403, "account-disabled", "This account is disabled")
    await lockout.clear_account(kernel, email)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        if new_hash is not None:
            await connection.execute("UPDATE sygmax_user SET password_hash = $2 WHERE id = $1", row["id"], new_hash)
            await audit.record(connection, actor_id=row["id"], action="user.password_rehash", object_type="user",
                               object_id=row["id"], source=source)
        return await issue_session(kernel, connection, row["id"], source, method="password", user_agent=user_agent)


# --- e-mail verification and password reset ----------------------------------------------------

async def do_verify_email(kernel: "Kernel", token: str, source: Source) -> uuid.UUID:
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await links.use_link(connection, token, "verify")
        await connection.execute(
            "UPDATE sygmax_user SET email_verified_at = coalesce(email_verified_at, now()), updated_at = now() "
            "WHERE id = $1", row["user_id"])
        await audit.record(connection, actor_id=row["user_id"], action="user.verify_email", object_type="user",
                           object_id=row["user_id"], source=source)
    return row["user_id"]


async def do_resend_verification(actor: Actor, kernel: "Kernel", source: Source) -> bool:
    """Send a new verification link to the actor's address; False if it is verified already."""
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        user = await connection.fetchrow(
            "SELECT email, display_name, email_verified_at FROM sygmax_user WHERE id = $1", actor.user_id)
        if user["email_verified_at"] is not None:
            return False
        token = await links.create_link(connection, actor.user_id, "verify", user["email"],
                                        kernel.settings.auth.verification_link_ttl_s)
        await audit.record(connection, actor_id=actor.user_id, action="user.verification_requested",
                           object_type="user", object_id=actor.user_id, source=source)
    kernel.spawn(links.mail_link(kernel, "verify", user["email"], user["display_name"], token,
                                 kernel.settings.auth.verification_link_ttl_s), name="mail:verify")
    return True


async def _send_reset(kernel: "Kernel", email: str, source: Source) -> None:
    """Background part of a reset request: nothing for unknown or disabled accounts, at most one mail a minute."""
    try:
        if not await kernel.redis.set(f"sygmax:auth:reset-cooldown:{email}", "1", ex=FORGOT_COOLDOWN_S, nx=True):
            log.info("password_reset_throttled", request_id=source.request_id)
            return
    except RedisError as exc:
        log.warning("reset_cooldown_unavailable", error=str(exc))
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        user = await connection.fetchrow(
            "SELECT id, display_name FROM sygmax_user WHERE lower(email) = $1 AND is_active", email)
        if user is None:
            log.info("password_reset_unknown_account", request_id=source.request_id)
            return
        token = await links.create_link(connection, user["id"], "reset", email, kernel.settings.auth.reset_link_ttl_s)
        await audit.record(connection, actor_id=None, action="user.password_reset_requested", object_type="user",
                           object_id=user["id"], source=source)
    await links.mail_link(kernel, "reset", email, user["display_name"], token, kernel.settings.auth.reset_link_ttl_s)


async def do_forgot_password(kernel: "Kernel", email: str, source: Source) -> None:
    """Start a reset; the caller answers 202 at once, the same way whether or not the account exists."""
    email = normalize_email(email)
    kernel.spawn(_send_reset(kernel, email, source), name="auth:password-reset")


async def do_reset_password(kernel: "Kernel", token: str, password: str, source: Source) -> uuid.UUID:
    """Set a new password from a reset link; every session of the account is revoked."""
    async with kernel.db.pool.acquire() as connection:
        row = await links.peek_link(connection, token, "reset")
    check_password_policy(password, row["email"])
    password_hash = await hash_password(kernel.settings.auth, password)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await links.use_link(connection, token, "reset")
        user_id = row["user_id"]
        await connection.execute(
            """UPDATE sygmax_user SET password_hash = $2, password_changed_at = now(), updated_at = now(),
                      email_verified_at = coalesce(email_verified_at, now())
               WHERE id = $1""", user_id, password_hash)
        revoked = await revoke_user_sessions(connection, user_id, "password-reset")
        await audit.record(connection, actor_id=user_id, action="user.password_reset", object_type="user",
                           object_id=user_id, source=source, details={"sessions_revoked": len(revoked)})
    await forget_sessions(kernel, revoked)
    await lockout.clear_account(kernel, row["email"])
    return user_id


async def _confirm_own_password(kernel: "Kernel", actor: Actor, row: asyncpg.Record, password: str, source: Source,
                                *, field: str, reason: str) -> None:
    """The actor's own ``password`` (``row``: its email and hash) confirms a change, under the login lockout:
    a wrong one counts as a failed attempt and is a 403 on ``field``."""
    await lockout.check(kernel, row["email"], source.ip, source.request_id)
    ok, _ = await verify_password(kernel.settings.auth, row["password_hash"], password[:1024])
    if not ok:
        await lockout.record_failure(kernel, row["email"], source.ip)
        log.warning("auth_denied", reason=reason, user_id=str(actor.user_id), request_id=source.request_id)
        raise Problem(403, "invalid-credentials", f"{field}: wrong password", field=field)


async def do_change_password(actor: Actor, kernel: "Kernel", current: str, new: str, source: Source) -> None:
    """Change the actor's password (current one required); other sessions are revoked."""
    require_full_access(actor)
    row = await kernel.db.pool.fetchrow("SELECT email, password_hash FROM sygmax_user WHERE id = $1", actor.user_id)
    await _confirm_own_password(kernel, actor, row, current, source, field="current_password",
                                reason="wrong-current-password")
    check_password_policy(new, row["email"], field="new_password")
    password_hash = await hash_password(kernel.settings.auth, new)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE sygmax_user SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1",
            actor.user_id, password_hash)
        revoked = await revoke_user_sessions(connection, actor.user_id, "password-change",
                                             except_session=actor.session_id)
        await audit.record(connection, actor_id=actor.user_id, action="user.password_change", object_type="user",
                           object_id=actor.user_id, source=source, details={"sessions_revoked": len(revoked)})
    await forget_sessions(kernel, revoked)


# --- profile -----------------------------------------------------------------------------------

async def do_update_profile(actor: Actor, kernel: "Kernel", display_name: str, source: Source) -> asyncpg.Record:
    require_full_access(actor)
    display_name = check_name(display_name)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        before = await connection.fetchval("SELECT display_name FROM sygmax_user WHERE id = $1 FOR UPDATE",
                                           actor.user_id)
        row = await connection.fetchrow(
            "UPDATE sygmax_user SET display_name = $2, updated_at = now() WHERE id = $1 "
            "RETURNING id, email, display_name, is_admin", actor.user_id, display_name)
        if before != display_name:
            await audit.record(connection, actor_id=actor.user_id, action="user.update", object_type="user",
                               object_id=actor.user_id, source=source, details={"fields": ["display_name"]})
    return row


# --- account state (admin) ---------------------------------------------------------------------

async def find_user(kernel: "Kernel", email_or_id: str) -> asyncpg.Record:
    """An account by id or e-mail address; 404 ``not-found`` otherwise."""
    value = email_or_id.strip()
    try:
        user_id = uuid.UUID(value)
    except ValueError:
        user_id = None
    row = await kernel.db.pool.fetchrow(
        """SELECT id, email, display_name, is_admin, is_owner, is_active, created_at, last_login_at,
                  email_verified_at, disabled_at, erased_at, password_hash IS NOT NULL AS has_password
           FROM sygmax_user WHERE id = $1 OR lower(email) = lower($2)""", user_id, value[:MAX_EMAIL])
    if row is None:
        raise Problem(404, "not-found", f"no account {value[:80]!r}")
    return row


async def _account_row(connection: asyncpg.Connection, user_id: uuid.UUID, columns: str, *,
                       for_update: bool = False) -> asyncpg.Record:
    """``columns`` (a constant list, never input) of the account ``user_id``, locked if ``for_update``; else 404."""
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(f"SELECT {columns} FROM sygmax_user WHERE id = $1{lock}", user_id)
    if row is None:
        raise Problem(404, "not-found", "no such account")
    return row


async def _active_admins(connection: asyncpg.Connection, excluding: uuid.UUID) -> int:
    return await connection.fetchval(
        "SELECT count(*) FROM sygmax_user WHERE is_admin AND is_active AND id <> $1", excluding)


async def do_disable_user(actor: Actor | None, kernel: "Kernel", user_id: uuid.UUID, source: Source | None = None) -> bool:
    """Disable an account: no login, no refresh; its sessions and tokens stop working. False if already."""
    source = source or Source()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await _account_row(connection, user_id, "is_active, erased_at", for_update=True)
        if not row["is_active"]:
            return False
        await connection.execute(
            "UPDATE sygmax_user SET is_active = false, disabled_at = now(), updated_at = now() WHERE id = $1", user_id)
        revoked = await revoke_user_sessions(connection, user_id, "account-disabled")
        await audit.record(connection, actor_id=actor.user_id if actor else None, action="user.disable",
                           object_type="user", object_id=user_id, source=source,
                           details={"sessions_revoked": len(revoked)})
    await forget_sessions(kernel, revoked)
    return True


async def do_enable_user(actor: Actor | None, kernel: "Kernel", user_id: uuid.UUID, source: Source | None = None) -> bool:
    source = source or Source()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await _account_row(connection, user_id, "is_active, erased_at", for_update=True)
        if row["erased_at"] is not None:
            raise Problem(409, "account-erased", "an erased account cannot be enabled again")
        if row["is_active"]:
            return False
        await connection.execute(
            "UPDATE sygmax_user SET is_active = true, disabled_at = NULL, updated_at = now() WHERE id = $1", user_id)
        await audit.record(connection, actor_id=actor.user_id if actor else None, action="user.enable",
                           object_type="user", object_id=user_id, source=source)
    return True


async def do_admin_reset_password(actor: Actor | None, kernel: "Kernel", user_id: uuid.UUID,
                                  source: Source | None = None) -> str:
    """A one-time password-set link for an account (CLI); the old password keeps working until it is used."""
    source = source or Source()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await _account_row(connection, user_id, "email, erased_at")
        if row["erased_at"] is not None:
            raise Problem(409, "account-erased", "the account has been erased")
        token = await links.create_link(connection, user_id, "reset", row["email"], kernel.settings.auth.reset_link_ttl_s)
        await audit.record(connection, actor_id=actor.user_id if actor else None, action="user.password_reset_link",
                           object_type="user", object_id=user_id, source=source)
    return links.link_url(kernel.settings.server.public_url, "reset", token)


async def do_erase_user(actor: Actor | None, kernel: "Kernel", user_id: uuid.UUID, source: Source | None = None,
                        allow_last_admin: bool = False) -> None:
    """GDPR erasure: personal data replaced, credentials revoked; audit rows stay under the same id."""
    source = source or Source()
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        row = await _account_row(connection, user_id, "is_admin, is_active, erased_at", for_update=True)
        if row["erased_at"] is not None:
            raise Problem(409, "account-erased", "the account has been erased already")
        if row["is_admin"] and row["is_active"] and not allow_last_admin and not await _active_admins(connection, user_id):
            raise Problem(409, "last-admin", "the last active administrator cannot be erased; make someone else "
                                             "an administrator first")
        await connection.execute(
            """UPDATE sygmax_user SET email = $2, display_name = $3, password_hash = NULL, password_changed_at = NULL,
                      email_verified_at = NULL, is_active = false, is_admin = false,
                      disabled_at = coalesce(disabled_at, now()), erased_at = now(), last_login_at = NULL,
                      updated_at = now()
               WHERE id = $1""", user_id, f"erased-{user_id}@invalid", ERASED_NAME)
        tokens = await connection.fetchval(
            """WITH revoked AS (UPDATE sygmax_api_token SET revoked_at = coalesce(revoked_at, now()), name = 'erased'
                                WHERE user_id = $1 RETURNING 1)
               SELECT count(*) FROM revoked""", user_id)
        revoked = await revoke_user_sessions(connection, user_id, "account-erased")
        await connection.execute("UPDATE sygmax_session SET created_ip = NULL, user_agent = NULL WHERE user_id = $1",
                                 user_id)
        await connection.execute(
            "DELETE FROM sygmax_refresh_token WHERE session_id IN (SELECT id FROM sygmax_session WHERE user_id = $1)",
            user_id)
        await connection.execute("DELETE FROM sygmax_email_link WHERE user_id = $1", user_id)
        await audit.record(connection, actor_id=actor.user_id if actor else None, action="user.erase",
                           object_type="user", object_id=user_id, source=source,
                           details={"sessions_revoked": len(revoked), "tokens_revoked": tokens})
    await forget_sessions(kernel, revoked)


async def do_erase_self(actor: Actor, kernel: "Kernel", password: str, source: Source) -> None:
    """``DELETE /users/me``: the account's password confirms the erasure."""
    require_full_access(actor)
    row = await kernel.db.pool.fetchrow("SELECT email, password_hash FROM sygmax_user WHERE id = $1", actor.user_id)
    if row["password_hash"] is None:
        raise Problem(409, "password-not-set", "Set a password first (password reset) or ask an administrator")
    await _confirm_own_password(kernel, actor, row, password, source, field="password",
                                reason="wrong-password-erase")
    await do_erase_user(actor, kernel, actor.user_id, source)


# --- GDPR export -------------------------------------------------------------------------------

_SECRET_COLUMN = re.compile(r"(hash|secret|password|token$|^token|key$)", re.IGNORECASE)
_EXPLICIT = {"sygmax_api_token", "sygmax_session", "sygmax_refresh_token", "sygmax_email_link", "sygmax_user"}
EXPORT_ROW_LIMIT = 100_000


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime,)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID,)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _rows(records) -> list[dict]:
    out = []
    for record in records:
        item = {}
        for key, value in record.items():
            if key == "details" and isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            item[key] = _jsonable(value)
        out.append(item)
    return out


async def export_user(actor: Actor, kernel: "Kernel") -> bytes:
    """A zip of JSON files: everything the kernel (and any table referencing the user) holds about the actor."""
    require_full_access(actor)
    user_id = actor.user_id
    files: dict[str, Any] = {}
    async with kernel.db.pool.acquire() as connection, connection.transaction(isolation="repeatable_read",
                                                                                 readonly=True):
        files["profile.json"] = _rows(await connection.fetch(
            """SELECT id, email, display_name, is_admin, is_owner, is_active, created_at, updated_at, last_login_at,
                      email_verified_at, password_changed_at, disabled_at, erased_at,
                      password_hash IS NOT NULL AS has_password
               FROM sygmax_user WHERE id = $1""", user_id))[0]
        files["api_tokens.json"] = _rows(await connection.fetch(
            """SELECT id, name, scopes, created_at, expires_at, last_used_at, revoked_at
               FROM sygmax_api_token WHERE user_id = $1 ORDER BY created_at""", user_id))
        files["sessions.json"] = _rows(await connection.fetch(
            """SELECT id, source, created_at, last_used_at, expires_at, revoked_at, revoked_reason, created_ip,
                      user_agent
               FROM sygmax_session WHERE user_id = $1 ORDER BY created_at""", user_id))
        files["audit.json"] = _rows(await connection.fetch(
            """SELECT seq, at, action, object_type, object_id, workspace_id, source_ip, request_id, details
               FROM sygmax_audit WHERE actor_id = $1 ORDER BY seq LIMIT $2""", user_id, EXPORT_ROW_LIMIT))
        # Every other table that references the account (workspace memberships, plugin data ...),
        # found through the catalog so modules added later are exported too.
        references = await connection.fetch(
            """SELECT c.conrelid::regclass::text AS table_name, a.attname AS column_name
               FROM pg_constraint c
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
               WHERE c.contype = 'f' AND c.confrelid = 'sygmax_user'::regclass AND array_length(c.conkey, 1) = 1
               ORDER BY 1, 2""")
        for reference in references:
            table, column = reference["table_name"], reference["column_name"]
            if table in _EXPLICIT:
                continue
            columns = [row["attname"] for row in await connection.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum", table)]
            visible = [name for name in columns if not _SECRET_COLUMN.search(name)]
            if not visible:
                continue
            select_list = await connection.fetchval(
                "SELECT string_agg(quote_ident(c), ', ' ORDER BY ordinality) FROM unnest($1::text[]) WITH ORDINALITY c",
                visible)
            quoted_column = await connection.fetchval("SELECT quote_ident($1)", column)
            rows = await connection.fetch(
                f"SELECT {select_list} FROM {table} WHERE {quoted_column} = $1 LIMIT {EXPORT_ROW_LIMIT}", user_id)
            name = f"{table.replace('.', '_')}.json"
            files.setdefault("related", {})[name] = {"column": column, "rows": _rows(rows)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt",
                         "Everything this Sygmax server holds about your account, as JSON.\n"
                         "profile.json: your account; api_tokens.json: your personal API tokens (never their "
                         "secrets); sessions.json: your logins; audit.json: changes you made; related/: rows of "
                         "other tables that refer to you (workspace memberships, module data).\n"
                         f"Exported at {_now().isoformat()}.\n")
        for name, content in files.items():
            if name == "related":
                for related_name, related in content.items():
                    archive.writestr(f"related/{related_name}", json.dumps(related, indent=2, ensure_ascii=False))
            else:
                archive.writestr(name, json.dumps(content, indent=2, ensure_ascii=False))
    return buffer.getvalue()


async def do_clear_lockout(actor: Actor, kernel: "Kernel", key: str, source: Source) -> None:
    """Forget a lockout entry (admins); 404 if there is none. Audited under the account's id, if any."""
    kind, _, subject = key.partition(":")
    if kind not in ("account", "ip") or not subject or len(key) > 300:
        raise Problem(404, "not-found", "No such lockout")
    user_id = None
    if kind == "account":
        user_id = await kernel.db.pool.fetchval("SELECT id FROM sygmax_user WHERE lower(email) = lower($1)",
                                                subject)
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        if not await lockout.clear(kernel, key):
            raise Problem(404, "not-found", "No such lockout")
        await audit.record(connection, actor_id=actor.user_id, action="lockout.clear", object_type="lockout",
                           object_id=user_id if kind == "account" else subject, source=source,
                           details={"kind": kind})
