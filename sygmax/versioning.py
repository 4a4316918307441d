"""API versions: deprecation headers, retirement after the sunset, canary routing.

A route's version is the first segment after ``/api``: ``/api/v1/...``, ``/api/v2/...``.
The kernel declares a route of a new version by mounting it under that prefix
(``@get("/api/v2/users/me")``); a plugin lists it in ``Plugin.versioned_handlers``
(``{"v2": [handler]}``), mounted under ``/api/v2/<plugin>``. Two routes with the same method
and the same template after the version segment are *twins*: the newer one succeeds the
older one. Nothing else needs declaring; :meth:`Versioning.bind` finds the twins once at
start-up from the app's routes.

* Deprecation (``gateway.deprecated_versions = {v1 = 2025-06-01}``): every response under
  ``/api/v1`` carries ``Deprecation: @<unix time>`` (RFC 9745), ``Sunset: <HTTP date>``
  (RFC 8594) one calendar month after the deprecation date, and ``Link: <...>;
  rel="successor-version"`` naming the twin (or the newest version's root). From the sunset
  on, routes that have a twin answer ``410 api-version-retired`` with the same Link; routes
  without a successor keep working (nothing is removed without a replacement).
* Canary: while both twins exist, ``gateway.canary_percent`` % of users (a stable hash of
  the user id, so a user always lands on the same side) calling the older route are served
  by the newer one; the response says so in ``Sygmax-Api-Version``. Only requests to routes
  that have a twin pay for the lookup of the caller; unauthenticated requests stay where
  they are.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Awaitable, Callable

import msgspec
import structlog
from litestar.exceptions import HTTPException
from litestar.utils import normalize_path

from sygmax.config import GatewaySettings
from sygmax.errors import problem_body

if TYPE_CHECKING:
    from litestar import Litestar

log = structlog.get_logger("sygmax.versioning")

_VERSIONED = re.compile(r"^/api/(v[0-9]+)(/.*)?$")
VERSION_HEADER = b"sygmax-api-version"

Identify = Callable[[dict], Awaitable["uuid.UUID | None"]]


def add_month(day: date) -> date:
    """The same day one calendar month later (clamped to the end of a shorter month)."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def version_number(name: str) -> int:
    return int(name[1:])


def canary_bucket(user_id: uuid.UUID | str) -> int:
    """0..9999, stable for a user id across processes and releases."""
    digest = hashlib.sha256(b"sygmax-canary:" + str(user_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def in_canary(user_id: uuid.UUID | str, percent: int) -> bool:
    return canary_bucket(user_id) < percent * 100


@dataclass(frozen=True)
class Deprecation:
    version: str
    deprecated: datetime
    sunset: datetime
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(cls, version: str, day: date) -> "Deprecation":
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        end_day = add_month(day)
        sunset = datetime(end_day.year, end_day.month, end_day.day, tzinfo=timezone.utc)
        headers = ((b"deprecation", f"@{int(start.timestamp())}".encode()),
                   (b"sunset", format_datetime(sunset, usegmt=True).encode()))
        return cls(version, start, sunset, headers)


def swap_version(path: str, old: str, new: str) -> str:
    return f"/api/{new}" + path[len(old) + 5:]


class Versioning:
    """Twins between API versions, found once from the app's routes."""

    def __init__(self, settings: GatewaySettings, now: Callable[[], datetime] | None = None) -> None:
        self.percent = settings.canary_percent
        self.deprecations = {name: Deprecation.of(name, day) for name, day in settings.deprecated_versions.items()}
        self.now = now or (lambda: datetime.now(timezone.utc))
        # (method, template) of an older route -> the newest version that has its twin
        self.successor: dict[tuple[str, str], str] = {}
        self.versions: list[str] = []
        self.canary_versions: frozenset[str] = frozenset()
        self.router = None

    def bind(self, app: "Litestar") -> None:
        by_suffix: dict[tuple[str, str], set[str]] = {}
        versions: set[str] = set()
        for route in app.routes:
            match = _VERSIONED.match(route.path_format)
            if match is None:
                continue
            version, suffix = match.group(1), match.group(2) or ""
            versions.add(version)
            for method in getattr(route, "route_handler_map", {}):
                if method in ("OPTIONS", "HEAD"):
                    continue
                by_suffix.setdefault((method, suffix), set()).add(version)
        self.versions = sorted(versions, key=version_number)
        for (method, suffix), present in by_suffix.items():
            newest = max(present, key=version_number)
            for version in present:
                if version != newest:
                    self.successor[(method, f"/api/{version}{suffix}")] = newest
        self.canary_versions = frozenset(
            template.split("/")[2] for (_, template) in self.successor) if self.percent else frozenset()
        self.router = app.asgi_router

    def newest(self) -> str | None:
        return self.versions[-1] if self.versions else None

    @property
    def active(self) -> bool:
        """Whether any request can be affected: otherwise the middleware is not installed at all."""
        return bool(self.deprecations) or bool(self.canary_versions)

    def twin_of(self, method: str, path: str) -> str | None:
        """The newer version serving this request's route, if the route has a twin."""
        try:
            template = self.router.handle_routing(path=normalize_path(path), method=method)[4]
        except HTTPException:
            return None
        return self.successor.get((method, template))


class VersioningMiddleware:
    """Deprecation headers and canary routing for requests under ``/api/vN``."""

    def __init__(self, app, versioning: Versioning, identify: Identify) -> None:
        self.app = app
        self.versioning = versioning
        self.identify = identify

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/v"):
            await self.app(scope, receive, send)
            return
        match = _VERSIONED.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        version = match.group(1)
        versioning = self.versioning
        deprecation = versioning.deprecations.get(version)
        canary = version in versioning.canary_versions
        if deprecation is None and not canary:
            await self.app(scope, receive, send)
            return
        twin = versioning.twin_of(scope["method"], scope["path"])
        extra: list[tuple[bytes, bytes]] = []
        if deprecation is not None:
            successor = None
            if twin is not None:
                successor = swap_version(scope["path"], version, twin)
            elif (newest := versioning.newest()) and version_number(newest) > version_number(version):
                successor = f"/api/{newest}"
            extra.extend(deprecation.headers)
            if successor is not None:
                extra.append((b"link", f'<{successor}>; rel="successor-version"'.encode()))
            if twin is not None and versioning.now() >= deprecation.sunset:
                await self._retired(scope, send, version, deprecation, extra)
                return
        if canary and twin is not None:
            user_id = await self.identify(scope)
            if user_id is not None and in_canary(user_id, versioning.percent):
                new_path = swap_version(scope["path"], version, twin)
                scope["path"] = new_path
                scope["raw_path"] = new_path.encode()
                extra.append((VERSION_HEADER, twin.encode()))
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _retired(scope, send, version: str, deprecation: Deprecation, extra) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = msgspec.json.encode(problem_body(
            410, "api-version-retired",
            f"API {version} was retired on {deprecation.sunset:%Y-%m-%d}; use the successor version "
            f"named in the Link header", None, instance=scope["path"], request_id=request_id))
        await send({
            "type": "http.response.start", "status": 410,
            "headers": [(b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()), *extra],
        })
        await send({"type": "http.response.body", "body": body})
