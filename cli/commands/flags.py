"""``sygmax flags list | set NAME ... | delete NAME``: feature flags from the command line.

``set`` changes only what it is given and keeps the rest of an existing flag:

* ``--on``: on for everyone (percentage 100); ``--off``: off for everyone, rules kept (kill switch);
* ``--percentage N``: on for N % of users (a stable hash of flag and user id);
* ``--user ID`` / ``--workspace ID`` (repeatable): on for exactly these users / workspaces
  (the lists are replaced; ``--clear-users`` / ``--clear-workspaces`` empty them).

Without ``--off`` a ``set`` leaves the flag enabled. Every change is audited (actor: the CLI).
Running processes see it within ``gateway.flag_cache_s`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Optional

import asyncpg
import typer
from rich.table import Table

from cli.output import EXIT_CONFIG, EXIT_FAILED, console, fail, load_or_fail
from sygmax import flags
from sygmax.auth.audit import Source
from sygmax.errors import Problem

app = typer.Typer(help="Feature flags: global switch, per user, per workspace, percentage rollout.",
                  no_args_is_help=True)


def _run(work):
    settings, _ = load_or_fail()

    async def main():
        connection = await asyncpg.connect(settings.database.url, timeout=10)
        try:
            return await work(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(main())
    except Problem as problem:
        # Bad input (a field at fault) exits 2 like a usage error; a missing flag or a failure exits 1.
        fail(problem.detail, EXIT_CONFIG if problem.status_code == 400 or problem.field else EXIT_FAILED)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        fail(f"cannot reach the database (database.url): {exc}")


def _uuids(values: list[str], option: str) -> list[uuid.UUID]:
    parsed = []
    for value in values:
        try:
            parsed.append(uuid.UUID(value))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a UUID", param_hint=option) from None
    return parsed


def _summary(flag: flags.Flag) -> str:
    if not flag.enabled:
        return "off (kill switch)"
    if flag.percentage >= 100:
        return "on for everyone"
    parts = [f"{flag.percentage}% of users"] if flag.percentage else []
    if flag.users:
        parts.append(f"{len(flag.users)} user(s)")
    if flag.workspaces:
        parts.append(f"{len(flag.workspaces)} workspace(s)")
    return "on for " + ", ".join(parts) if parts else "on for nobody yet (no rule)"


def _as_json(flag: flags.Flag) -> dict:
    return {"name": flag.name, "enabled": flag.enabled, "percentage": flag.percentage,
            "users": [str(u) for u in flag.users], "workspaces": [str(w) for w in flag.workspaces],
            "description": flag.description, "updated_at": flag.updated_at.isoformat()}


@app.command("list")
def list_flags(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every flag and whom it is on for."""
    found = _run(lambda connection: flags.list_flags(None, connection))
    if as_json:
        console.print_json(json.dumps([_as_json(flag) for flag in found]))
        return
    if not found:
        console.print("no feature flags")
        return
    table = Table("name", "state", "description", "updated")
    for flag in found:
        table.add_row(flag.name, _summary(flag), flag.description, f"{flag.updated_at:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("set")
def set_flag(
    name: str = typer.Argument(..., help="Flag name: a-z, 0-9, '_', '.', '-', starting with a letter."),
    on: Optional[bool] = typer.Option(None, "--on/--off", help="On for everyone / off for everyone."),
    percentage: Optional[int] = typer.Option(None, "--percentage", min=0, max=100,
                                             help="On for this percentage of users."),
    user: list[str] = typer.Option([], "--user", help="A user id the flag is on for (repeatable)."),
    workspace: list[str] = typer.Option([], "--workspace", help="A workspace id the flag is on in (repeatable)."),
    clear_users: bool = typer.Option(False, "--clear-users", help="Remove every listed user."),
    clear_workspaces: bool = typer.Option(False, "--clear-workspaces", help="Remove every listed workspace."),
    description: Optional[str] = typer.Option(None, "--description", help="What the flag switches."),
) -> None:
    """Create or change a flag (only what is given changes)."""
    if on is True and percentage is not None and percentage != 100:
        raise typer.BadParameter("--on means everyone; give --percentage alone for a partial rollout",
                                 param_hint="--on")
    if (user and clear_users) or (workspace and clear_workspaces):
        raise typer.BadParameter("give ids or --clear-..., not both", param_hint="--clear-users/--clear-workspaces")
    users, workspaces = _uuids(user, "--user"), _uuids(workspace, "--workspace")
    if not flags.FLAG_NAME.match(name) or name == "me":
        fail(f"{name!r} is not a flag name: 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter "
             f"(not 'me')", EXIT_CONFIG)
    if description is not None and len(description) > 500:
        raise typer.BadParameter("at most 500 characters", param_hint="--description")

    async def work(connection):
        try:
            current = await flags.get_flag(None, connection, name)
        except Problem as problem:
            if problem.status_code != 404:
                raise
            current = None
        data = flags.FlagIn(
            enabled=on is not False,
            percentage=(100 if on is True else percentage if percentage is not None
                        else current.percentage if current else 0),
            users=[] if clear_users else users or (list(current.users) if current else []),
            workspaces=[] if clear_workspaces else workspaces or (list(current.workspaces) if current else []),
            description=description if description is not None else (current.description if current else ""),
        )
        return await flags.do_set_flag(None, connection, name, data, source=Source())

    flag, created = _run(work)
    console.print(f"{'created' if created else 'updated'} flag [bold]{flag.name}[/]: {_summary(flag)}",
                  highlight=False)


@app.command("delete")
def delete_flag(name: str = typer.Argument(..., help="Flag name.")) -> None:
    """Delete a flag (it is then off for everyone)."""
    _run(lambda connection: flags.do_delete_flag(None, connection, name, source=Source()))
    console.print(f"deleted flag [bold]{name}[/]", highlight=False)
