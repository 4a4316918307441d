"""``sygmax migrate [--check]``: apply every enabled plugin's pending schema migrations."""

from __future__ import annotations

import asyncio

import asyncpg
import typer

from cli.output import EXIT_PENDING, console, fail, load_or_fail
from sygmax.db.migrations import MigrationError, migrate as apply_migrations, pending, plan


def migrate(
    check: bool = typer.Option(False, "--check", help="Only report; exit 3 if migrations are pending."),
) -> None:
    """Apply pending migrations in dependency order, in one transaction, under a cluster-wide lock."""
    settings, plugins = load_or_fail()
    try:
        steps = plan([(plugin.name, plugin.migrations) for plugin in plugins.values()])
        if check:
            todo = asyncio.run(pending(settings.database.url, steps))
            if todo:
                for step in todo:
                    console.print(f"pending: {step.module}/{step.name}", highlight=False)
                raise typer.Exit(EXIT_PENDING)
            console.print("[green]no pending migrations[/]")
            return
        applied = asyncio.run(apply_migrations(settings.database.url, steps))
    except MigrationError as exc:
        fail(str(exc))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        fail(f"cannot reach the database (database.url): {exc}")
    for step in applied:
        console.print(f"applied: {step.module}/{step.name}", highlight=False)
    console.print(f"[green]{len(applied)} migration(s) applied[/]" if applied else "[green]already up to date[/]")
