"""The authorization policy: one function every plugin calls.

``await require(connection, actor, "chats.post", workspace_id=w, object_type="chats.channel",
object_id=str(channel_id))`` answers, in one indexed query, whether ``actor`` may do that, and
raises the right :class:`~sygmax.errors.Problem` when not:

* not a member of the workspace, or no access at all to the object -> 404 ``not-found``
  (the caller must not learn that it exists);
* can see it but lacks the permission -> 403 ``forbidden``.

What a member may do (their *effective permissions*):

1. their role's permissions: a built-in role (owner, admin, editor, viewer; fixed sets below)
   or one custom role of the workspace (an explicit list of kernel and plugin permissions);
2. on an object, plus the permissions of every ACL grant that names them, one of their
   teams, their custom role or their built-in role;
3. on a *restricted* object, only those grants: the role counts for nothing there, so an
   owner or admin who is not granted access gets 404 like a stranger;
4. intersected with the scopes of the personal API token in use (empty or ``*``: no limit;
   ``plugin.*`` covers every permission of that plugin).

Instance administrators (``is_admin``) get no implicit access to workspace content: they
administer the installation, and see the whole audit log, but read a workspace only as
one of its members.

Why SQL and not casbin: see docs/architecture.md ("Authorization").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import structlog

from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.auth.tokens import Actor
    from sygmax.plugins import Plugin

log = structlog.get_logger("sygmax.auth")

KERNEL_PERMISSIONS: dict[str, str] = {
    "workspace.read": "See the workspace, its roles and its settings",
    "workspace.update": "Rename the workspace and change its settings",
    "workspace.delete": "Delete the workspace and everything in it (owners only)",
    "members.read": "See the members and teams of the workspace",
    "members.manage": "Change members' roles and remove members",
    "invites.manage": "Invite people and revoke invitations",
    "teams.manage": "Create, rename and delete teams and change who is in them",
    "roles.manage": "Create, change and delete custom roles",
    "audit.read": "Read the workspace's audit log",
    "acl.manage": "Change who may access an object (per-object access control)",
}
# The shape of every permission code: "<plugin or kernel area>.<verb>".
CODE_PATTERN = r"^[a-z][a-z0-9_]{0,31}\.[a-z0-9_.]{1,64}$"
# Held by owners alone: never part of a custom role or an ACL grant.
OWNER_ONLY = frozenset({"workspace.delete"})
BUILTIN_ROLES = ("owner", "admin", "editor", "viewer")
_BASE_READ = frozenset({"workspace.read", "members.read"})

# Plugin permissions known to this process (code -> Permission), declared by the kernel at start-up.
_declared: dict[str, object] = {}


def declare_permissions(plugins: Iterable["Plugin"]) -> None:
    """Make the plugins' permissions known to the built-in editor and viewer roles."""
    for plugin in plugins:
        for permission in plugin.permissions:
            _declared[permission.code] = permission


def _default_roles(code: str) -> tuple[str, ...]:
    permission = _declared.get(code)
    return getattr(permission, "default_roles", ()) if permission is not None else ()


@dataclass(frozen=True)
class PermissionSet:
    """A set of permission codes that may be "every permission, except ``excluded``"."""

    codes: frozenset[str] = frozenset()
    every: bool = False
    excluded: frozenset[str] = frozenset()

    def __contains__(self, code: str) -> bool:
        if code in self.codes:
            return True
        if not self.every or code in self.excluded:
            return False
        if code in KERNEL_PERMISSIONS:
            return True
        # Every plugin permission; for the editor/viewer shortcut see builtin_permissions.
        return "." in code

    def __bool__(self) -> bool:
        return self.every or bool(self.codes)

    def union(self, codes: Iterable[str]) -> "PermissionSet":
        codes = frozenset(codes)
        if self.every:
            return PermissionSet(self.codes | codes, True, self.excluded - codes)
        return PermissionSet(self.codes | codes)

    def covers(self, codes: Iterable[str]) -> bool:
        return all(code in self for code in codes)

    def expand(self, known: Iterable[str]) -> list[str]:
        """The codes of ``known`` (plus explicit ones) that this set contains, sorted."""
        return sorted({code for code in known if code in self} | set(self.codes))


def builtin_permissions(role: str) -> PermissionSet:
    if role == "owner":
        return PermissionSet(every=True)
    if role == "admin":
        return PermissionSet(every=True, excluded=OWNER_ONLY)
    if role in ("editor", "viewer"):
        plugin_codes = frozenset(code for code in _declared if role in _default_roles(code))
        return PermissionSet(_BASE_READ | plugin_codes)
    raise ValueError(f"unknown built-in role {role!r}")


def scope_allows(scopes: frozenset[str], code: str) -> bool:
    """Whether a token with ``scopes`` may exercise ``code`` (empty or ``*``: every permission)."""
    if not scopes or "*" in scopes or code in scopes:
        return True
    plugin, _, _ = code.partition(".")
    return f"{plugin}.*" in scopes


@dataclass(frozen=True)
class Access:
    """What an actor may do in a workspace, or on one object of it."""

    workspace_id: uuid.UUID
    member: bool
    role: str | None = None            # built-in role name, or None for a custom role
    role_id: uuid.UUID | None = None   # custom role
    role_name: str | None = None       # what to show: the built-in name or the custom role's name
    restricted: bool = False
    granted: frozenset[str] = frozenset()
    permissions: PermissionSet = field(default_factory=PermissionSet)  # before token scopes
    scopes: frozenset[str] = frozenset()
    on_object: bool = False

    @property
    def visible(self) -> bool:
        """The actor may know that the workspace (or the object) exists."""
        return self.member and (bool(self.permissions) or not self.on_object)

    def allows(self, code: str) -> bool:
        return self.member and code in self.permissions and scope_allows(self.scopes, code)

    def holds_all(self, codes: Iterable[str]) -> bool:
        return all(self.allows(code) for code in codes)

    @property
    def is_owner(self) -> bool:
        return self.member and self.role == "owner" and scope_allows(self.scopes, "workspace.delete")


_ACCESS_SQL = """
SELECT m.role, m.role_id, r.name AS role_name, r.permissions AS role_permissions
FROM sygmax_membership m LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
WHERE m.workspace_id = $1 AND m.user_id = $2
"""

# One round trip: the membership, the object's restriction flag and every grant that names the
# member, one of their teams, their custom role or their built-in role.
_OBJECT_ACCESS_SQL = """
SELECT m.role, m.role_id, r.name AS role_name, r.permissions AS role_permissions,
       coalesce((SELECT o.restricted FROM sygmax_acl_object o
                 WHERE o.workspace_id = $1 AND o.object_type = $3 AND o.object_id = $4), false) AS restricted,
       ARRAY(SELECT DISTINCT p FROM sygmax_acl_grant g, unnest(g.permissions) AS p
             WHERE g.workspace_id = $1 AND g.object_type = $3 AND g.object_id = $4
               AND (g.user_id = $2 OR g.role = m.role OR g.role_id = m.role_id
                    OR g.team_id IN (SELECT tm.team_id FROM sygmax_team_member tm
                                     WHERE tm.workspace_id = $1 AND tm.user_id = $2))) AS granted
FROM sygmax_membership m LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
WHERE m.workspace_id = $1 AND m.user_id = $2
"""


async def access(connection, actor: "Actor", *, workspace_id: uuid.UUID, object_type: str | None = None,
                 object_id: str | uuid.UUID | None = None) -> Access:
    """The actor's effective access to a workspace, or to one object in it when ``object_type`` is given."""
    if (object_type is None) != (object_id is None):
        raise ValueError("give both object_type and object_id, or neither")
    if object_type is None:
        row = await connection.fetchrow(_ACCESS_SQL, workspace_id, actor.user_id)
    else:
        row = await connection.fetchrow(_OBJECT_ACCESS_SQL, workspace_id, actor.user_id, object_type,
                                        str(object_id))
    if row is None:
        return Access(workspace_id, member=False, scopes=actor.scopes, on_object=object_type is not None)
    if row["role"] is not None:
        base = builtin_permissions(row["role"])
        role_name = row["role"]
    else:
        base = PermissionSet(frozenset(row["role_permissions"] or ()))
        role_name = row["role_name"]
    restricted = bool(object_type is not None and row["restricted"])
    granted = frozenset(row["granted"]) - OWNER_ONLY if object_type is not None else frozenset()
    permissions = PermissionSet(granted) if restricted else base.union(granted)
    return Access(workspace_id, True, row["role"], row["role_id"], role_name, restricted, granted,
                  permissions, actor.scopes, object_type is not None)


async def authorize(connection, actor: "Actor", permission: str, *, workspace_id: uuid.UUID,
                    object_type: str | None = None, object_id: str | uuid.UUID | None = None) -> bool:
    """Whether ``actor`` holds ``permission`` in the workspace (or on the object)."""
    found = await access(connection, actor, workspace_id=workspace_id, object_type=object_type,
                         object_id=object_id)
    return found.allows(permission)


def deny(found: Access, permission: str, *, request_id: str | None = None, what: str = "object") -> None:
    """Raise the Problem for an access that does not allow ``permission`` (and log the denial)."""
    if found.allows(permission):
        return
    if not found.visible:
        log.warning("auth_denied", reason="not_visible", permission=permission, request_id=request_id,
                    workspace_id=str(found.workspace_id))
        raise Problem(404, "not-found", f"No such {what}")
    reason = "token_scope" if permission in found.permissions else "missing_permission"
    log.warning("auth_denied", reason=reason, permission=permission, request_id=request_id,
                workspace_id=str(found.workspace_id))
    if reason == "token_scope":
        raise Problem(403, "forbidden", f"This API token is not scoped for {permission}", permission=permission)
    raise Problem(403, "forbidden", f"You need the {permission} permission for this", permission=permission)


async def require(connection, actor: "Actor", permission: str, *, workspace_id: uuid.UUID,
                  object_type: str | None = None, object_id: str | uuid.UUID | None = None,
                  request_id: str | None = None, what: str | None = None) -> Access:
    """Like :func:`authorize`, but raise 404 ``not-found`` or 403 ``forbidden``; returns the access."""
    found = await access(connection, actor, workspace_id=workspace_id, object_type=object_type,
                         object_id=object_id)
    deny(found, permission, request_id=request_id,
         what=what or ("workspace" if object_type is None else object_type))
    return found


async def forget_object(connection, *, workspace_id: uuid.UUID, object_type: str, object_id: str | uuid.UUID) -> None:
    """Drop an object's ACL (call it when the object itself is deleted, in the same transaction)."""
    await connection.execute(
        "DELETE FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
        workspace_id, object_type, str(object_id))
    await connection.execute(
        "DELETE FROM sygmax_acl_object WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
        workspace_id, object_type, str(object_id))


def known_permissions(plugins: Iterable["Plugin"]) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """code -> (declared by, description, built-in roles holding it) for the kernel and ``plugins``."""
    known: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for code, description in KERNEL_PERMISSIONS.items():
        roles = ("owner",) if code in OWNER_ONLY else (
            ("owner", "admin", "editor", "viewer") if code in _BASE_READ else ("owner", "admin"))
        known[code] = ("kernel", description, roles)
    for plugin in plugins:
        for permission in plugin.permissions:
            known[permission.code] = (plugin.name, permission.description,
                                      ("owner", "admin", *permission.default_roles))
    return known


def check_permission_codes(codes: Iterable[str], plugins: Iterable["Plugin"], field_name: str) -> list[str]:
    """Validate codes for a custom role or a grant: known, not owner-only; returns them sorted, deduplicated."""
    codes = list(codes)
    known = known_permissions(plugins)
    unknown = sorted({code for code in codes if code not in known})
    if unknown:
        shown = [code[:100] for code in unknown[:10]]
        raise Problem(400, "unknown-permission", f"{field_name}: unknown permission(s) {', '.join(shown)}",
                      field=field_name, unknown=shown)
    reserved = sorted(set(codes) & OWNER_ONLY)
    if reserved:
        raise Problem(400, "owner-only-permission",
                      f"{field_name}: {', '.join(reserved)} belongs to owners and cannot be given otherwise",
                      field=field_name)
    return sorted(set(codes))


__all__ = [
    "Access", "BUILTIN_ROLES", "KERNEL_PERMISSIONS", "OWNER_ONLY", "PermissionSet", "access", "authorize",
    "builtin_permissions", "check_permission_codes", "declare_permissions", "deny", "forget_object",
    "known_permissions", "require", "scope_allows",
]
