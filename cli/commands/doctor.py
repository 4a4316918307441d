"""``sygmax doctor``: check the host and the node; each problem comes with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.node import PREFIX_HELP
from cli.output import console


def doctor(prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False)) -> None:
    """Ports, disk, memory, versions, clock, TLS, processes, services, migrations. Exit 1 on errors."""
    from rich.table import Table

    from appliance.doctor import diagnose

    state, findings = diagnose(prefix)
    table = Table(title="sygmax doctor" + (f" ({state.prefix})" if state else ""), title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("finding")
    table.add_column("fix")
    colours = {"ok": "green", "warning": "yellow", "error": "red"}
    for finding in findings:
        table.add_row(
            finding.check, f"[{colours[finding.level]}]{finding.level}[/]", finding.message, finding.fix
        )
    console.print(table)
    errors = [finding for finding in findings if finding.level == "error"]
    warnings = [finding for finding in findings if finding.level == "warning"]
    console.print(f"{len(errors)} error(s), {len(warnings)} warning(s)", highlight=False)
    if errors:
        raise typer.Exit(1)
