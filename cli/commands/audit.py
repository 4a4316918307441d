"""``sygmax audit verify | list``: check the audit log's hash chain, read recent entries."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Optional

import asyncpg
import msgspec
import typer
from rich.table import Column, Table

from cli.output import console, fail, load_or_fail
from sygmax.auth.audit import verify_chain
from sygmax.auth.audit_query import MAX_LIMIT, AuditFilter, query
from sygmax.errors import Problem

app = typer.Typer(help="Verify and read the append-only audit log.", no_args_is_help=True)

EXIT_BROKEN = 1


async def _with_connection(url: str, work):
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await work(connection)
    finally:
        await connection.close()


def _run(work):
    settings, _ = load_or_fail()
    try:
        return asyncio.run(_with_connection(settings.database.url, work))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        fail(f"cannot read the audit log (database.url): {exc}")


@app.command("verify")
def verify() -> None:
    """Recompute the hash chain; exit 0 if intact, 1 naming the first altered or missing entry."""
    report = _run(verify_chain)
    if report.ok:
        console.print(f"[green]audit log intact[/]: {report.rows} entries, hash chain verified", highlight=False)
        return
    fail(f"audit log broken at entry {report.first_bad_seq}: {report.problem} "
         f"(checked {report.rows} entries)", EXIT_BROKEN)


def _parse_time(value: Optional[str], name: str) -> Optional[datetime]:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 time like 2025-01-31T12:00:00Z",
                                 param_hint=f"--{name}") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a time zone, e.g. 2025-01-31T12:00:00Z", param_hint=f"--{name}")
    return parsed


def _parse_uuid(value: Optional[str], name: str) -> Optional[uuid.UUID]:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a UUID", param_hint=f"--{name}") from None


@app.command("list")
def list_entries(
    as_json: bool = typer.Option(False, "--json", help="Print JSON ({items, next_cursor}) instead of a table."),
    limit: int = typer.Option(50, "--limit", min=1, max=MAX_LIMIT, help="How many entries, newest first."),
    action: Optional[str] = typer.Option(None, "--action", help="Exact action, or a prefix like member.*"),
    actor: Optional[str] = typer.Option(None, "--actor", help="Actor's user id."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="Workspace id."),
    object_type: Optional[str] = typer.Option(None, "--object-type"),
    object_id: Optional[str] = typer.Option(None, "--object-id"),
    since: Optional[str] = typer.Option(None, "--since", help="ISO-8601 time with zone."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO-8601 time with zone."),
    cursor: Optional[int] = typer.Option(None, "--cursor", min=1, help="next_cursor of the previous page."),
) -> None:
    """List audit entries, newest first."""
    filters = AuditFilter(_parse_uuid(actor, "actor"), action, object_type, object_id,
                          _parse_uuid(workspace, "workspace"), _parse_time(since, "since"),
                          _parse_time(until, "until"), cursor, limit)
    try:
        filters.check()
    except Problem as exc:
        fail(exc.detail, 2)
    page = _run(lambda connection: query(connection, filters))
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(page), ensure_ascii=False))
        return
    # Ids are shortened to 8 characters here; --json prints them whole.
    table = Table(Column("seq", no_wrap=True), Column("at (UTC)", no_wrap=True), Column("action", no_wrap=True),
                  "object", Column("actor", no_wrap=True), Column("workspace", no_wrap=True), "details")
    for entry in page.items:
        table.add_row(str(entry.seq), entry.at.strftime("%Y-%m-%d %H:%M:%S"), entry.action,
                      f"{entry.object_type} {entry.object_id or ''}".strip(), str(entry.actor_id or "-")[:8],
                      str(entry.workspace_id or "-")[:8], json.dumps(entry.details, ensure_ascii=False)[:80])
    console.print(table)
    if page.next_cursor is not None:
        console.print(f"more: --cursor {page.next_cursor}", highlight=False)
