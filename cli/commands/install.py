"""``sygmax install``: provision this host as a working Sygmax node (re-run to converge or resume)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from appliance.caddy import CaddyError
from appliance.install import InstallOptions, PreflightFailed, Reporter
from appliance.install import install as run_install
from appliance.layout import LayoutError
from appliance.node import NodeError
from appliance.runner import ProvisionError, TaskEvent
from appliance.supervisor import SupervisorError
from cli.node import PREFIX_HELP, parse_counts
from cli.output import console, errors, fail


class _RichReporter(Reporter):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.current = progress.add_task("Checking the host", total=None)
        self.title = "Checking the host"
        self.tasks = 0

    def step(self, title: str) -> None:
        self.progress.console.print(f"[bold]==>[/] {title}", highlight=False)
        self.title = title
        self.progress.update(self.current, description=title)

    def task(self, event: TaskEvent) -> None:
        if event.kind == "start":
            self.tasks += 1
            label = f"{event.role}: {event.task}" if event.role else event.task
            self.progress.update(self.current, description=f"{self.title} [dim]({self.tasks}) {label}[/]")
        elif event.kind == "changed":
            label = f"{event.role}: {event.task}" if event.role else event.task
            self.progress.console.print(f"    [yellow]changed[/] {label}", highlight=False)

    def note(self, message: str) -> None:
        self.progress.console.print(f"    {message}", highlight=False)


def install(
    domain: str | None = typer.Option(
        None,
        help="Name users reach the node by. A public domain gets a "
        "Let's Encrypt certificate; localhost or an IP gets one from "
        "Caddy's internal CA. Default: localhost.",
    ),
    email: str | None = typer.Option(None, help="Contact e-mail for the ACME (Let's Encrypt) account."),
    admin_email: str | None = typer.Option(None, "--admin-email", help="Create this first administrator."),
    admin_password_stdin: bool = typer.Option(
        False, "--admin-password-stdin", help="Read the administrator's password from stdin."
    ),
    prefix: Path | None = typer.Option(None, "--prefix", help=PREFIX_HELP, file_okay=False),
    http_port: int | None = typer.Option(None, "--http-port", help="Public HTTP port (default 80)."),
    https_port: int | None = typer.Option(None, "--https-port", help="Public HTTPS port (default 443)."),
    base_port: int | None = typer.Option(
        None, "--base-port", help="First of the 83 loopback ports the node uses (default 8000)."
    ),
    processes: list[str] = typer.Option(
        [], "--processes", help="Processes per profile, e.g. api=3 (repeatable; default: profiles/)."
    ),
    storage_endpoint: str | None = typer.Option(
        None,
        "--storage-endpoint",
        help="s3://ACCESS:SECRET@host:port/bucket for MinIO/S3; default: local disk.",
    ),
    force_os: bool = typer.Option(False, "--force-os", help="Install on an unsupported OS anyway."),
    no_packages: bool = typer.Option(
        False, "--no-packages", help="Do not install apt packages (they must be present)."
    ),
) -> None:
    """Install PostgreSQL, Redis, storage, Caddy and every Sygmax process on this host, and start them.

    Safe to run again: it converges, finishes an interrupted install, and says when nothing changed.
    """
    password = None
    if admin_password_stdin:
        if not admin_email:
            fail("--admin-password-stdin needs --admin-email")
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            fail("no password on stdin")
    options = InstallOptions(
        prefix=prefix,
        domain=domain,
        email=email,
        admin_email=admin_email,
        admin_password=password,
        http_port=http_port,
        https_port=https_port,
        base_port=base_port,
        processes=parse_counts(processes) or None,
        storage_endpoint=storage_endpoint,
        force_os=force_os,
        manage_packages=not no_packages,
    )
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            report = run_install(options, _RichReporter(progress))
    except PreflightFailed as exc:
        for finding in exc.findings:
            errors.print(
                f"[bold red]error:[/] {finding.message}\n  fix: {finding.fix}",
                highlight=False,
                soft_wrap=True,
            )
        fail("nothing was changed")
    except LayoutError as exc:
        fail(f"{exc}; nothing was changed")
    except (ProvisionError, NodeError, SupervisorError, CaddyError, RuntimeError) as exc:
        fail(f"{exc}\nthe install stopped half-way; run the same command again to resume it")

    state = report.state
    if report.changed:
        console.print(f"[green]installed[/]: {len(report.changes)} change(s)", highlight=False)
        for change in report.changes:
            console.print(f"  - {change}", highlight=False)
    else:
        console.print("[green]no changes[/]: the node already matches its configuration", highlight=False)
    console.print(f"Sygmax {state.version} is running at [bold]{state.public_url}[/]", highlight=False)
    if state.tls_internal:
        console.print(
            f"TLS: Caddy's internal CA; clients trust {state.layout.caddy_root_cert}", highlight=False
        )
    if report.admin is not None and report.admin.created:
        console.print(report.admin.message, highlight=False)
    console.print(
        f"Next: sygmax status{'' if state.prefix == '/' else f' --prefix {state.prefix}'}", highlight=False
    )
