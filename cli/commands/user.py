"""``sygmax user create | list | disable | enable | delete | reset-password``: manage accounts.

Thin over :mod:`sygmax.auth.accounts`: every change goes through the same ``do_<verb>``
actions as the API and writes the same audit rows (actor: the system). ``delete`` erases
personal data (GDPR) and keeps the audit history under the pseudonymous id.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Awaitable, Callable, Optional

import asyncpg
import typer
from redis.exceptions import RedisError
from rich.table import Table

from cli.output import console, fail, load_or_fail
from sygmax.errors import Problem

app = typer.Typer(help="Create, list, disable, enable, erase accounts; password-set links.", no_args_is_help=True)


def _run(work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(kernel)`` with a started kernel; every refusal exits non-zero with its reason."""
    from sygmax.kernel import Kernel

    settings, plugins = load_or_fail()

    async def main() -> Any:
        try:  # a plain connection first: a clear message instead of the pool's warnings
            connection = await asyncpg.connect(settings.database.url, timeout=10)
            await connection.close()
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise ConnectionError(f"cannot reach the database (database.url): {exc}") from exc
        kernel = Kernel.build(settings, plugins)
        await kernel.start()
        try:
            return await work(kernel)
        finally:
            await kernel.stop()

    try:
        return asyncio.run(main())
    except Problem as problem:
        fail(str(problem.detail))
    except ConnectionError as exc:
        fail(str(exc))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, RedisError) as exc:
        fail(f"the database or Redis failed: {type(exc).__name__}: {exc}")


def _status(row) -> str:
    if row["erased_at"] is not None:
        return "erased"
    return "active" if row["is_active"] else "disabled"


@app.command("create")
def create(
    email: str = typer.Option(..., "--email", help="The account's e-mail address (its login)."),
    display_name: Optional[str] = typer.Option(None, "--display-name", help="Shown to others; default: the "
                                                                             "address's local part."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input "
                                                                        "(first line)."),
    admin: bool = typer.Option(False, "--admin", help="Make the account an instance administrator."),
) -> None:
    """Create an account. Without --password-stdin, prints a one-time link to set the password."""
    password = None
    if password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
        if not password:
            fail("--password-stdin: standard input held no password")

    async def work(kernel):
        from sygmax.auth.accounts import do_create_user

        return await do_create_user(None, kernel, email, display_name, password, admin)

    user_id, url = _run(work)
    console.print(f"[green]created[/] {email.strip().lower()} ({user_id}){' as administrator' if admin else ''}",
                  highlight=False, soft_wrap=True)
    if url:
        console.print("one-time link to set the password (send it to the user; it works once):", highlight=False, soft_wrap=True)
        console.print(url, highlight=False, soft_wrap=True)


@app.command("list")
def list_users(as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table.")) -> None:
    """Every account with its state."""

    async def work(kernel):
        return await kernel.db.pool.fetch(
            """SELECT id, email, display_name, is_admin, is_owner, is_active, erased_at, created_at, last_login_at,
                      email_verified_at IS NOT NULL AS verified
               FROM sygmax_user ORDER BY created_at, email""")

    rows = _run(work)
    if as_json:
        out = [{"id": str(row["id"]), "email": row["email"], "display_name": row["display_name"],
                "admin": row["is_admin"], "owner": row["is_owner"], "status": _status(row),
                "verified": row["verified"], "created_at": row["created_at"].isoformat(),
                "last_login_at": row["last_login_at"].isoformat() if row["last_login_at"] else None} for row in rows]
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    table = Table("id", "email", "name", "role", "status", "verified", "last login")
    for row in rows:
        role = "owner" if row["is_owner"] else ("admin" if row["is_admin"] else "user")
        table.add_row(str(row["id"]), row["email"], row["display_name"], role, _status(row),
                      "yes" if row["verified"] else "no",
                      row["last_login_at"].strftime("%Y-%m-%d %H:%M") if row["last_login_at"] else "-")
    console.print(table)
    console.print(f"{len(rows)} account(s)", highlight=False, soft_wrap=True)


def _change(email_or_id: str, action: str) -> tuple[Any, Any]:
    async def work(kernel):
        from sygmax.auth import accounts

        user = await accounts.find_user(kernel, email_or_id)
        if action == "disable":
            return user, await accounts.do_disable_user(None, kernel, user["id"])
        if action == "enable":
            return user, await accounts.do_enable_user(None, kernel, user["id"])
        if action == "delete":
            return user, await accounts.do_erase_user(None, kernel, user["id"])
        return user, await accounts.do_admin_reset_password(None, kernel, user["id"])

    return _run(work)


@app.command("disable")
def disable(email_or_id: str = typer.Argument(..., help="E-mail address or id.")) -> None:
    """Disable an account: no login; its sessions and tokens stop working at once."""
    user, changed = _change(email_or_id, "disable")
    console.print(f"[green]disabled[/] {user['email']}" if changed else f"{user['email']} was disabled already",
                  highlight=False, soft_wrap=True)


@app.command("enable")
def enable(email_or_id: str = typer.Argument(..., help="E-mail address or id.")) -> None:
    """Enable a disabled account again."""
    user, changed = _change(email_or_id, "enable")
    console.print(f"[green]enabled[/] {user['email']}" if changed else f"{user['email']} was enabled already",
                  highlight=False, soft_wrap=True)


@app.command("delete")
def delete(
    email_or_id: str = typer.Argument(..., help="E-mail address or id."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase an account (GDPR): personal data removed, credentials revoked, audit history kept pseudonymously."""

    async def lookup(kernel):
        from sygmax.auth.accounts import find_user

        return await find_user(kernel, email_or_id)

    user = _run(lookup)
    if user["erased_at"] is not None:
        fail(f"{email_or_id} has been erased already")
    if not yes and not typer.confirm(f"Erase {user['email']} ({user['id']})? This cannot be undone", default=False):
        fail("aborted; nothing changed")
    _change(str(user["id"]), "delete")
    console.print(f"[green]erased[/] {user['email']} (id {user['id']} stays in the audit log)", highlight=False, soft_wrap=True)


@app.command("reset-password")
def reset_password(email_or_id: str = typer.Argument(..., help="E-mail address or id.")) -> None:
    """Print a one-time link that sets a new password (the current one works until the link is used)."""
    user, url = _change(email_or_id, "reset")
    console.print(f"one-time password link for {user['email']}:", highlight=False, soft_wrap=True)
    console.print(url, highlight=False, soft_wrap=True)
