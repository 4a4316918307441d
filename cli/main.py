"""The ``sygmax`` command: one typer app, one module per command under ``cli/commands/``."""

from __future__ import annotations

import typer

from cli.commands import config as config_command
from cli.commands import migrate as migrate_command
from cli.commands import run as run_command
from cli.commands import version as version_command

app = typer.Typer(
    name="sygmax",
    help="Sygmax: install, run and operate the self-hosted collaboration platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("run")(run_command.run)
app.command("migrate")(migrate_command.migrate)
app.command("version")(version_command.version)
app.add_typer(config_command.app, name="config")


def main() -> None:
    app()
