"""Workspace invitations: single-use, expiring links; only the token's SHA-256 is stored.

An invitation names a role (built-in or a custom role of the workspace) and, optionally,
the e-mail address it was sent to; then only an account with that address may claim it.
:func:`claim_invite` is the one place an invitation turns into a membership: the accept
route uses it, and so does registration with an invitation (``auth.registration = "invite"``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import msgspec
import structlog

from sygmax.auth import audit, policy, workspaces
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.config import SmtpSettings
from sygmax.errors import Problem
from sygmax.mail import MailError, send_mail

log = structlog.get_logger("sygmax.auth")

INVITE_PREFIX = "syi_"
MAX_TOKEN_LENGTH = 200
DEFAULT_TTL_S = 7 * 86400
MAX_TTL_S = 30 * 86400


def new_invite_token() -> str:
    return INVITE_PREFIX + secrets.token_urlsafe(32)


def hash_invite_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def invite_link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/invite/{token}"


@dataclass(frozen=True)
class ClaimedInvite:
    invite_id: uuid.UUID
    workspace_id: uuid.UUID
    role: str | None
    role_id: uuid.UUID | None


def _invalid(status: int, detail: str, reason: str) -> Problem:
    log.warning("auth_denied", reason=f"invite_{reason}")
    return Problem(status, "invalid-invite", detail)


async def claim(connection, token: str, email: str, user_id: uuid.UUID, *,
                source: Source | None = None) -> ClaimedInvite:
    """Validate ``token`` and make ``user_id`` a member with the invitation's role (in one transaction)."""
    if not isinstance(token, str) or not token.startswith(INVITE_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid(404, "No such invitation", "malformed")
    async with connection.transaction():
        # FOR UPDATE: two accepts of the same link cannot both succeed.
        row = await connection.fetchrow(
            """SELECT id, workspace_id, email, role, role_id, expires_at, used_at FROM sygmax_invite
               WHERE token_hash = $1 FOR UPDATE""", hash_invite_token(token))
        if row is None:
            raise _invalid(404, "No such invitation", "unknown")
        if row["used_at"] is not None:
            raise _invalid(400, "This invitation has already been used", "used")
        if row["expires_at"] <= datetime.now(timezone.utc):
            raise _invalid(400, "This invitation has expired; ask for a new one", "expired")
        if row["email"] is not None and row["email"].lower() != (email or "").lower():
            raise _invalid(400, "This invitation was sent to another e-mail address", "email_mismatch")
        # Lock the workspace row like every other membership change (see workspaces.py).
        await connection.execute("SELECT 1 FROM sygmax_workspace WHERE id = $1 FOR UPDATE", row["workspace_id"])
        existing = await connection.fetchval(
            "SELECT 1 FROM sygmax_membership WHERE workspace_id = $1 AND user_id = $2", row["workspace_id"], user_id)
        if existing:
            raise Problem(409, "already-member", "You are already a member of this workspace")
        await connection.execute(
            "INSERT INTO sygmax_membership (workspace_id, user_id, role, role_id) VALUES ($1, $2, $3, $4)",
            row["workspace_id"], user_id, row["role"], row["role_id"])
        await connection.execute("UPDATE sygmax_invite SET used_at = now(), used_by = $2 WHERE id = $1",
                                 row["id"], user_id)
        await audit.record(connection, actor_id=user_id, action="invite.accept", object_type="invite",
                           object_id=row["id"], workspace_id=row["workspace_id"], source=source,
                           details={"role": row["role"] or str(row["role_id"]), "user_id": str(user_id)})
    return ClaimedInvite(row["id"], row["workspace_id"], row["role"], row["role_id"])


async def claim_invite(connection, token: str, email: str, user_id: uuid.UUID, *,
                       source: Source | None = None) -> None:
    """Claim an invitation for ``user_id`` (whose address is ``email``).

    Raises ``Problem`` 404 ``invalid-invite`` for an unknown token, 400 ``invalid-invite`` for
    one that is used, expired or addressed to another e-mail, and 409 ``already-member``.
    Runs in its own transaction (a savepoint inside the caller's, if any).
    """
    await claim(connection, token, email, user_id, source=source)


def expiry(ttl_s: int | None) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=ttl_s or DEFAULT_TTL_S)


class InviteView(msgspec.Struct):
    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str | None
    role: str
    role_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    status: str                     # pending, used, expired
    used_by: uuid.UUID | None = None
    used_at: datetime | None = None


class CreatedInvite(msgspec.Struct):
    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str | None
    role: str
    role_id: uuid.UUID | None
    expires_at: datetime
    link: str
    token: str
    emailed: bool


class AcceptedInvite(msgspec.Struct):
    workspace_id: uuid.UUID
    workspace_name: str
    role: str
    role_id: uuid.UUID | None


EMAIL_PATTERN = r"^[^@\s<>()\[\]\\,;:\"\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
_EMAIL = re.compile(EMAIL_PATTERN)

_INVITE_SQL = """
SELECT i.id, i.workspace_id, i.email, i.role, i.role_id, r.name AS role_name, i.created_by, i.created_at,
       i.expires_at, i.used_at, i.used_by
FROM sygmax_invite i LEFT JOIN sygmax_role r ON r.workspace_id = i.workspace_id AND r.id = i.role_id
WHERE i.workspace_id = $1
"""


def _invite_view(row, now: datetime) -> InviteView:
    status = "used" if row["used_at"] else ("expired" if row["expires_at"] <= now else "pending")
    return InviteView(row["id"], row["workspace_id"], row["email"], row["role"] or row["role_name"], row["role_id"],
                      row["created_by"], row["created_at"], row["expires_at"], status, row["used_by"], row["used_at"])


def check_email(email: str | None) -> str | None:
    if email is None:
        return None
    email = email.strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise Problem(400, "validation-error", "email: not a plain e-mail address", field="email")
    return email


async def _authorize_invite(connection, actor: Actor, workspace_id: uuid.UUID, role: str,
                            source: Source | None) -> tuple[policy.Access, workspaces.ResolvedRole]:
    found = await policy.require(connection, actor, "invites.manage", workspace_id=workspace_id,
                                 request_id=source and source.request_id)
    target = await workspaces.resolve_role(connection, workspace_id, role)
    if not workspaces.can_confer(found, target.permissions, target.role):
        raise Problem(403, "forbidden", f"You cannot invite with the role {target.name}: it holds permissions "
                                        "you lack")
    return found, target


async def do_create_invite(actor: Actor, db, workspace_id: uuid.UUID, *, role: str, email: str | None = None,
                           ttl_s: int | None = None, public_url: str, smtp: SmtpSettings | None = None,
                           source: Source | None = None) -> CreatedInvite:
    """Create an invitation link; when ``email`` is given, also mail it (nothing is kept if mailing fails)."""
    email = check_email(email)
    if ttl_s is not None and not 300 <= ttl_s <= MAX_TTL_S:
        raise Problem(400, "validation-error", f"ttl_s: between 300 and {MAX_TTL_S} seconds", field="ttl_s")
    token = new_invite_token()
    link = invite_link(public_url, token)
    invite_id = uuid.uuid4()
    expires_at = expiry(ttl_s)
    if email is not None:
        # Check first, then mail outside any transaction (a slow relay must not hold the audit
        # lock), then write: if the relay refuses, nothing was written.
        async with workspaces.connection_of(db) as connection:
            await _authorize_invite(connection, actor, workspace_id, role, source)
            workspace_name = await connection.fetchval("SELECT name FROM sygmax_workspace WHERE id = $1",
                                                       workspace_id)
        try:
            await send_mail(smtp, email, f"You are invited to {workspace_name} on Sygmax",
                            f"{actor.display_name} invited you to the workspace \"{workspace_name}\".\n\n"
                            f"Join it here (the link works once, until "
                            f"{expires_at.strftime('%Y-%m-%d %H:%M UTC')}):\n\n{link}\n")
        except MailError as exc:
            log.warning("invite_mail_failed", workspace_id=str(workspace_id), error=str(exc),
                        request_id=source and source.request_id)
            raise Problem(503, "mail-unavailable",
                          f"The invitation could not be mailed, so none was created: {exc}") from exc
    async with workspaces.transaction(db) as connection:
        _, target = await _authorize_invite(connection, actor, workspace_id, role, source)
        await connection.execute(
            """INSERT INTO sygmax_invite (id, workspace_id, token_hash, email, role, role_id, created_by, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            invite_id, workspace_id, hash_invite_token(token), email, target.role, target.role_id, actor.user_id,
            expires_at)
        await audit.record(connection, actor_id=actor.user_id, action="invite.create", object_type="invite",
                           object_id=invite_id, workspace_id=workspace_id, source=source,
                           details={"role": target.role or str(target.role_id), "emailed": email is not None,
                                    "expires_at": expires_at.isoformat()})
    return CreatedInvite(invite_id, workspace_id, email, target.name, target.role_id, expires_at, link, token,
                         email is not None)


async def list_invites(actor: Actor, db, workspace_id: uuid.UUID, *, source: Source | None = None
                       ) -> list[InviteView]:
    async with workspaces.connection_of(db) as connection:
        await policy.require(connection, actor, "invites.manage", workspace_id=workspace_id,
                             request_id=source and source.request_id)
        rows = await connection.fetch(_INVITE_SQL + " ORDER BY i.created_at DESC, i.id LIMIT 1000", workspace_id)
    now = datetime.now(timezone.utc)
    return [_invite_view(row, now) for row in rows]


async def do_delete_invite(actor: Actor, db, workspace_id: uuid.UUID, invite_id: uuid.UUID, *,
                           source: Source | None = None) -> None:
    """Revoke an invitation (its link stops working)."""
    async with workspaces.transaction(db) as connection:
        await policy.require(connection, actor, "invites.manage", workspace_id=workspace_id,
                             request_id=source and source.request_id)
        deleted = await connection.fetchval(
            "DELETE FROM sygmax_invite WHERE workspace_id = $1 AND id = $2 RETURNING id", workspace_id, invite_id)
        if deleted is None:
            raise Problem(404, "not-found", "No such invitation")
        await audit.record(connection, actor_id=actor.user_id, action="invite.delete", object_type="invite",
                           object_id=invite_id, workspace_id=workspace_id, source=source)


async def do_accept_invite(actor: Actor, db, token: str, *, source: Source | None = None) -> AcceptedInvite:
    """The authenticated actor joins the invitation's workspace."""
    async with workspaces.transaction(db) as connection:
        claimed = await claim(connection, token, actor.email, actor.user_id, source=source)
        row = await connection.fetchrow(
            """SELECT w.name, r.name AS role_name FROM sygmax_workspace w
               LEFT JOIN sygmax_role r ON r.workspace_id = w.id AND r.id = $2 WHERE w.id = $1""",
            claimed.workspace_id, claimed.role_id)
    return AcceptedInvite(claimed.workspace_id, row["name"], claimed.role or row["role_name"], claimed.role_id)


__all__ = ["AcceptedInvite", "ClaimedInvite", "CreatedInvite", "InviteView", "claim", "claim_invite",
           "do_accept_invite", "do_create_invite", "do_delete_invite", "hash_invite_token", "invite_link",
           "list_invites", "new_invite_token", "expiry", "DEFAULT_TTL_S", "MAX_TTL_S"]
