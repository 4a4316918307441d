"""Serve the web UI (a single-page app) from the api profile.

* ``/assets/...``: Vite's content-hashed files, cached for a year (``immutable``): a new
  build has new names, so a browser never holds a stale one.
* Any other ``GET``/``HEAD`` a browser navigates to (``Accept: text/html``) outside the
  server's own prefixes gets ``index.html`` with ``Cache-Control: no-cache``, so the client
  router can show ``/settings`` or ``/chats/...`` after a reload, and a deploy is picked up
  at once. Non-HTML requests to unknown paths still get the 404 problem.
* Without a build (a checkout where nobody ran ``npm run build``) the api profile still
  starts; ``/`` answers 503 with a page saying how to build the assets.

The files are read once and re-read when ``index.html`` changes on disk (a rebuild).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PREFIX = "/assets"
# Paths the server answers itself: never the SPA, even for a browser navigation.
SERVER_PREFIXES = ("/api", "/ws", "/healthz", "/readyz", "/metrics", "/docs", ASSETS_PREFIX)
ASSET_CACHE = CacheControlHeader(public=True, max_age=31_536_000, immutable=True)

NOT_BUILT = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sygmax: web UI not built</title></head>
<body><main><h1>The Sygmax web UI is not built</h1>
<p>This installation runs from a source checkout whose front-end assets were never built, so
only the API is available (see <a href="/api/schema">/api/schema</a>).</p>
<p>Build them with Node.js 18 or later: <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>
(<code>./install.sh --dev</code> does this), then reload. Release wheels carry the built assets.</p>
</main></body></html>
"""


def asset_router(static_dir: Path | None = None) -> Router:
    """Litestar's static-files router for the hashed assets, with long cache headers."""
    static_dir = static_dir or STATIC_DIR
    return create_static_files_router(ASSETS_PREFIX, directories=[static_dir / "assets"],
                                      cache_control=ASSET_CACHE, include_in_schema=False, name="web-assets")


def _is_client_route(path: str) -> bool:
    for prefix in SERVER_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return False
    return True


def _accepts_html(scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value
    return False


class SPAMiddleware:
    """ASGI wrapper: browser navigations to client routes get ``index.html``; the rest passes on."""

    def __init__(self, app, static_dir: Path | None = None) -> None:
        self.app = app
        self.index = (static_dir or STATIC_DIR) / "index.html"
        self._cached: tuple[float, bytes] | None = None

    def _index(self) -> bytes | None:
        try:
            mtime = self.index.stat().st_mtime
        except FileNotFoundError:
            return None
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, self.index.read_bytes())
        return self._cached[1]

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not _is_client_route(scope["path"])
                or (scope["path"] != "/" and not _accepts_html(scope))):
            await self.app(scope, receive, send)
            return
        body = self._index()
        status = 200
        if body is None:
            status, body = 503, NOT_BUILT
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
        ]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


__all__ = ["SPAMiddleware", "asset_router", "STATIC_DIR", "SERVER_PREFIXES"]
