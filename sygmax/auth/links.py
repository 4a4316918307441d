"""One-time links sent by e-mail: verify an address, reset (or first set) a password.

A link carries 256 random bits; only their SHA-256 is stored. A link works once, until it
expires (``auth.verification_link_ttl_s``, ``auth.reset_link_ttl_s``), and only while the
account still has the address it was sent to. Issuing a new link of the same purpose
voids the earlier ones. The token travels in the URL *fragment*
(``<public_url>/reset-password#token=...``), which browsers never send to a server, so it
stays out of access logs and Referer headers; the web UI reads it and POSTs it to the API.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import asyncpg
import structlog

from sygmax.errors import Problem
from sygmax.mail import MailError, send_mail

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth")

PAGES = {"verify": "verify-email", "reset": "reset-password"}
LINK_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{20,100}$"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_link(connection: asyncpg.Connection, user_id: uuid.UUID, purpose: str, email: str,
                      ttl_s: int) -> str:
    """A new link token for ``purpose`` (voiding earlier unused ones); returns the plaintext token."""
    token = secrets.token_urlsafe(32)
    await connection.execute(
        "UPDATE sygmax_email_link SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user_id, purpose)
    await connection.execute(
        """INSERT INTO sygmax_email_link (token_hash, user_id, purpose, email, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        _hash(token), user_id, purpose, email, datetime.now(timezone.utc) + timedelta(seconds=ttl_s))
    return token


def link_url(public_url: str, purpose: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/{PAGES[purpose]}#token={token}"


_INVALID = "The link is invalid, already used or expired; ask for a new one"


def _valid_form(token: str) -> bool:
    return re.match(LINK_TOKEN_PATTERN, token) is not None


async def peek_link(connection: asyncpg.Connection, token: str, purpose: str) -> asyncpg.Record:
    """The live link's (user_id, email) without using it; 404 ``invalid-link`` otherwise."""
    row = await connection.fetchrow(
        """SELECT l.user_id, l.email FROM sygmax_email_link l JOIN sygmax_user u ON u.id = l.user_id
           WHERE l.token_hash = $1 AND l.purpose = $2 AND l.used_at IS NULL AND l.expires_at > now()
             AND lower(u.email) = lower(l.email) AND u.erased_at IS NULL""",
        _hash(token), purpose) if _valid_form(token) else None
    if row is None:
        log.warning("auth_denied", reason="invalid-link", purpose=purpose)
        raise Problem(404, "invalid-link", _INVALID, field="token")
    return row


async def use_link(connection: asyncpg.Connection, token: str, purpose: str) -> asyncpg.Record:
    """Mark the link used (in the caller's transaction) and return (user_id, email); exactly once."""
    row = await connection.fetchrow(
        """UPDATE sygmax_email_link l SET used_at = now()
           FROM sygmax_user u
           WHERE l.token_hash = $1 AND l.purpose = $2 AND l.used_at IS NULL AND l.expires_at > now()
             AND u.id = l.user_id AND lower(u.email) = lower(l.email) AND u.erased_at IS NULL
           RETURNING l.user_id, l.email""",
        _hash(token), purpose) if _valid_form(token) else None
    if row is None:
        log.warning("auth_denied", reason="invalid-link", purpose=purpose)
        raise Problem(404, "invalid-link", _INVALID, field="token")
    return row


def _message(purpose: str, url: str, ttl_s: int, display_name: str) -> tuple[str, str]:
    hours = ttl_s / 3600
    lifetime = f"{hours:g} hour{'s' if hours != 1 else ''}" if hours >= 1 else f"{ttl_s // 60} minutes"
    if purpose == "verify":
        return ("Confirm your e-mail address",
                f"Hello {display_name},\n\nconfirm your e-mail address for Sygmax by opening this link:\n\n"
                f"{url}\n\nThe link works once and expires in {lifetime}. If you did not sign up, ignore this "
                "message.\n")
    return ("Set your Sygmax password",
            f"Hello {display_name},\n\nsomeone (hopefully you) asked to set the password of your Sygmax "
            f"account. Open this link to choose a new one:\n\n{url}\n\nThe link works once and expires in "
            f"{lifetime}. If you did not ask for it, ignore this message: your password stays as it is.\n")


async def mail_link(kernel: "Kernel", purpose: str, email: str, display_name: str, token: str, ttl_s: int) -> None:
    """Send the link; failures are logged (the caller answered already), never the token."""
    url = link_url(kernel.settings.server.public_url, purpose, token)
    subject, text = _message(purpose, url, ttl_s, display_name)
    try:
        await send_mail(kernel.settings.smtp, email, subject, text)
    except MailError as exc:
        log.error("mail_failed", purpose=purpose, error=str(exc))
        return
    log.info("mail_sent", purpose=purpose)


async def mail_text(kernel: "Kernel", email: str, subject: str, text: str, purpose: str) -> None:
    try:
        await send_mail(kernel.settings.smtp, email, subject, text)
    except MailError as exc:
        log.error("mail_failed", purpose=purpose, error=str(exc))
