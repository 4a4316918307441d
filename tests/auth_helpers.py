"""Helpers for the account, session and token tests: a real SMTP server (aiosmtpd), apps with
auth settings overridden, and small request/database helpers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient

from sygmax.config import load_settings
from sygmax.kernel import Kernel
from sygmax.plugins import discover_plugins
from tests.conftest import assert_problem  # noqa: F401 (re-exported to the auth tests)
from tests.servers import free_port

PASSWORD = "correct horse battery"


@dataclass
class Mailbox:
    """Messages the test SMTP server accepted."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"

    async def wait(self, count: int = 1, timeout: float = 15.0) -> list[email.message.EmailMessage]:
        """Wait until ``count`` messages have arrived (not a timed assertion: the timeout only ends a hang)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")
            await asyncio.sleep(0.02)
        return self.messages

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


def link_token(message: email.message.EmailMessage) -> str:
    """The one-time token of the link in a message (``.../verify-email#token=...``)."""
    body = message.get_body(("plain",)).get_content()
    match = re.search(r"https?://\S+#token=([A-Za-z0-9_-]+)", body)
    assert match, body
    return match.group(1)


@pytest.fixture
def smtp_server():
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    mailbox.port = port
    yield mailbox
    controller.stop()


@pytest.fixture
def auth_settings(environ, tmp_path, smtp_server):
    """``auth_settings(SYGMAX_AUTH_REGISTRATION="open", ...)``: test settings with overrides, mail to the test server."""

    def build(**overrides: str):
        env = {**environ, "SYGMAX_SMTP_HOST": "127.0.0.1", "SYGMAX_SMTP_PORT": str(smtp_server.port),
               "SYGMAX_SMTP_SENDER": "Sygmax <noreply@example.org>", "SYGMAX_AUTH_COOKIE_SECURE": "false",
               "SYGMAX_SERVER_PUBLIC_URL": "https://sygmax.example.org", **overrides}
        return load_settings(tmp_path / "absent.toml", environ=env)

    return build


@pytest.fixture
async def auth_client(make_app, auth_settings):
    """``async with auth_client(**overrides) as client``: an app built with those settings."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_client(plugins=None, **overrides: str):
        app = make_app("api", plugins=plugins, app_settings=auth_settings(**overrides))
        async with AsyncTestClient(app=app, base_url="https://testserver.local") as client:
            yield client

    return open_client


@pytest.fixture
async def kernel_for(auth_settings):
    """A started Kernel (in the test's event loop) for calling actions directly."""
    kernels: list[Kernel] = []

    async def build(**overrides: str) -> Kernel:
        kernel = Kernel.build(auth_settings(**overrides), discover_plugins())
        await kernel.start()
        kernels.append(kernel)
        return kernel

    yield build
    for kernel in kernels:
        await kernel.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def snapshot(connection: asyncpg.Connection) -> dict[str, list]:
    """Every row of the account tables, to prove a refused request changed nothing."""
    tables = ("sygmax_user", "sygmax_api_token", "sygmax_session", "sygmax_refresh_token", "sygmax_email_link",
              "sygmax_audit")
    return {table: [dict(row) for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY 1")]
            for table in tables}


async def register(client, email: str, password: str = PASSWORD, name: str = "Someone", **extra):
    return await client.post("/api/v1/auth/register",
                             json={"email": email, "password": password, "display_name": name, **extra})


async def login(client, email: str, password: str = PASSWORD) -> dict:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()
