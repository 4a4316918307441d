"""``create_app(profiles)``: assemble the enabled plugins into one Litestar application.

What a process mounts depends on its profiles (see ``profiles/``): the api profile serves
plugin HTTP routes under ``/api/v1/<plugin>``, realtime serves ``/ws/<plugin>``, worker runs
event consumers, scheduler runs scheduled jobs. Every profile answers ``/healthz``,
``/readyz`` and ``/metrics`` so the supervisor and Caddy can watch it.
"""

from __future__ import annotations

import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

from litestar import Litestar, Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Response

from profiles import PROFILES, Profile, parse_profiles
from sygmax import __version__
from sygmax.auth.routes import kernel_api_handlers
from sygmax.auth.tokens import Actor
from sygmax.config import Settings, load_settings
from sygmax.errors import EXCEPTION_HANDLERS, problem_response
from sygmax.kernel import Kernel
from sygmax.openapi import add_problem_responses
from sygmax.observability import ObservabilityMiddleware, configure_logging, metrics_payload
from sygmax.plugins import Plugin, discover_plugins, order_plugins
from sygmax.gateway import Gateway
from sygmax.runtime import start_consumers, start_scheduler
from sygmax.storage.routes import storage_routes
from sygmax.web.spa import SPAMiddleware, asset_router


def load_configuration(installed: dict[str, Plugin] | None = None) -> tuple[Settings, dict[str, Plugin]]:
    """Validate config (plugin sections included) and pick the enabled plugins, in dependency order."""
    installed = discover_plugins() if installed is None else installed
    sections = {name: plugin.settings for name, plugin in installed.items() if plugin.settings is not None}
    settings = load_settings(plugin_sections=sections)
    enabled = {name: plugin for name, plugin in installed.items() if settings.plugins.is_enabled(name)}
    unknown = [name for name in (*settings.plugins.enabled, *settings.plugins.disabled) if name not in installed]
    if unknown:
        from sygmax.config import ConfigError

        raise ConfigError(settings.source, [("plugins", f"unknown plugin(s) {', '.join(unknown)}; "
                                                         f"installed: {', '.join(sorted(installed)) or 'none'}")])
    ordered = order_plugins(enabled)
    return settings, {plugin.name: plugin for plugin in ordered}


DRAIN_DIR = "drain"


def draining(marker: Path, started: float) -> bool:
    """True while ``marker`` exists and was made after this process started.

    The node (``appliance/node.py``) creates ``drain/<port>`` beside the configuration file to
    take one process out of Caddy's rotation before restarting it. A marker older than the
    process was meant for the process it replaced (a restart the node did not see through),
    so it is ignored rather than keeping a fresh process out of rotation forever.
    """
    try:
        return marker.stat().st_mtime >= started
    except OSError:
        return False


UPSTREAM_CHECK_HEADER = "sygmax-upstream-check"


@get("/healthz", tags=["health"], summary="Liveness: the process is up", cache=False,
     responses={503: ResponseSpec(None, description="only to the proxy's check: the process is draining")})
async def healthz(request: Request) -> Response[dict]:
    """The proxy's active check sends the ``Sygmax-Upstream-Check`` header: to it a draining
    process answers 503, so the proxy stops choosing it while it still serves what it has.
    Without the header (supervisors, probes, clients) this is plain liveness."""
    if UPSTREAM_CHECK_HEADER in request.headers:
        drain_dir, started = request.app.state.drain
        port = (request.scope.get("server") or (None, None))[1]
        if drain_dir is not None and port is not None and draining(drain_dir / str(port), started):
            return problem_response(503, "draining", "draining: finishing its requests before a restart")
    return Response({"status": "ok"})


@get("/readyz", tags=["health"], summary="Readiness: database, Redis and storage reachable", cache=False)
async def readyz(state: State) -> Response[dict]:
    checks = await state.kernel.readiness()
    failed = [name for name, result in checks.items() if not result["ok"]]
    if failed:
        return problem_response(503, "not-ready", f"not ready: {', '.join(failed)} unavailable",
                                checks=checks, failed=failed)
    return Response({"status": "ready", "checks": checks})


@get("/metrics", tags=["health"], summary="Prometheus metrics", media_type="text/plain", cache=False,
     include_in_schema=True)
async def metrics(state: State) -> Response[bytes]:
    await state.kernel.refresh_gauges()
    payload, content_type = metrics_payload()
    return Response(payload, media_type=content_type)


def provide_kernel(state: State) -> Kernel:
    return state.kernel


def _plugin_routers(plugins: dict[str, Plugin], profiles: Sequence[Profile]) -> list[Router]:
    routers = []
    serve_http = any(profile.http_routes for profile in profiles)
    serve_ws = any(profile.websocket_routes for profile in profiles)
    for plugin in plugins.values():
        if serve_http and plugin.http_handlers:
            routers.append(Router(path=f"/api/v1/{plugin.name}", route_handlers=list(plugin.http_handlers),
                                  tags=[plugin.name]))
        for version, version_handlers in plugin.versioned_handlers.items() if serve_http else ():
            routers.append(Router(path=f"/api/{version}/{plugin.name}", route_handlers=list(version_handlers),
                                  tags=[plugin.name]))
        if serve_ws and plugin.websocket_handlers:
            routers.append(Router(path=f"/ws/{plugin.name}", route_handlers=list(plugin.websocket_handlers)))
    return routers


def create_app(
    profiles: str | Sequence[Profile] = "api",
    settings: Settings | None = None,
    plugins: dict[str, Plugin] | None = None,
) -> Litestar:
    """Build the application for ``profiles``. Tests pass ``settings`` and ``plugins`` directly."""
    if isinstance(profiles, str):
        profiles = parse_profiles(profiles)
    if settings is None or plugins is None:
        loaded_settings, loaded_plugins = load_configuration(plugins)
        settings = settings or loaded_settings
        plugins = loaded_plugins if plugins is None else plugins
    configure_logging(settings.log)
    kernel = Kernel.build(settings, plugins)
    kernel.profiles = frozenset(profile.name for profile in profiles)  # start-up hooks may depend on them

    @asynccontextmanager
    async def lifespan(app: Litestar):
        await kernel.start()
        if any(profile.consumers for profile in profiles):
            start_consumers(kernel)
        if any(profile.schedules for profile in profiles):
            start_scheduler(kernel)
        for plugin in plugins.values():
            for hook in plugin.on_startup:
                await hook(kernel)
        try:
            yield
        finally:
            for plugin in reversed(list(plugins.values())):
                for hook in plugin.on_shutdown:
                    await hook(kernel)
            await kernel.stop()

    gateway = Gateway(settings, kernel)
    handlers: list = [healthz, readyz, metrics]
    if any(profile.http_routes for profile in profiles):
        handlers += [*kernel_api_handlers(), *gateway.handlers(), *storage_routes(kernel.storage),
                     asset_router()]
    handlers += _plugin_routers(plugins, profiles)

    app = Litestar(
        route_handlers=handlers,
        dependencies={"kernel": Provide(provide_kernel, sync_to_thread=False), **gateway.dependencies()},
        before_request=gateway.before_request,
        cors_config=gateway.cors,
        signature_namespace={"Kernel": Kernel, "Actor": Actor},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({"kernel": kernel, "profiles": [profile.name for profile in profiles],
                     "drain": (_drain_dir(settings), time.time())}),
        request_max_body_size=settings.server.max_request_body,
        openapi_config=OpenAPIConfig(
            title="Sygmax API",
            version=__version__,
            path="/api/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer",
                                         description="Personal API token (syg_...) or access token"),
            }),
        ),
        debug=False,
    )
    # Wrap Litestar's outermost handler (where it mounts CORS itself) so unrouted requests
    # are rate-limited, counted and logged like every other request.
    # The gateway adds security headers, per-IP/login rate limits and API versioning (sygmax/gateway.py).
    # The api profile also serves the web UI (sygmax/web/spa.py): browser navigations to
    # client routes get index.html, inside the gateway so they carry the security headers.
    inner = SPAMiddleware(app.asgi_handler) if any(profile.http_routes for profile in profiles) else app.asgi_handler
    app.asgi_handler = ObservabilityMiddleware(gateway.wrap(app, inner),
                                               access_log=settings.log.access_log,
                                               trusted_proxies=frozenset(settings.server.trusted_proxies))
    add_problem_responses(app)
    return app


def _drain_dir(settings: Settings) -> Path | None:
    """``drain/`` beside the configuration file this process loaded (None without one)."""
    source = Path(settings.source)
    return source.parent / DRAIN_DIR if source.is_file() else None


def _exit_with_server() -> None:
    """In a worker of a multi-process server: die with the server's main process.

    ``sygmax run`` records its pid in ``_SYGMAX_SERVER_PID``. Without this, a main process
    killed by SIGKILL leaves its workers orphaned, still holding the port, and the
    supervisor's restart of the main process could never bind it again.
    """
    server_pid = os.environ.get("_SYGMAX_SERVER_PID", "")
    if server_pid != str(os.getppid()) or not hasattr(os, "sched_getaffinity"):  # Linux only
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != server_pid:  # the server died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def app_from_environment() -> Litestar:
    """ASGI factory for the server processes: profiles come from ``SYGMAX_PROFILES``."""
    _exit_with_server()
    return create_app(os.environ.get("SYGMAX_PROFILES", "api"))


__all__ = ["create_app", "app_from_environment", "load_configuration", "PROFILES"]
