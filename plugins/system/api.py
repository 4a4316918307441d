"""Thin handlers: read what the kernel knows about this installation."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.datastructures import State

from sygmax import __version__
from sygmax.auth.tokens import CurrentActor
from sygmax.kernel import KernelDep


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


@get("/info", summary="Version, profiles of this process, enabled plugins", security=[{"bearer": []}])
async def info(actor: CurrentActor, kernel: KernelDep, state: State) -> InfoOut:
    return InfoOut(__version__, list(state.profiles), list(kernel.plugins))


@get("/plugins", summary="Enabled plugins with their permissions and UI pages", security=[{"bearer": []}])
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
