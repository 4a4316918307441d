"""The plugin contract: what a module contributes and how the kernel finds it.

A module is a package under ``plugins/`` whose ``plugin.py`` builds one :class:`Plugin` and
registers it in the ``sygmax.plugins`` entry-point group::

    [project.entry-points."sygmax.plugins"]
    chats = "plugins.chats.plugin:plugin"

The kernel mounts ``http_handlers`` under ``/api/v1/<name>`` and ``websocket_handlers``
under ``/ws/<name>``; binds ``tables`` to the pooled engine; applies ``migrations`` (a
directory of append-only ``NNNN_description.sql`` files) after those of ``depends_on``;
runs ``consumers`` in the worker profile and ``schedules`` in the scheduler profile;
validates ``settings`` as the ``[<name>]`` config section. Plugins reach the kernel's
services (database, Redis, bus, fan-out, storage, settings) through the ``kernel``
dependency that every handler can ask for, never by importing one another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from piccolo.table import Table

    from sygmax.config import Section
    from sygmax.events.bus import Event
    from sygmax.kernel import Kernel

ENTRY_POINT_GROUP = "sygmax.plugins"
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
RESERVED_NAMES = frozenset({"kernel", "auth", "users", "storage", "healthz", "readyz", "metrics", "plugins",
                            # kernel permission prefixes and identity routes (sygmax/auth/policy.py)
                            "workspace", "workspaces", "members", "invites", "teams", "roles", "audit",
                            "acl", "permissions",
                            # API gateway routes (sygmax/gateway.py)
                            "flags", "graphql"})


@dataclass(frozen=True)
class Permission:
    """A permission a plugin declares, e.g. ``Permission("chats.post", "Post messages")``.

    Owners and admins of a workspace hold every plugin permission; ``default_roles`` says
    which of the built-in ``editor`` and ``viewer`` roles hold it too (custom roles list
    their permissions explicitly).
    """

    code: str
    description: str
    default_roles: tuple[str, ...] = ("editor",)

    def __post_init__(self) -> None:
        unknown = set(self.default_roles) - {"editor", "viewer"}
        if unknown:
            raise PluginError(f"permission {self.code}: default_roles may name only editor and viewer, "
                              f"not {sorted(unknown)}")


@dataclass(frozen=True)
class ConsumerSpec:
    """An event-bus consumer run by the worker profile; the consumer group is ``<plugin>.<name>``."""

    name: str
    handlers: dict[type["Event"], Callable[["Kernel", Any], Awaitable[None]]]


@dataclass(frozen=True)
class Schedule:
    """A job for the scheduler profile: every ``seconds`` or on a ``cron`` expression (5 fields)."""

    name: str
    job: Callable[["Kernel"], Awaitable[None]]
    seconds: float | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.cron is None):
            raise ValueError(f"schedule {self.name}: give exactly one of seconds or cron")


@dataclass(frozen=True)
class NotificationCategory:
    """A kind of notification a plugin sends, e.g. ``NotificationCategory("chats.mention", "Mentions")``.

    Users choose per category which channels (``in_app``, ``email``) deliver it
    (sygmax/notification_prefs.py); ``default_channels`` applies until they do.
    """

    code: str
    description: str
    default_channels: tuple[str, ...] = ("in_app",)

    def __post_init__(self) -> None:
        unknown = set(self.default_channels) - {"in_app", "email"}
        if unknown:
            raise PluginError(f"notification category {self.code}: default_channels may name only in_app and "
                              f"email, not {sorted(unknown)}")
        if not re.match(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.-]{0,62}$", self.code):
            raise PluginError(f"notification category {self.code!r} must look like <plugin>.<name>")


@dataclass(frozen=True)
class UIPage:
    """A page the web UI shell lists in its sidebar."""

    path: str
    title: str
    icon: str = ""


@dataclass
class Plugin:
    name: str
    version: str = "1"
    description: str = ""
    depends_on: Sequence[str] = ()
    http_handlers: Sequence[Any] = ()
    # Handlers of later API versions, {"v2": [...]}: mounted under /api/<version>/<name>; a route
    # with the same method and path as one in http_handlers is its successor (sygmax/versioning.py).
    versioned_handlers: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    websocket_handlers: Sequence[Any] = ()
    tables: Sequence[type["Table"]] = ()
    migrations: Path | None = None
    consumers: Sequence[ConsumerSpec] = ()
    schedules: Sequence[Schedule] = ()
    permissions: Sequence[Permission] = ()
    settings: type["Section"] | None = None
    ui_pages: Sequence[UIPage] = ()
    notification_categories: Sequence[NotificationCategory] = ()
    on_startup: Sequence[Callable[["Kernel"], Awaitable[None]]] = field(default_factory=tuple)
    on_shutdown: Sequence[Callable[["Kernel"], Awaitable[None]]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in RESERVED_NAMES:
            raise PluginError(f"plugin name {self.name!r} must match {_NAME.pattern} and not be reserved")
        for permission in self.permissions:
            if not permission.code.startswith(self.name + "."):
                raise PluginError(f"plugin {self.name}: permission {permission.code!r} must start with '{self.name}.'")
        for category in self.notification_categories:
            if not category.code.startswith(self.name + "."):
                raise PluginError(f"plugin {self.name}: notification category {category.code!r} must start with "
                                  f"'{self.name}.'")
        for version in self.versioned_handlers:
            if not re.match(r"^v([2-9]|[1-9][0-9]+)$", version):
                raise PluginError(f"plugin {self.name}: versioned_handlers key {version!r} must be v2, v3, ...")
        if self.migrations is not None and not Path(self.migrations).is_dir():
            raise PluginError(f"plugin {self.name}: migrations directory {self.migrations} does not exist")


class PluginError(Exception):
    """A plugin is malformed, missing or its dependencies cannot be satisfied."""


def discover_plugins() -> dict[str, Plugin]:
    """Load every plugin registered in the ``sygmax.plugins`` entry-point group."""
    found: dict[str, Plugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry.load()
        except Exception as exc:  # a broken plugin must name itself, not crash with a bare traceback
            raise PluginError(f"plugin {entry.name} ({entry.value}) failed to load: {exc}") from exc
        if not isinstance(plugin, Plugin):
            raise PluginError(f"entry point {entry.name} ({entry.value}) is not a sygmax Plugin")
        if plugin.name != entry.name:
            raise PluginError(f"entry point {entry.name} names a plugin called {plugin.name}")
        found[plugin.name] = plugin
    return found


def order_plugins(plugins: dict[str, Plugin]) -> list[Plugin]:
    """Topological order by ``depends_on`` (ties broken by name) so migrations run after their dependencies."""
    ordered: list[Plugin] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise PluginError(f"plugin dependency cycle: {' -> '.join((*chain, name))}")
        if name not in plugins:
            raise PluginError(f"plugin {chain[-1]} depends on {name}, which is not installed or not enabled")
        state[name] = "visiting"
        for dependency in sorted(plugins[name].depends_on):
            visit(dependency, (*chain, name))
        state[name] = "done"
        ordered.append(plugins[name])

    for name in sorted(plugins):
        visit(name, ())
    return ordered
