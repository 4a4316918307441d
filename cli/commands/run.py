"""``sygmax run PROFILE[,PROFILE...]``: serve the application for those process profiles."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import typer

from cli.output import EXIT_CONFIG, fail, load_or_fail
from profiles import UnknownProfile, asgi_server_for, parse_profiles

APP_FACTORY = "sygmax.app:app_from_environment"


def run(
    profiles: str = typer.Argument(..., help="Comma-separated: api, realtime, worker, scheduler."),
    host: str | None = typer.Option(None, help="Bind address (default: server.host)."),
    port: int | None = typer.Option(None, min=1, max=65535, help="Port (default: server.port)."),
    workers: int | None = typer.Option(None, min=1, max=256, help="Processes (default: server.workers)."),
) -> None:
    """Start the ASGI server for PROFILES. Refuses to start on invalid configuration."""
    try:
        chosen = parse_profiles(profiles)
    except UnknownProfile as exc:
        fail(str(exc), EXIT_CONFIG)
    # Server workers are separate processes: each writes its samples into this directory and
    # /metrics on any of them reports the sum. Always a fresh one: samples left by an earlier
    # run (or inherited from a parent's environment) would be summed in. Set before anything
    # imports prometheus_client, which picks its storage when first imported.
    metrics_dir = tempfile.mkdtemp(prefix="sygmax-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    settings, _ = load_or_fail()
    host = host or settings.server.host
    port = port or settings.server.port
    workers = workers or settings.server.workers
    os.environ["SYGMAX_PROFILES"] = ",".join(profile.name for profile in chosen)
    os.environ["_SYGMAX_SERVER_PID"] = str(os.getpid())  # workers exit with this process (sygmax.app)
    if asgi_server_for(chosen, settings.server.asgi_server) == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            APP_FACTORY, address=host, port=port, interface=Interfaces.ASGI, workers=workers,
            factory=True, loop=Loops.uvloop, log_access=False, websockets=True,
        ).serve()
    else:
        import uvicorn

        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, loop="uvloop",
                    http="httptools", access_log=False, lifespan="on")
