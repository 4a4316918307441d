"""``sygmax up | down | restart [TARGET]``: start, stop or restart the node or part of it.

TARGET is a profile (all its processes), a service (postgresql, redis, caddy) or one program
(sygmax-api-2); without it, the whole node. Restarts roll: one process at a time, each healthy
before the next goes down, so Caddy always has an api process to send requests to.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cli.node import PREFIX_HELP, state_or_fail
from cli.output import console, fail

TARGET_HELP = "Profile (api, realtime, worker, scheduler), service (postgresql, redis, caddy) or program."


def _run(action, prefix: Path | None, target: str | None, verb: str) -> None:
    from appliance.layout import LayoutError
    from appliance.node import NodeError
    from appliance.supervisor import SupervisorError

    state = state_or_fail(prefix)
    try:
        done = action(state, target)
    except (LayoutError, NodeError, SupervisorError) as exc:
        fail(str(exc))
    if done:
        console.print(f"[green]{verb}[/]: {', '.join(done)}", highlight=False)
    else:
        console.print(
            f"nothing to do: {target or 'the node'} already {'running' if verb == 'started' else verb}",
            highlight=False,
        )


def up(
    target: str | None = typer.Argument(None, help=TARGET_HELP),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Start the node (supervisord first, e.g. after a reboot without systemd) or part of it."""
    from appliance.node import start

    _run(start, prefix, target, "started")


def down(
    target: str | None = typer.Argument(None, help=TARGET_HELP),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Stop the node (every process and supervisord) or part of it."""
    from appliance.node import stop

    _run(stop, prefix, target, "stopped")


def restart(
    target: str | None = typer.Argument(None, help=TARGET_HELP),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
) -> None:
    """Restart one process at a time, waiting for each to be healthy."""
    from appliance.node import restart as rolling_restart

    _run(
        lambda state, name: rolling_restart(state, name, progress=lambda text: console.print(text)),
        prefix,
        target,
        "restarted",
    )
