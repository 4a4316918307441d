"""``sygmax uninstall [--keep-data]``: stop the node and remove what ``sygmax install`` created."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cli.node import PREFIX_HELP, state_or_fail
from cli.output import console, fail


def uninstall(
    keep_data: bool = typer.Option(
        False,
        "--keep-data",
        help="Keep databases, objects, keys, certificates and secrets for a later install.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Stop every process and remove the node's files (all data too, unless --keep-data)."""
    from appliance.uninstall import uninstall as remove

    if os.geteuid() != 0:
        fail("sygmax uninstall must run as root: sudo sygmax uninstall")
    state = state_or_fail(prefix)
    if not yes:
        what = "the node's programs and config" if keep_data else "the node and ALL ITS DATA"
        if not typer.confirm(f"Remove {what} under {state.prefix}?", default=False):
            fail("cancelled; nothing was changed")
    for line in remove(state, keep_data):
        console.print(f"  {line}", highlight=False)
    console.print("[green]uninstalled[/]" + (" (data kept; `sygmax install` reuses it)" if keep_data else ""))
