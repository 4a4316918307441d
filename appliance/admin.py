"""The first administrator, created once by ``sygmax install --admin-email``.

Accounts are made one way only: by the identity CLI, ``sygmax user create --admin`` (thin
over ``sygmax.auth.accounts.do_create_user``, with its audit row). It runs as the node's
service user with the node's config, so anything it writes (JWT keys on first use) belongs
to that user. Without a password it prints a one-time link to set one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass

from appliance.layout import ApplianceState


@dataclass(frozen=True)
class AdminResult:
    created: bool
    message: str  # what to tell the operator (the one-time link), shown once


def _environ(state: ApplianceState) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
    env["SYGMAX_CONFIG"] = str(state.layout.config_file)
    return env


async def _exists(database_url: str, email: str) -> bool:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        return bool(
            await connection.fetchval(
                "SELECT 1 FROM sygmax_user WHERE lower(email) = lower($1)", email.strip()
            )
        )
    finally:
        await connection.close()


def ensure_admin(state: ApplianceState, database_url: str, email: str, password: str | None) -> AdminResult:
    """Create the administrator ``email`` unless an account with that address exists."""
    if asyncio.run(_exists(database_url, email)):
        return AdminResult(False, f"administrator {email} already exists")
    command = [
        "runuser",
        "-u",
        state.service_user,
        "--",
        state.sygmax_bin,
        "user",
        "create",
        "--email",
        email,
        "--admin",
    ]
    if password is not None:
        command.append("--password-stdin")
    done = subprocess.run(
        command,
        input=(password + "\n") if password is not None else None,
        capture_output=True,
        text=True,
        env=_environ(state),
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sygmax user create failed: {(done.stderr or done.stdout).strip()}")
    return AdminResult(True, done.stdout.strip())
