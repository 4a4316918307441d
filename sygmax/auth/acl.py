"""Managing per-object access control lists (the grants and the restricted flag).

An object is addressed as ``<plugin>.<kind>`` + an id inside one workspace (``chats.channel``,
``3f0c...``); the kernel never needs to see the object itself. Reading or changing an
object's ACL needs ``acl.manage`` *on that object* (so on a restricted object only a grantee
holding ``acl.manage`` may, whatever their workspace role). Nobody can grant a permission they
do not hold on the object, and a restricted object must keep at least one grant with
``acl.manage`` so it can never become unmanageable.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Iterable, Literal

import msgspec

from sygmax.auth import audit, policy, workspaces
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

OBJECT_TYPE = re.compile(r"^[a-z][a-z0-9_]{1,31}\.[a-z][a-z0-9_]{0,63}$")
OBJECT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_GRANTS = 500

PrincipalKind = Literal["user", "team", "role"]


class GrantView(msgspec.Struct):
    principal_kind: str
    principal: str          # user id, team id, custom role id, or built-in role name
    principal_name: str     # display name, team name or role name
    permissions: list[str]


class AclView(msgspec.Struct):
    workspace_id: uuid.UUID
    object_type: str
    object_id: str
    restricted: bool
    grants: list[GrantView]


@dataclass(frozen=True)
class GrantSpec:
    principal_kind: str
    principal: str
    permissions: list[str]


@dataclass(frozen=True)
class _Resolved:
    kind: str
    user_id: uuid.UUID | None
    team_id: uuid.UUID | None
    role_id: uuid.UUID | None
    role: str | None
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, str(self.user_id or self.team_id or self.role_id or self.role)


def check_object(object_type: str, object_id: str, plugins: Iterable) -> tuple[str, str]:
    """Validate an object reference: ``<enabled plugin>.<kind>`` and a short id of safe characters."""
    if not OBJECT_TYPE.match(object_type or ""):
        raise Problem(400, "validation-error", "object_type: must look like <plugin>.<kind> "
                                               "(lowercase letters, digits, '_')", field="object_type")
    plugin_names = {plugin.name for plugin in plugins}
    if object_type.partition(".")[0] not in plugin_names:
        raise Problem(400, "validation-error", f"object_type: no enabled plugin named "
                                               f"{object_type.partition('.')[0]!r}", field="object_type")
    if not OBJECT_ID.match(object_id or ""):
        raise Problem(400, "validation-error", "object_id: 1-128 characters of A-Z a-z 0-9 . _ : -",
                      field="object_id")
    return object_type, object_id


_GRANTS_SQL = """
SELECT g.principal_kind, g.user_id, g.team_id, g.role_id, g.role, g.permissions,
       coalesce(u.display_name, t.name, r.name, g.role) AS principal_name
FROM sygmax_acl_grant g
LEFT JOIN sygmax_user u ON u.id = g.user_id
LEFT JOIN sygmax_team t ON t.id = g.team_id
LEFT JOIN sygmax_role r ON r.id = g.role_id
WHERE g.workspace_id = $1 AND g.object_type = $2 AND g.object_id = $3
ORDER BY g.principal_kind, principal_name, g.id
"""


def _key(row) -> tuple[str, str]:
    return row["principal_kind"], str(row["user_id"] or row["team_id"] or row["role_id"] or row["role"])


async def _is_restricted(connection, workspace_id: uuid.UUID, object_type: str, object_id: str) -> bool:
    """Whether the object's ACL is restricted (no row: not restricted)."""
    return bool(await connection.fetchval(
        "SELECT restricted FROM sygmax_acl_object WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
        workspace_id, object_type, object_id))


async def _view(connection, workspace_id: uuid.UUID, object_type: str, object_id: str) -> AclView:
    restricted = await _is_restricted(connection, workspace_id, object_type, object_id)
    rows = await connection.fetch(_GRANTS_SQL, workspace_id, object_type, object_id)
    return AclView(workspace_id, object_type, object_id, restricted,
                   [GrantView(row["principal_kind"], _key(row)[1], row["principal_name"], sorted(row["permissions"]))
                    for row in rows])


async def _members_only(connection, actor: Actor, workspace_id: uuid.UUID, source: Source | None) -> None:
    """Strangers get 404 before any detail of their input is judged."""
    found = await policy.access(connection, actor, workspace_id=workspace_id)
    if not found.member:
        policy.deny(found, "acl.manage", request_id=source and source.request_id, what="workspace")


async def _require_manage(connection, actor: Actor, workspace_id: uuid.UUID, object_type: str, object_id: str,
                          source: Source | None) -> policy.Access:
    """The actor's access to the object if it holds ``acl.manage`` there; else denied."""
    return await policy.require(connection, actor, "acl.manage", workspace_id=workspace_id, object_type=object_type,
                                object_id=object_id, request_id=source and source.request_id, what="object")


async def _managed_object(connection, actor: Actor, workspace_id: uuid.UUID, object_type: str, object_id: str,
                          plugins, source: Source | None) -> tuple[str, str]:
    """The checked object reference, once the actor is a member (else 404) who may manage its ACL (else 403)."""
    await _members_only(connection, actor, workspace_id, source)
    object_type, object_id = check_object(object_type, object_id, plugins)
    await _require_manage(connection, actor, workspace_id, object_type, object_id, source)
    return object_type, object_id


async def get_acl(actor: Actor, db, workspace_id: uuid.UUID, object_type: str, object_id: str, *, plugins=(),
                  source: Source | None = None) -> AclView:
    async with workspaces.connection_of(db) as connection:
        object_type, object_id = await _managed_object(connection, actor, workspace_id, object_type, object_id,
                                                       plugins, source)
        return await _view(connection, workspace_id, object_type, object_id)


def _check_grants(grants: list[GrantSpec], restricted: bool, plugins) -> list[list[str]]:
    if len(grants) > MAX_GRANTS:
        raise Problem(400, "validation-error", f"grants: at most {MAX_GRANTS}", field="grants")
    checked = [policy.check_permission_codes(spec.permissions, plugins, f"grants[{index}].permissions")
               for index, spec in enumerate(grants)]
    for index, codes in enumerate(checked):
        if not codes:
            raise Problem(400, "validation-error", f"grants[{index}].permissions: must not be empty",
                          field=f"grants[{index}].permissions")
    if restricted and not any("acl.manage" in codes for codes in checked):
        raise Problem(400, "acl-unmanageable", "grants: a restricted object needs at least one grant with "
                                               "acl.manage, or nobody could ever change its access again",
                      field="grants")
    return checked


async def _resolve_principal(connection, workspace_id: uuid.UUID, spec: GrantSpec, index: int) -> _Resolved:
    field = f"grants[{index}].principal"
    if spec.principal_kind == "role":
        role = await workspaces.resolve_role(connection, workspace_id, spec.principal, field=field)
        return _Resolved("role", None, None, role.role_id, role.role, role.name)
    try:
        principal_id = uuid.UUID(spec.principal)
    except (ValueError, AttributeError, TypeError):
        raise Problem(400, "validation-error", f"{field}: a {spec.principal_kind} is named by its id",
                      field=field) from None
    if spec.principal_kind == "user":
        name = await connection.fetchval(
            "SELECT u.display_name FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id "
            "WHERE m.workspace_id = $1 AND m.user_id = $2", workspace_id, principal_id)
        if name is None:
            raise Problem(400, "unknown-principal", f"{field}: no member {principal_id} in this workspace", field=field)
        return _Resolved("user", principal_id, None, None, None, name)
    name = await connection.fetchval("SELECT name FROM sygmax_team WHERE workspace_id = $1 AND id = $2",
                                     workspace_id, principal_id)
    if name is None:
        raise Problem(400, "unknown-principal", f"{field}: no team {principal_id} in this workspace", field=field)
    return _Resolved("team", None, principal_id, None, None, name)


async def _lock_object(connection, workspace_id: uuid.UUID, object_type: str, object_id: str) -> None:
    # The row lock serialises concurrent changes to one object's ACL.
    await connection.execute(
        """INSERT INTO sygmax_acl_object (workspace_id, object_type, object_id) VALUES ($1, $2, $3)
           ON CONFLICT (workspace_id, object_type, object_id) DO UPDATE SET updated_at = now()""",
        workspace_id, object_type, object_id)


async def do_set_acl(actor: Actor, db, workspace_id: uuid.UUID, object_type: str, object_id: str, *,
                     restricted: bool, grants: list[GrantSpec], plugins=(), source: Source | None = None) -> AclView:
    """Replace the object's ACL with ``grants`` (and the restricted flag); audit each grant and revocation."""
    async with workspaces.transaction(db) as connection:
        await _members_only(connection, actor, workspace_id, source)
        object_type, object_id = check_object(object_type, object_id, plugins)
        checked = _check_grants(grants, restricted, plugins)
        found = await _require_manage(connection, actor, workspace_id, object_type, object_id, source)
        await _lock_object(connection, workspace_id, object_type, object_id)
        resolved = [await _resolve_principal(connection, workspace_id, spec, index)
                    for index, spec in enumerate(grants)]
        wanted: dict[tuple[str, str], tuple[_Resolved, list[str]]] = {}
        for principal, codes in zip(resolved, checked, strict=True):
            if principal.key in wanted:
                raise Problem(400, "validation-error", f"grants: {principal.kind} {principal.name!r} is listed twice",
                              field="grants")
            wanted[principal.key] = (principal, codes)
        old_rows = await connection.fetch(_GRANTS_SQL, workspace_id, object_type, object_id)
        old = {_key(row): sorted(row["permissions"]) for row in old_rows}
        old_restricted = await _is_restricted(connection, workspace_id, object_type, object_id)
        # Nobody grants what they do not hold themselves on this object.
        lacking = sorted({code for key, (_, codes) in wanted.items() for code in codes
                          if code not in old.get(key, ()) and not found.allows(code)})
        if lacking:
            raise Problem(403, "forbidden", f"You cannot grant permissions you lack on this object: "
                                            f"{', '.join(lacking)}", lacking=lacking)
        await connection.execute(
            "DELETE FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
            workspace_id, object_type, object_id)
        for principal, codes in wanted.values():
            await connection.execute(
                """INSERT INTO sygmax_acl_grant (workspace_id, object_type, object_id, principal_kind, user_id,
                                                 team_id, role_id, role, permissions, created_by)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
                workspace_id, object_type, object_id, principal.kind, principal.user_id, principal.team_id,
                principal.role_id, principal.role, codes, actor.user_id)
        if restricted or wanted:
            await connection.execute(
                "UPDATE sygmax_acl_object SET restricted = $4 WHERE workspace_id = $1 AND object_type = $2 "
                "AND object_id = $3", workspace_id, object_type, object_id, restricted)
        else:
            await connection.execute(
                "DELETE FROM sygmax_acl_object WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
                workspace_id, object_type, object_id)

        async def audit_row(action: str, details: dict) -> None:
            await audit.record(connection, actor_id=actor.user_id, action=action, object_type=object_type,
                               object_id=object_id, workspace_id=workspace_id, source=source, details=details)

        if restricted != old_restricted:
            await audit_row("acl.restrict" if restricted else "acl.unrestrict", {})
        for key, (_, codes) in wanted.items():
            if old.get(key) != codes:
                await audit_row("acl.grant", {"principal_kind": key[0], "principal": key[1],
                                              "permissions": codes, "previous": old.get(key)})
        for key, codes in old.items():
            if key not in wanted:
                await audit_row("acl.revoke", {"principal_kind": key[0], "principal": key[1], "permissions": codes})
        return await _view(connection, workspace_id, object_type, object_id)


async def do_clear_acl(actor: Actor, db, workspace_id: uuid.UUID, object_type: str, object_id: str, *, plugins=(),
                       source: Source | None = None) -> None:
    """Drop every grant and the restricted flag: the object is governed by workspace roles alone again."""
    async with workspaces.transaction(db) as connection:
        object_type, object_id = await _managed_object(connection, actor, workspace_id, object_type, object_id,
                                                       plugins, source)
        await _lock_object(connection, workspace_id, object_type, object_id)
        grants = await connection.fetchval(
            "SELECT count(*) FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2 AND object_id = $3",
            workspace_id, object_type, object_id)
        await policy.forget_object(connection, workspace_id=workspace_id, object_type=object_type,
                                   object_id=object_id)
        await audit.record(connection, actor_id=actor.user_id, action="acl.clear", object_type=object_type,
                           object_id=object_id, workspace_id=workspace_id, source=source,
                           details={"grants": grants})


__all__ = ["AclView", "GrantSpec", "GrantView", "PrincipalKind", "check_object", "do_clear_acl", "do_set_acl",
           "get_acl"]
