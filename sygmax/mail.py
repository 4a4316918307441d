"""Outgoing mail through the configured relay (``[smtp]``): verification links, resets, invitations.

One function, :func:`send_mail`: it builds a plain-text (optionally multipart/alternative
with HTML) message and hands it to the relay with aiosmtplib, honouring ``use_tls``
(implicit TLS, usually port 465), ``starttls`` (upgrade, usually port 587), optional
login and ``timeout_s``. Every failure (refused connection, timeout, TLS, authentication,
rejected recipient) becomes a :class:`MailError` that names what went wrong but never the
password.

Header injection: a recipient or subject containing CR, LF (or any other control
character) is refused before anything is sent, so a caller can never smuggle extra
headers (``Bcc:``) or a second message into the SMTP conversation.
"""

from __future__ import annotations

import re
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from sygmax.config import SmtpSettings

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_ADDRESS = re.compile(r"^[^@\s<>()\[\]\\,;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
MAX_SUBJECT = 998


class MailError(Exception):
    """The message could not be built or the relay did not accept it."""


def _check_address(value: str, what: str) -> str:
    if not isinstance(value, str) or _CONTROL.search(value):
        raise MailError(f"{what} contains a control character (CR/LF are refused)")
    if len(value) > 254 or not _ADDRESS.match(value):
        raise MailError(f"{what} is not a plain e-mail address")
    return value


def _sender(settings: SmtpSettings) -> tuple[str, str]:
    """(header value, envelope address) from ``smtp.sender`` ('Name <addr>' or a bare address)."""
    if _CONTROL.search(settings.sender):
        raise MailError("smtp.sender contains a control character")
    name, address = parseaddr(settings.sender)
    _check_address(address, "smtp.sender")
    local, _, domain = address.partition("@")
    return str(Address(display_name=name, username=local, domain=domain)), address


def build_message(settings: SmtpSettings, to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    _check_address(to, "recipient")
    if not isinstance(subject, str) or _CONTROL.search(subject):
        raise MailError("subject contains a control character (CR/LF are refused)")
    if len(subject) > MAX_SUBJECT:
        raise MailError(f"subject is longer than {MAX_SUBJECT} characters")
    header_from, envelope_from = _sender(settings)
    message = EmailMessage()
    message["From"] = header_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=envelope_from.partition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


async def send_mail(settings: SmtpSettings, to: str, subject: str, text: str, html: str | None = None) -> None:
    """Send one message to ``to`` through the relay; raise :class:`MailError` if it is not accepted."""
    message = build_message(settings, to, subject, text, html)
    envelope_from = _sender(settings)[1]
    if settings.use_tls and settings.starttls:
        raise MailError("smtp.use_tls and smtp.starttls are exclusive: pick implicit TLS or STARTTLS")
    context = ssl.create_default_context() if (settings.use_tls or settings.starttls) else None
    try:
        await aiosmtplib.send(
            message,
            sender=envelope_from,
            recipients=[to],
            hostname=settings.host,
            port=settings.port,
            username=settings.username or None,
            password=settings.password or None,
            use_tls=settings.use_tls,
            start_tls=settings.starttls if not settings.use_tls else False,
            tls_context=context,
            timeout=settings.timeout_s,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise MailError(f"the relay {settings.host}:{settings.port} refused the login "
                        f"(smtp.username/smtp.password): {exc.code}") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"the relay refused the recipient: {[str(e) for e in exc.recipients]}"[:300]) from exc
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
        raise MailError(f"cannot reach the relay {settings.host}:{settings.port} (smtp.host/smtp.port): "
                        f"{exc}"[:300]) from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise MailError(f"the relay {settings.host}:{settings.port} did not answer within "
                        f"{settings.timeout_s:g} s (smtp.timeout_s)") from exc
    except aiosmtplib.SMTPException as exc:
        raise MailError(f"sending through {settings.host}:{settings.port} failed: "
                        f"{type(exc).__name__}: {exc}"[:300]) from exc
    except (OSError, ssl.SSLError) as exc:
        raise MailError(f"cannot reach the relay {settings.host}:{settings.port} (smtp.host/smtp.port): "
                        f"{exc}"[:300]) from exc


__all__ = ["MailError", "send_mail", "build_message"]
