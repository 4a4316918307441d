"""``sygmax status``: every process and service of the node, with health, in one table."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.node import PREFIX_HELP, state_or_fail
from cli.output import console


def status(
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
    migrations: bool = typer.Option(
        True, "--migrations/--no-migrations", help="Check for pending migrations."
    ),
) -> None:
    """Processes per profile (PID, uptime, health), PostgreSQL, Redis, storage, Caddy, TLS, migrations.

    Exits 1 when anything is unhealthy.
    """
    from rich.table import Table

    from appliance.status import collect, expiry_text, uptime_text

    state = state_or_fail(prefix)
    node = collect(state, migrations=migrations)
    table = Table(title=f"Sygmax {state.version} at {state.public_url}", title_justify="left")
    for column in ("profile", "process", "port", "state", "pid", "uptime", "health"):
        table.add_column(column)
    for row in node.processes:
        colour = "green" if row.health.ok else "red"
        table.add_row(
            row.profile,
            row.program,
            str(row.port),
            row.state,
            str(row.pid or "-"),
            uptime_text(row.uptime_s),
            f"[{colour}]{row.health.detail}[/]",
        )
    console.print(table)
    services = Table(show_header=True)
    services.add_column("service")
    services.add_column("status")
    services.add_column("detail")
    if not node.supervisor_running:
        services.add_row("supervisord", "[red]down[/]", "nothing runs; start it with: sygmax up")
    for name, probe in node.services.items():
        services.add_row(name, "[green]ok[/]" if probe.ok else "[red]down[/]", probe.detail)
    services.add_row(
        "tls",
        "[green]ok[/]" if node.tls_expiry else "[red]down[/]",
        ("internal CA, " if state.tls_internal else "ACME, ") + f"expires {expiry_text(node.tls_expiry)}",
    )
    services.add_row("version", "", state.version)
    if migrations:
        if node.pending_migrations is None:
            services.add_row("migrations", "[red]unknown[/]", node.migrations_error)
        elif node.pending_migrations:
            services.add_row("migrations", "[yellow]pending[/]", ", ".join(node.pending_migrations))
        else:
            services.add_row("migrations", "[green]ok[/]", "none pending")
    console.print(services)
    if not node.healthy:
        raise typer.Exit(1)
