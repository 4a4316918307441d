"""Security headers on every HTTP response, and the CORS allowlist.

:class:`SecurityHeadersMiddleware` wraps Litestar's outermost ASGI handler (next to the
observability middleware), so 404s, 405s, 413s and 429s get the headers too. Every header
list is built once at start-up; per request the middleware only picks one of four
pre-encoded lists (API or docs page, plain or TLS) and extends the response's headers.

* ``Content-Security-Policy``: ``gateway.content_security_policy`` (strict ``default-src
  'self'`` and ``frame-ancestors 'none'`` by default). The Swagger page under
  ``/api/schema`` loads its script from a CDN and runs an inline bootstrap, so it gets a
  policy that allows exactly that and nothing else.
* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  strict-origin-when-cross-origin``, ``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Resource-Policy: same-origin``.
* ``Strict-Transport-Security`` only when the public URL is https or the request itself
  arrived over TLS: sending it over plain http on a lab install would lock browsers out.

CORS: Litestar's own middleware with the exact origins of ``cors.allow_origins``; with no
origins configured there is no CORS at all (same-origin only), never a wildcard.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig

from sygmax.config import CorsSettings, GatewaySettings, ServerSettings

DOCS_PREFIX = "/api/schema"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'")

Header = tuple[bytes, bytes]


def _encode(headers: dict[str, str]) -> list[Header]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def security_headers(csp: str, hsts: str | None) -> list[Header]:
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if hsts:
        headers["Strict-Transport-Security"] = hsts
    return _encode(headers)


class SecurityHeadersMiddleware:
    """Append precomputed security headers to every HTTP response."""

    def __init__(self, app, server: ServerSettings, gateway: GatewaySettings) -> None:
        self.app = app
        hsts = f"max-age={gateway.hsts_max_age_s}; includeSubDomains" if gateway.hsts_max_age_s else None
        https_public = urlsplit(server.public_url).scheme == "https"
        csp = gateway.content_security_policy
        # [docs page][over TLS] -> headers
        self.lists = {
            (False, False): security_headers(csp, hsts if https_public else None),
            (False, True): security_headers(csp, hsts),
            (True, False): security_headers(DOCS_CSP, hsts if https_public else None),
            (True, True): security_headers(DOCS_CSP, hsts),
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.lists[(scope["path"].startswith(DOCS_PREFIX), scope.get("scheme") == "https")]

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers")
                if type(headers) is list:
                    headers.extend(extra)  # the response's own fresh list: no copy
                else:
                    message["headers"] = [*(headers or ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_config(cors: CorsSettings) -> CORSConfig | None:
    """Litestar CORS for the exact configured origins, or None (same-origin only)."""
    if not cors.allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(cors.allow_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-CSRF-Token", "Idempotency-Key"],
        expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                        "RateLimit-Reset", "Deprecation", "Sunset", "Link"],
        allow_credentials=cors.allow_credentials,
        max_age=cors.max_age_s,
    )
