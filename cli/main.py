"""The ``sygmax`` command: one typer app, one module per command under ``cli/commands/``."""

from __future__ import annotations

import typer

from cli.commands import ai as ai_command
from cli.commands import audit as audit_command
from cli.commands import auth as auth_command
from cli.commands import backup as backup_command
from cli.commands import config as config_command
from cli.commands import flags as flags_command
from cli.commands import doctor as doctor_command
from cli.commands import install as install_command
from cli.commands import logs as logs_command
from cli.commands import migrate as migrate_command
from cli.commands import restore as restore_command
from cli.commands import run as run_command
from cli.commands import scale as scale_command
from cli.commands import status as status_command
from cli.commands import uninstall as uninstall_command
from cli.commands import updown as updown_command
from cli.commands import upgrade as upgrade_command
from cli.commands import user as user_command
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
app.command("install")(install_command.install)
app.command("status")(status_command.status)
app.command("logs")(logs_command.logs)
app.command("up")(updown_command.up)
app.command("down")(updown_command.down)
app.command("restart")(updown_command.restart)
app.command("scale")(scale_command.scale)
app.command("doctor")(doctor_command.doctor)
app.command("uninstall")(uninstall_command.uninstall)
app.command("restore")(restore_command.restore)
app.command("upgrade")(upgrade_command.upgrade)
app.add_typer(config_command.app, name="config")
app.add_typer(flags_command.app, name="flags")
app.add_typer(audit_command.app, name="audit")
app.add_typer(user_command.app, name="user")
app.add_typer(auth_command.app, name="auth")
app.add_typer(backup_command.app, name="backup")
app.add_typer(ai_command.app, name="ai")


def main() -> None:
    app()
