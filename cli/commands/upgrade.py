"""``sygmax upgrade [--to PATH_OR_VERSION] [--yes]`` and ``sygmax upgrade --rollback``.

Thin over :mod:`appliance.upgrade`; stage 2 (``--finish-from``, hidden) is this same command run
from the new release's venv.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.node import PREFIX_HELP, state_or_fail
from cli.output import console, fail

LEVEL_STYLE = {"ok": "green", "warning": "yellow", "error": "red"}


class _Printer:
    def step(self, title: str) -> None:
        console.print(f"[bold]==> {title}[/]", highlight=False)

    def note(self, message: str) -> None:
        console.print(f"  {message}", highlight=False)


def upgrade(
    to: str | None = typer.Option(
        None,
        "--to",
        help="A Sygmax checkout, a .whl/.tar.gz file, or a version on the package index "
        "(default: the newest there).",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (scripts)."),
    rollback: bool = typer.Option(
        False, "--rollback", help="Switch back to the release that served before the last upgrade."
    ),
    skip_backup: bool = typer.Option(
        False, "--skip-backup", help="Do not take the automatic pre-upgrade backup (you have a fresh one)."
    ),
    health_timeout: float = typer.Option(
        90.0,
        "--health-timeout",
        min=5,
        max=3600,
        help="Seconds each new process has to answer /healthz before the upgrade rolls back.",
    ),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
    finish_from: str | None = typer.Option(None, "--finish-from", hidden=True),
) -> None:
    """Install a new release beside the running one, migrate, restart every process onto it one at a
    time behind Caddy, and roll back by itself if a new process is not healthy."""
    from appliance import upgrade as up

    state = state_or_fail(prefix)
    printer = _Printer()
    if rollback and (to or finish_from):
        fail("--rollback takes no --to: it returns to the release recorded as the previous one")
    try:
        if rollback:
            venv, version = up.rollback_target(state)
            console.print(f"roll back {up.running_version(state)} -> {version} ({venv})", highlight=False)
            if not yes:
                typer.confirm("Restart every process onto that release now?", abort=True)
            started = time.monotonic()
            old, new, programs = up.rollback(state, printer, health_timeout)
            console.print(
                f"[green]rolled back[/] {old} -> {new} in {time.monotonic() - started:.0f}s; "
                f"{len(programs)} process(es) restarted",
                highlight=False,
            )
            return
        if finish_from is not None:
            report = up.finish(state, Path(finish_from), printer, health_timeout)
            console.print(
                f"[green]upgraded[/] {report.old_version} -> {report.new_version} in {report.seconds:.0f}s: "
                f"{len(report.migrations)} migration(s) applied; "
                f"{len(report.restarted)} process(es) restarted",
                highlight=False,
            )
            return
        plan = up.prepare(state, to)
        console.print(
            f"upgrade {plan.current} -> {plan.target.version} from {plan.target.source}", highlight=False
        )
        for finding in plan.findings:
            style = LEVEL_STYLE.get(finding.level, "white")
            fix = f" (fix: {finding.fix})" if finding.fix and finding.level != "ok" else ""
            console.print(
                f"  [{style}]{finding.level:<7}[/] {finding.check}: {finding.message}{fix}", highlight=False
            )
        if not yes:
            backup = "" if skip_backup else "back up the node, "
            typer.confirm(f"Install it, {backup}migrate and restart every process onto it?", abort=True)
        if skip_backup:
            printer.step("No backup (--skip-backup)")
        else:
            printer.step("Backing up the node")
            up.pre_upgrade_backup(state, printer)
        printer.step(f"Installing {plan.target.version} beside {plan.current}")
        venv = up.install_release(state, plan.target, printer)
        code = up.run_stage2(state, venv, health_timeout)
    except up.UpgradeRefused as exc:
        errors = [finding for finding in exc.findings if finding.level == "error"]
        if errors:
            fail(
                "pre-flight failed, nothing was changed:\n"
                + "\n".join(
                    f"  {finding.check}: {finding.message}"
                    + (f" (fix: {finding.fix})" if finding.fix else "")
                    for finding in errors
                )
            )
        fail(f"{exc}; nothing was changed" if "nothing was changed" not in str(exc) else str(exc))
    except up.UpgradeError as exc:
        fail(str(exc))
    if code != 0:
        raise typer.Exit(code)
