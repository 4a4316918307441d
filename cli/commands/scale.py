"""``sygmax scale api=3 realtime=2``: processes per profile, changed without dropping requests."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.node import PREFIX_HELP, parse_counts, state_or_fail
from cli.output import console, fail


def scale(
    counts: list[str] = typer.Argument(..., help="PROFILE=N pairs, e.g. api=3 realtime=2."),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Start or stop processes so each profile runs N; Caddy's upstreams follow."""
    from appliance.caddy import CaddyError
    from appliance.layout import LayoutError
    from appliance.node import NodeError
    from appliance.runner import ProvisionError
    from appliance.scale import scale as apply_scale
    from appliance.supervisor import SupervisorError

    wanted = parse_counts(counts)
    state = state_or_fail(prefix)
    try:
        changes = apply_scale(
            state, wanted, progress=lambda text: console.print(f"  {text}", highlight=False)
        )
    except (LayoutError, NodeError, SupervisorError, ProvisionError, CaddyError) as exc:
        fail(str(exc))
    summary = ", ".join(f"{name}={count}" for name, count in state.processes.items())
    if changes:
        console.print(f"[green]scaled[/]: {summary}", highlight=False)
    else:
        console.print(f"no changes: already {summary}", highlight=False)
