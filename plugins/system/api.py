"""Thin handlers: read what the kernel knows about this installation.

``/public`` is what the sign-in page needs before anyone is signed in (the registration
policy); ``/users`` and ``/workspaces`` are the instance administrators' overviews behind
the web UI's admin pages.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
import structlog
from litestar import Request, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter

from sygmax import __version__
from sygmax.auth.policy import scope_allows
from sygmax.auth.tokens import Actor, CurrentActor
from sygmax.errors import Problem
from sygmax.kernel import KernelDep

log = structlog.get_logger("sygmax.system")

_SECURITY = [{"bearer": []}]
_ADMINS_ONLY = {403: ResponseSpec(None, description="Not an instance administrator")}
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="at most this many rows")]


class PermissionOut(msgspec.Struct):
    code: str
    description: str


class PageOut(msgspec.Struct):
    path: str
    title: str
    icon: str


class PluginOut(msgspec.Struct):
    name: str
    version: str
    description: str
    depends_on: list[str]
    permissions: list[PermissionOut]
    ui_pages: list[PageOut]


class InfoOut(msgspec.Struct):
    version: str
    profiles: list[str]
    plugins: list[str]


class PublicOut(msgspec.Struct):
    registration: Literal["open", "invite", "closed"]


class AdminUserOut(msgspec.Struct):
    id: uuid.UUID
    email: str
    display_name: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    workspaces: int


class AdminWorkspaceOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    created_at: datetime
    members: int
    owners: list[str]


def _require_admin(actor: Actor, request: Request) -> None:
    # Sessions carry every scope; a personal token needs system.view (or *) as well.
    if not actor.is_admin or not scope_allows(actor.scopes, "system.view"):
        log.warning("auth_denied", reason="not_instance_admin", user_id=str(actor.user_id),
                    request_id=request.scope.get("state", {}).get("request_id"))
        raise Problem(403, "forbidden", "Only instance administrators see every user and workspace")


@get("/public", summary="What the sign-in page needs before sign-in: the registration policy")
async def public(kernel: KernelDep) -> PublicOut:
    return PublicOut(kernel.settings.auth.registration)


@get("/info", summary="Version, profiles of this process, enabled plugins", security=_SECURITY)
async def info(actor: CurrentActor, kernel: KernelDep, state: State) -> InfoOut:
    return InfoOut(__version__, list(state.profiles), list(kernel.plugins))


@get("/plugins", summary="Enabled plugins with their permissions and UI pages", security=_SECURITY)
async def list_plugins(actor: CurrentActor, kernel: KernelDep) -> list[PluginOut]:
    return [
        PluginOut(
            name=plugin.name,
            version=plugin.version,
            description=plugin.description,
            depends_on=list(plugin.depends_on),
            permissions=[PermissionOut(p.code, p.description) for p in plugin.permissions],
            ui_pages=[PageOut(page.path, page.title, page.icon) for page in plugin.ui_pages],
        )
        for plugin in kernel.plugins.values()
    ]


@get("/users", summary="Every account, oldest first (instance administrators)", security=_SECURITY,
     responses=_ADMINS_ONLY)
async def list_users(actor: CurrentActor, kernel: KernelDep, request: Request, limit: Limit = 500) -> list[AdminUserOut]:
    _require_admin(actor, request)
    rows = await kernel.db.pool.fetch(
        "SELECT u.id, u.email, u.display_name, u.is_admin, u.is_active, u.created_at, "
        "(SELECT count(*) FROM sygmax_membership m WHERE m.user_id = u.id) AS workspaces "
        "FROM sygmax_user u ORDER BY u.created_at, u.id LIMIT $1", limit)
    return [AdminUserOut(row["id"], row["email"], row["display_name"], row["is_admin"], row["is_active"],
                         row["created_at"], row["workspaces"]) for row in rows]


@get("/workspaces", summary="Every workspace with its member count and owners (instance administrators)",
     security=_SECURITY, responses=_ADMINS_ONLY)
async def list_workspaces(actor: CurrentActor, kernel: KernelDep, request: Request,
                          limit: Limit = 500) -> list[AdminWorkspaceOut]:
    _require_admin(actor, request)
    rows = await kernel.db.pool.fetch(
        "SELECT w.id, w.name, w.created_at, "
        "(SELECT count(*) FROM sygmax_membership m WHERE m.workspace_id = w.id) AS members, "
        "ARRAY(SELECT u.email FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id "
        "      WHERE m.workspace_id = w.id AND m.role = 'owner' ORDER BY u.email) AS owners "
        "FROM sygmax_workspace w ORDER BY w.created_at, w.id LIMIT $1", limit)
    return [AdminWorkspaceOut(row["id"], row["name"], row["created_at"], row["members"], list(row["owners"]))
            for row in rows]
