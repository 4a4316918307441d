"""The API gateway, assembled in one place for :func:`sygmax.app.create_app`.

What it adds to the app, in the order a request meets it (outermost first, inside the
observability middleware):

1. security headers (:mod:`sygmax.security`) on every response;
2. the per-IP and login rate limits (:mod:`sygmax.ratelimit`), before routing;
3. API versioning (:mod:`sygmax.versioning`): deprecation headers, retirement, canary
   routing; installed only when a version is deprecated or a route has a newer twin;
4. Litestar itself, with CORS (exact origins), the ``actor`` dependency wrapped by the
   per-user and per-route limits, and the gateway's routes: feature flags, GraphQL, OIDC login.
"""

from __future__ import annotations

import uuid

from litestar import Litestar
from litestar._parsers import parse_cookie_string
from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers
from litestar.di import Provide

from sygmax.auth.oidc_routes import oidc_handlers
from sygmax.auth.tokens import authenticate, provide_actor
from sygmax.config import Settings
from sygmax.errors import Problem
from sygmax.flags_routes import flag_handlers
from sygmax.graphql_api import graphql_controller
from sygmax.kernel import Kernel
from sygmax.ratelimit import CallerLimits, RateLimiter, RateLimitMiddleware
from sygmax.security import SecurityHeadersMiddleware, cors_config
from sygmax.versioning import Versioning, VersioningMiddleware


class Gateway:
    def __init__(self, settings: Settings, kernel: Kernel) -> None:
        self.settings = settings
        self.kernel = kernel
        limits = settings.rate_limit
        self.limiter = RateLimiter(kernel.redis) if limits.enabled else None
        self.caller_limits = (CallerLimits(self.limiter, limits.per_user_per_minute, limits.routes)
                              if self.limiter is not None else None)
        self.versioning = Versioning(settings.gateway)

    def handlers(self) -> list:
        """The gateway's own routes (api profile)."""
        return [*flag_handlers(), *oidc_handlers(), graphql_controller(self.settings.gateway)]

    def dependencies(self) -> dict[str, Provide]:
        """``actor``: authentication, then (when limits are on) the per-user and per-route buckets."""
        if self.caller_limits is None:
            return {"actor": Provide(provide_actor)}
        return {"actor": Provide(self.caller_limits.provide_actor),
                "authenticated_actor": Provide(provide_actor)}

    @property
    def before_request(self):
        """An app-level hook only when a route table is configured (routes that do not authenticate)."""
        if self.caller_limits is not None and self.caller_limits.table:
            return self.caller_limits.before_request
        return None

    @property
    def cors(self) -> CORSConfig | None:
        return cors_config(self.settings.cors)

    async def identify(self, scope) -> uuid.UUID | None:
        """Who is calling, for canary routing only (the route authenticates again, for real)."""
        headers = Headers.from_scope(scope)
        try:
            actor = await authenticate(self.kernel, headers.get("authorization"),
                                       cookies=_cookies(headers.get("cookie")), method="GET",
                                       request_id=scope.get("state", {}).get("request_id"))
        except Problem:
            return None
        return actor.user_id

    def wrap(self, app: Litestar, handler):
        """Bind route-derived tables to ``app`` and wrap its ASGI handler in the gateway middleware."""
        self.versioning.bind(app)
        if self.versioning.active:
            handler = VersioningMiddleware(handler, self.versioning, self.identify)
        if self.limiter is not None:
            self.caller_limits.bind(app)
            handler = RateLimitMiddleware(handler, self.limiter, self.settings.rate_limit.per_ip_per_minute,
                                          self.settings.auth.login_per_ip_per_minute)
        return SecurityHeadersMiddleware(handler, self.settings.server, self.settings.gateway)


def _cookies(raw: str | None) -> dict[str, str]:
    return parse_cookie_string(raw) if raw else {}
