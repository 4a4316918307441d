"""Workspaces, members, teams and custom roles: every read and write, the actor first.

Each write runs in one transaction that checks the actor's access with
:func:`sygmax.auth.policy.require`, makes the change and appends its audit row, so the change
and its audit entry commit together or not at all. Every query is scoped by the workspace id,
so an id from another workspace is simply "not found" (404), never a leak.

Membership changes lock the workspace row first (``FOR UPDATE``): two concurrent demotions
cannot together remove the last owner.

Nobody can confer more than they hold: giving a role (to a member or an invitation) or
changing a member needs every permission of the role involved, and only owners make or
unmake owners.
"""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Iterable

import msgspec

from sygmax.auth import audit, policy
from sygmax.auth.audit import Source
from sygmax.auth.policy import BUILTIN_ROLES, Access, PermissionSet
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

NAME_MAX = 100
DESCRIPTION_MAX = 1000
ROLE_NAME_MAX = 64
MAX_CUSTOM_ROLES = 200
MAX_TEAMS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # newlines and tabs allowed
_MARKUP = re.compile(r"[<>]")
# The same rules as JSON-schema patterns, for the API's input types.
_NAME_CHAR = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029<>]"
NAME_PATTERN = rf"^{_NAME_CHAR}*[^\x00-\x1f\x7f-\x9f\u2028\u2029<>\s]{_NAME_CHAR}*$"
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029<>]*$"
ROLE_NAME_PATTERN = r"^\w[\w .-]*$"
_ROLE_NAME = re.compile(ROLE_NAME_PATTERN)


# ---------------------------------------------------------------------------------------------
# Views returned by the actions (and by the REST handlers as they are)


class WorkspaceView(msgspec.Struct):
    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime
    role: str
    role_id: uuid.UUID | None
    permissions: list[str]


class MemberView(msgspec.Struct):
    user_id: uuid.UUID
    email: str
    display_name: str
    role: str
    role_id: uuid.UUID | None
    joined_at: datetime


class TeamView(msgspec.Struct):
    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    description: str
    member_count: int
    created_at: datetime


class RoleView(msgspec.Struct):
    id: uuid.UUID | None
    name: str
    builtin: bool
    description: str
    permissions: list[str]
    member_count: int


# ---------------------------------------------------------------------------------------------
# Helpers


@asynccontextmanager
async def transaction(db) -> AsyncIterator:
    """A connection in a transaction, from a pool or an existing connection (then a savepoint)."""
    if hasattr(db, "acquire"):
        async with db.acquire() as connection:
            async with connection.transaction():
                yield connection
    else:
        async with db.transaction():
            yield db


@asynccontextmanager
async def connection_of(db) -> AsyncIterator:
    if hasattr(db, "acquire"):
        async with db.acquire() as connection:
            yield connection
    else:
        yield db


def clean_text(value: str, field: str, *, max_length: int, allow_empty: bool = False,
               multiline: bool = False) -> str:
    """Plain text: trimmed, no control characters (but newlines if ``multiline``), no markup brackets."""
    if not isinstance(value, str):
        raise Problem(400, "validation-error", f"{field}: must be a string", field=field)
    value = value.strip()
    if not value and not allow_empty:
        raise Problem(400, "validation-error", f"{field}: must not be blank", field=field)
    if len(value) > max_length:
        raise Problem(400, "validation-error", f"{field}: at most {max_length} characters", field=field)
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise Problem(400, "validation-error", f"{field}: control characters are not allowed", field=field)
    if _MARKUP.search(value):
        raise Problem(400, "validation-error", f"{field}: '<' and '>' are not allowed", field=field)
    return value


def _clean_description(description: str) -> str:
    """A team's or a role's description: plain text, possibly empty, newlines allowed."""
    return clean_text(description, "description", max_length=DESCRIPTION_MAX, allow_empty=True, multiline=True)


def _given(**fields) -> dict:
    """The fields of a partial update that were given (not None), in order: its audit details."""
    return {key: value for key, value in fields.items() if value is not None}


def known_codes(plugins) -> list[str]:
    return list(policy.known_permissions(plugins))


def can_confer(holder: Access, target: PermissionSet, target_role: str | None) -> bool:
    """Whether ``holder`` may give (or take away) a role with permissions ``target``."""
    if target_role == "owner":
        return holder.is_owner
    if holder.is_owner:
        return True
    if target.every:
        # Only a holder of "everything except X" can confer "everything except Y" with X <= Y.
        mine = holder.permissions
        return (mine.every and mine.excluded <= target.excluded and policy.scope_allows(holder.scopes, "*")
                and holder.holds_all(target.codes))
    return holder.holds_all(target.codes)


@dataclass(frozen=True)
class ResolvedRole:
    role: str | None
    role_id: uuid.UUID | None
    name: str
    permissions: PermissionSet


async def resolve_role(connection, workspace_id: uuid.UUID, text: str, field: str = "role") -> ResolvedRole:
    """A role reference: a built-in name, or a custom role's id or name in this workspace."""
    if text in BUILTIN_ROLES:
        return ResolvedRole(text, None, text, policy.builtin_permissions(text))
    try:
        role_uuid = uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        role_uuid = None
    if role_uuid is not None:
        row = await connection.fetchrow(
            "SELECT id, name, permissions FROM sygmax_role WHERE workspace_id = $1 AND id = $2",
            workspace_id, role_uuid)
    else:
        row = await connection.fetchrow(
            "SELECT id, name, permissions FROM sygmax_role WHERE workspace_id = $1 AND lower(name) = lower($2)",
            workspace_id, text)
    if row is None:
        raise Problem(400, "unknown-role", f"{field}: no role {text!r} in this workspace "
                                           f"(built-in: {', '.join(BUILTIN_ROLES)})", field=field)
    return ResolvedRole(None, row["id"], row["name"], PermissionSet(frozenset(row["permissions"])))


async def _require(connection, actor: Actor, permission: str, workspace_id: uuid.UUID,
                   source: Source | None) -> Access:
    """:func:`policy.require` in ``workspace_id``, a denial logged under the request of ``source``."""
    return await policy.require(connection, actor, permission, workspace_id=workspace_id,
                                request_id=source and source.request_id)


async def _fetch_one(connection, what: str, sql: str, *args):
    """The one row ``sql`` finds, or a 404 "No such ``what``"."""
    row = await connection.fetchrow(sql, *args)
    if row is None:
        raise Problem(404, "not-found", f"No such {what}")
    return row


async def _check_limit(connection, table: str, limit: int, what: str, workspace_id: uuid.UUID) -> None:
    """409 once the workspace holds ``limit`` rows of ``table`` (a constant table name, never input)."""
    if await connection.fetchval(f"SELECT count(*) FROM {table} WHERE workspace_id = $1", workspace_id) >= limit:
        raise Problem(409, "limit-reached", f"A workspace has at most {limit} {what}")


async def _check_name_free(connection, table: str, noun: str, workspace_id: uuid.UUID, name: str) -> None:
    """409 if ``table`` (a constant table name) already has a row named ``name`` (any case) in the workspace."""
    if await connection.fetchval(f"SELECT 1 FROM {table} WHERE workspace_id = $1 AND lower(name) = lower($2)",
                                 workspace_id, name):
        raise Problem(409, "conflict", f"A {noun} named {name!r} already exists", field="name")


async def _lock_workspace(connection, workspace_id: uuid.UUID) -> None:
    await connection.execute("SELECT 1 FROM sygmax_workspace WHERE id = $1 FOR UPDATE", workspace_id)


async def _owner_count(connection, workspace_id: uuid.UUID) -> int:
    return await connection.fetchval(
        "SELECT count(*) FROM sygmax_membership WHERE workspace_id = $1 AND role = 'owner'", workspace_id)


def _permissions_of(found: Access, plugins) -> list[str]:
    return [code for code in found.permissions.expand(known_codes(plugins))
            if policy.scope_allows(found.scopes, code)]


# ---------------------------------------------------------------------------------------------
# Workspaces


async def do_create_workspace(actor: Actor, db, name: str, *, plugins=(), source: Source | None = None
                              ) -> WorkspaceView:
    name = clean_text(name, "name", max_length=NAME_MAX)
    if not policy.scope_allows(actor.scopes, "*"):
        raise Problem(403, "forbidden", "Creating a workspace needs an API token without scope limits")
    workspace_id = uuid.uuid4()
    async with transaction(db) as connection:
        row = await connection.fetchrow(
            "INSERT INTO sygmax_workspace (id, name, created_by) VALUES ($1, $2, $3) "
            "RETURNING created_at, updated_at", workspace_id, name, actor.user_id)
        await connection.execute(
            "INSERT INTO sygmax_membership (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
            workspace_id, actor.user_id)
        await audit.record(connection, actor_id=actor.user_id, action="workspace.create", object_type="workspace",
                           object_id=workspace_id, workspace_id=workspace_id, source=source,
                           details={"name": name})
    return WorkspaceView(workspace_id, name, row["created_at"], row["updated_at"], "owner", None,
                         _permissions_of(Access(workspace_id, True, "owner", None, "owner",
                                                permissions=policy.builtin_permissions("owner"),
                                                scopes=actor.scopes), plugins))


async def list_workspaces(actor: Actor, db, *, plugins=()) -> list[WorkspaceView]:
    """The workspaces the actor is a member of, with their role there."""
    async with connection_of(db) as connection:
        rows = await connection.fetch(
            """SELECT w.id, w.name, w.created_at, w.updated_at, m.role, m.role_id, r.name AS role_name,
                      r.permissions AS role_permissions
               FROM sygmax_membership m JOIN sygmax_workspace w ON w.id = m.workspace_id
               LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
               WHERE m.user_id = $1 ORDER BY lower(w.name), w.id""", actor.user_id)
    views = []
    for row in rows:
        permissions = (policy.builtin_permissions(row["role"]) if row["role"]
                       else PermissionSet(frozenset(row["role_permissions"])))
        found = Access(row["id"], True, row["role"], row["role_id"], row["role"] or row["role_name"],
                       permissions=permissions, scopes=actor.scopes)
        views.append(WorkspaceView(row["id"], row["name"], row["created_at"], row["updated_at"],
                                   found.role_name, row["role_id"], _permissions_of(found, plugins)))
    return views


async def _workspace_view(connection, found: Access, plugins) -> WorkspaceView:
    row = await _fetch_one(connection, "workspace",
                           "SELECT id, name, created_at, updated_at FROM sygmax_workspace WHERE id = $1",
                           found.workspace_id)
    return WorkspaceView(row["id"], row["name"], row["created_at"], row["updated_at"], found.role_name,
                         found.role_id, _permissions_of(found, plugins))


async def get_workspace(actor: Actor, db, workspace_id: uuid.UUID, *, plugins=(),
                        source: Source | None = None) -> WorkspaceView:
    async with connection_of(db) as connection:
        found = await _require(connection, actor, "workspace.read", workspace_id, source)
        return await _workspace_view(connection, found, plugins)


async def do_update_workspace(actor: Actor, db, workspace_id: uuid.UUID, *, name: str, plugins=(),
                              source: Source | None = None) -> WorkspaceView:
    name = clean_text(name, "name", max_length=NAME_MAX)
    async with transaction(db) as connection:
        found = await _require(connection, actor, "workspace.update", workspace_id, source)
        old = await connection.fetchval("SELECT name FROM sygmax_workspace WHERE id = $1 FOR UPDATE", workspace_id)
        await connection.execute("UPDATE sygmax_workspace SET name = $2, updated_at = now() WHERE id = $1",
                                 workspace_id, name)
        await audit.record(connection, actor_id=actor.user_id, action="workspace.update", object_type="workspace",
                           object_id=workspace_id, workspace_id=workspace_id, source=source,
                           details={"name": {"from": old, "to": name}})
        return await _workspace_view(connection, found, plugins)


async def do_delete_workspace(actor: Actor, db, workspace_id: uuid.UUID, *, source: Source | None = None) -> None:
    """Delete the workspace and everything the kernel holds for it (hard delete; the audit log keeps the record)."""
    async with transaction(db) as connection:
        await _require(connection, actor, "workspace.delete", workspace_id, source)
        name = await connection.fetchval("SELECT name FROM sygmax_workspace WHERE id = $1 FOR UPDATE", workspace_id)
        members = await connection.fetchval("SELECT count(*) FROM sygmax_membership WHERE workspace_id = $1",
                                            workspace_id)
        # Memberships first: their role_id foreign key would otherwise block the roles' cascade.
        await connection.execute("DELETE FROM sygmax_membership WHERE workspace_id = $1", workspace_id)
        await connection.execute("DELETE FROM sygmax_workspace WHERE id = $1", workspace_id)
        await audit.record(connection, actor_id=actor.user_id, action="workspace.delete", object_type="workspace",
                           object_id=workspace_id, workspace_id=workspace_id, source=source,
                           details={"name": name, "members": members})


# ---------------------------------------------------------------------------------------------
# Members

_MEMBER_SQL = """
SELECT m.user_id, u.email, u.display_name, m.role, m.role_id, r.name AS role_name, m.joined_at
FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id
LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
WHERE m.workspace_id = $1
"""


def _member_view(row) -> MemberView:
    return MemberView(row["user_id"], row["email"], row["display_name"], row["role"] or row["role_name"],
                      row["role_id"], row["joined_at"])


async def list_members(actor: Actor, db, workspace_id: uuid.UUID, *, source: Source | None = None
                       ) -> list[MemberView]:
    async with connection_of(db) as connection:
        await _require(connection, actor, "members.read", workspace_id, source)
        rows = await connection.fetch(_MEMBER_SQL + " ORDER BY lower(u.display_name), m.user_id", workspace_id)
    return [_member_view(row) for row in rows]


async def _member_row(connection, workspace_id: uuid.UUID, user_id: uuid.UUID):
    return await _fetch_one(connection, "member", _MEMBER_SQL + " AND m.user_id = $2", workspace_id, user_id)


def _role_permissions(row) -> PermissionSet:
    if row["role"]:
        return policy.builtin_permissions(row["role"])
    return PermissionSet(frozenset(row["role_permissions"]))


async def _member_with_role(connection, workspace_id: uuid.UUID, user_id: uuid.UUID):
    return await _fetch_one(
        connection, "member",
        """SELECT m.role, m.role_id, r.permissions AS role_permissions FROM sygmax_membership m
           LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
           WHERE m.workspace_id = $1 AND m.user_id = $2""", workspace_id, user_id)


async def do_change_member_role(actor: Actor, db, workspace_id: uuid.UUID, user_id: uuid.UUID, *, role: str,
                                source: Source | None = None) -> MemberView:
    async with transaction(db) as connection:
        found = await _require(connection, actor, "members.manage", workspace_id, source)
        await _lock_workspace(connection, workspace_id)
        current = await _member_with_role(connection, workspace_id, user_id)
        target = await resolve_role(connection, workspace_id, role)
        if not can_confer(found, _role_permissions(current), current["role"]):
            raise Problem(403, "forbidden", "You cannot change the role of a member who holds more than you")
        if not can_confer(found, target.permissions, target.role):
            raise Problem(403, "forbidden", f"You cannot give the role {target.name}: it holds permissions you lack")
        if current["role"] == "owner" and target.role != "owner" and await _owner_count(connection, workspace_id) <= 1:
            raise Problem(409, "last-owner", "The last owner cannot be demoted; make someone else owner first")
        await connection.execute(
            "UPDATE sygmax_membership SET role = $3, role_id = $4 WHERE workspace_id = $1 AND user_id = $2",
            workspace_id, user_id, target.role, target.role_id)
        await audit.record(connection, actor_id=actor.user_id, action="member.role_change", object_type="member",
                           object_id=user_id, workspace_id=workspace_id, source=source,
                           details={"from": current["role"] or str(current["role_id"]),
                                    "to": target.role or str(target.role_id)})
        return _member_view(await _member_row(connection, workspace_id, user_id))


async def do_remove_member(actor: Actor, db, workspace_id: uuid.UUID, user_id: uuid.UUID, *,
                           source: Source | None = None) -> None:
    async with transaction(db) as connection:
        found = await _require(connection, actor, "members.manage", workspace_id, source)
        await _lock_workspace(connection, workspace_id)
        current = await _member_with_role(connection, workspace_id, user_id)
        if not can_confer(found, _role_permissions(current), current["role"]):
            raise Problem(403, "forbidden", "You cannot remove a member who holds more than you")
        if current["role"] == "owner" and await _owner_count(connection, workspace_id) <= 1:
            raise Problem(409, "last-owner", "The last owner cannot be removed; make someone else owner first")
        await connection.execute("DELETE FROM sygmax_membership WHERE workspace_id = $1 AND user_id = $2",
                                 workspace_id, user_id)
        await audit.record(connection, actor_id=actor.user_id, action="member.remove", object_type="member",
                           object_id=user_id, workspace_id=workspace_id, source=source,
                           details={"role": current["role"] or str(current["role_id"])})


async def do_leave_workspace(actor: Actor, db, workspace_id: uuid.UUID, *, source: Source | None = None) -> None:
    async with transaction(db) as connection:
        found = await policy.access(connection, actor, workspace_id=workspace_id)
        if not found.member:
            policy.deny(found, "workspace.read", request_id=source and source.request_id, what="workspace")
        await _lock_workspace(connection, workspace_id)
        if found.role == "owner" and await _owner_count(connection, workspace_id) <= 1:
            raise Problem(409, "last-owner", "The last owner cannot leave; make someone else owner or delete "
                                             "the workspace")
        await connection.execute("DELETE FROM sygmax_membership WHERE workspace_id = $1 AND user_id = $2",
                                 workspace_id, actor.user_id)
        await audit.record(connection, actor_id=actor.user_id, action="member.leave", object_type="member",
                           object_id=actor.user_id, workspace_id=workspace_id, source=source,
                           details={"role": found.role or str(found.role_id)})


async def sole_owner_workspaces(db, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Workspaces where ``user_id`` is the only owner (account deletion must resolve these first)."""
    async with connection_of(db) as connection:
        rows = await connection.fetch(
            """SELECT m.workspace_id FROM sygmax_membership m
               WHERE m.user_id = $1 AND m.role = 'owner'
                 AND NOT EXISTS (SELECT 1 FROM sygmax_membership o WHERE o.workspace_id = m.workspace_id
                                 AND o.role = 'owner' AND o.user_id <> m.user_id)""", user_id)
    return [row["workspace_id"] for row in rows]


# ---------------------------------------------------------------------------------------------
# Teams

_TEAM_SQL = """
SELECT t.id, t.workspace_id, t.name, t.description, t.created_at,
       (SELECT count(*) FROM sygmax_team_member tm WHERE tm.team_id = t.id) AS member_count
FROM sygmax_team t WHERE t.workspace_id = $1
"""


def _team_view(row) -> TeamView:
    return TeamView(row["id"], row["workspace_id"], row["name"], row["description"], row["member_count"],
                    row["created_at"])


async def _team_row(connection, workspace_id: uuid.UUID, team_id: uuid.UUID):
    return await _fetch_one(connection, "team", _TEAM_SQL + " AND t.id = $2", workspace_id, team_id)


async def list_teams(actor: Actor, db, workspace_id: uuid.UUID, *, source: Source | None = None) -> list[TeamView]:
    async with connection_of(db) as connection:
        await _require(connection, actor, "members.read", workspace_id, source)
        rows = await connection.fetch(_TEAM_SQL + " ORDER BY lower(t.name), t.id", workspace_id)
    return [_team_view(row) for row in rows]


async def get_team(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID, *,
                   source: Source | None = None) -> TeamView:
    async with connection_of(db) as connection:
        await _require(connection, actor, "members.read", workspace_id, source)
        return _team_view(await _team_row(connection, workspace_id, team_id))


async def do_create_team(actor: Actor, db, workspace_id: uuid.UUID, *, name: str, description: str = "",
                         source: Source | None = None) -> TeamView:
    name = clean_text(name, "name", max_length=NAME_MAX)
    description = _clean_description(description)
    team_id = uuid.uuid4()
    async with transaction(db) as connection:
        await _require(connection, actor, "teams.manage", workspace_id, source)
        await _lock_workspace(connection, workspace_id)
        await _check_limit(connection, "sygmax_team", MAX_TEAMS, "teams", workspace_id)
        await _check_name_free(connection, "sygmax_team", "team", workspace_id, name)
        await connection.execute(
            "INSERT INTO sygmax_team (id, workspace_id, name, description) VALUES ($1, $2, $3, $4)",
            team_id, workspace_id, name, description)
        await audit.record(connection, actor_id=actor.user_id, action="team.create", object_type="team",
                           object_id=team_id, workspace_id=workspace_id, source=source, details={"name": name})
        return _team_view(await _team_row(connection, workspace_id, team_id))


async def do_update_team(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID, *,
                         name: str | None = None, description: str | None = None,
                         source: Source | None = None) -> TeamView:
    if name is not None:
        name = clean_text(name, "name", max_length=NAME_MAX)
    if description is not None:
        description = _clean_description(description)
    async with transaction(db) as connection:
        await _require(connection, actor, "teams.manage", workspace_id, source)
        current = await _team_row(connection, workspace_id, team_id)
        if name is not None and name.lower() != current["name"].lower():
            await _check_name_free(connection, "sygmax_team", "team", workspace_id, name)
        await connection.execute(
            "UPDATE sygmax_team SET name = coalesce($3, name), description = coalesce($4, description) "
            "WHERE workspace_id = $1 AND id = $2", workspace_id, team_id, name, description)
        changes = _given(name=name, description=description)
        await audit.record(connection, actor_id=actor.user_id, action="team.update", object_type="team",
                           object_id=team_id, workspace_id=workspace_id, source=source, details=changes)
        return _team_view(await _team_row(connection, workspace_id, team_id))


async def do_delete_team(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID, *,
                         source: Source | None = None) -> None:
    async with transaction(db) as connection:
        await _require(connection, actor, "teams.manage", workspace_id, source)
        current = await _team_row(connection, workspace_id, team_id)
        await connection.execute("DELETE FROM sygmax_team WHERE workspace_id = $1 AND id = $2", workspace_id, team_id)
        await audit.record(connection, actor_id=actor.user_id, action="team.delete", object_type="team",
                           object_id=team_id, workspace_id=workspace_id, source=source,
                           details={"name": current["name"]})


async def list_team_members(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID, *,
                            source: Source | None = None) -> list[MemberView]:
    async with connection_of(db) as connection:
        await _require(connection, actor, "members.read", workspace_id, source)
        await _team_row(connection, workspace_id, team_id)
        rows = await connection.fetch(
            _MEMBER_SQL + " AND m.user_id IN (SELECT user_id FROM sygmax_team_member WHERE team_id = $2)"
                          " ORDER BY lower(u.display_name), m.user_id", workspace_id, team_id)
    return [_member_view(row) for row in rows]


async def do_add_team_member(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID, *,
                             source: Source | None = None) -> MemberView:
    async with transaction(db) as connection:
        await _require(connection, actor, "teams.manage", workspace_id, source)
        await _team_row(connection, workspace_id, team_id)
        member = await _member_row(connection, workspace_id, user_id)
        added = await connection.fetchval(
            "INSERT INTO sygmax_team_member (workspace_id, team_id, user_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING 1", workspace_id, team_id, user_id)
        if added:
            await audit.record(connection, actor_id=actor.user_id, action="team.member_add", object_type="team",
                               object_id=team_id, workspace_id=workspace_id, source=source,
                               details={"user_id": str(user_id)})
        return _member_view(member)


async def do_remove_team_member(actor: Actor, db, workspace_id: uuid.UUID, team_id: uuid.UUID,
                                user_id: uuid.UUID, *, source: Source | None = None) -> None:
    async with transaction(db) as connection:
        await _require(connection, actor, "teams.manage", workspace_id, source)
        await _team_row(connection, workspace_id, team_id)
        removed = await connection.fetchval(
            "DELETE FROM sygmax_team_member WHERE workspace_id = $1 AND team_id = $2 AND user_id = $3 RETURNING 1",
            workspace_id, team_id, user_id)
        if not removed:
            raise Problem(404, "not-found", "No such team member")
        await audit.record(connection, actor_id=actor.user_id, action="team.member_remove", object_type="team",
                           object_id=team_id, workspace_id=workspace_id, source=source,
                           details={"user_id": str(user_id)})


# ---------------------------------------------------------------------------------------------
# Roles

_ROLE_SQL = """
SELECT r.id, r.name, r.description, r.permissions,
       (SELECT count(*) FROM sygmax_membership m WHERE m.workspace_id = r.workspace_id AND m.role_id = r.id)
           AS member_count
FROM sygmax_role r WHERE r.workspace_id = $1
"""

_BUILTIN_DESCRIPTIONS = {
    "owner": "Everything, including deleting the workspace and making other owners",
    "admin": "Everything except deleting the workspace and making owners",
    "editor": "Read the workspace and use the modules (their editor permissions)",
    "viewer": "Read the workspace and what modules let viewers see",
}


def _role_view(row) -> RoleView:
    return RoleView(row["id"], row["name"], False, row["description"], sorted(row["permissions"]),
                    row["member_count"])


async def _role_row(connection, workspace_id: uuid.UUID, role_id: uuid.UUID):
    return await _fetch_one(connection, "role", _ROLE_SQL + " AND r.id = $2", workspace_id, role_id)


def check_role_name(name: str) -> str:
    name = clean_text(name, "name", max_length=ROLE_NAME_MAX)
    if not _ROLE_NAME.match(name):
        raise Problem(400, "validation-error", "name: letters, digits, spaces, '_', '.' and '-' only, "
                                               "starting with a letter or digit", field="name")
    if name.lower() in BUILTIN_ROLES:
        raise Problem(400, "validation-error", f"name: {name!r} is a built-in role", field="name")
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise Problem(400, "validation-error", "name: must not look like an id", field="name")


async def list_roles(actor: Actor, db, workspace_id: uuid.UUID, *, plugins=(), source: Source | None = None
                     ) -> list[RoleView]:
    async with connection_of(db) as connection:
        await _require(connection, actor, "workspace.read", workspace_id, source)
        counts = dict(await connection.fetch(
            "SELECT role, count(*) FROM sygmax_membership WHERE workspace_id = $1 AND role IS NOT NULL "
            "GROUP BY role", workspace_id))
        rows = await connection.fetch(_ROLE_SQL + " ORDER BY lower(r.name)", workspace_id)
    codes = known_codes(plugins)
    builtin = [RoleView(None, name, True, _BUILTIN_DESCRIPTIONS[name],
                        policy.builtin_permissions(name).expand(codes), counts.get(name, 0))
               for name in BUILTIN_ROLES]
    return builtin + [_role_view(row) for row in rows]


async def get_role(actor: Actor, db, workspace_id: uuid.UUID, role_id: uuid.UUID, *,
                   source: Source | None = None) -> RoleView:
    async with connection_of(db) as connection:
        await _require(connection, actor, "workspace.read", workspace_id, source)
        return _role_view(await _role_row(connection, workspace_id, role_id))


def _check_can_define(found: Access, codes: Iterable[str]) -> None:
    lacking = sorted(code for code in codes if not found.allows(code))
    if lacking:
        raise Problem(403, "forbidden", f"You cannot define a role with permissions you lack: {', '.join(lacking)}",
                      lacking=lacking)


async def do_create_role(actor: Actor, db, workspace_id: uuid.UUID, *, name: str, permissions: list[str],
                         description: str = "", plugins=(), source: Source | None = None) -> RoleView:
    description = _clean_description(description)
    role_id = uuid.uuid4()
    async with transaction(db) as connection:
        found = await _require(connection, actor, "roles.manage", workspace_id, source)
        name = check_role_name(name)
        codes = policy.check_permission_codes(permissions, plugins, "permissions")
        _check_can_define(found, codes)
        await _lock_workspace(connection, workspace_id)
        await _check_limit(connection, "sygmax_role", MAX_CUSTOM_ROLES, "custom roles", workspace_id)
        await _check_name_free(connection, "sygmax_role", "role", workspace_id, name)
        await connection.execute(
            "INSERT INTO sygmax_role (id, workspace_id, name, description, permissions) VALUES ($1, $2, $3, $4, $5)",
            role_id, workspace_id, name, description, codes)
        await audit.record(connection, actor_id=actor.user_id, action="role.create", object_type="role",
                           object_id=role_id, workspace_id=workspace_id, source=source,
                           details={"name": name, "permissions": codes})
        return _role_view(await _role_row(connection, workspace_id, role_id))


async def do_update_role(actor: Actor, db, workspace_id: uuid.UUID, role_id: uuid.UUID, *, name: str | None = None,
                         description: str | None = None, permissions: list[str] | None = None, plugins=(),
                         source: Source | None = None) -> RoleView:
    if description is not None:
        description = _clean_description(description)
    async with transaction(db) as connection:
        found = await _require(connection, actor, "roles.manage", workspace_id, source)
        if name is not None:
            name = check_role_name(name)
        codes = (policy.check_permission_codes(permissions, plugins, "permissions") if permissions is not None
                 else None)
        await _lock_workspace(connection, workspace_id)
        current = await _role_row(connection, workspace_id, role_id)
        # Changing a role changes what its members hold: the actor must hold all of it, before and after.
        _check_can_define(found, current["permissions"])
        if codes is not None:
            _check_can_define(found, codes)
        if name is not None and name.lower() != current["name"].lower():
            await _check_name_free(connection, "sygmax_role", "role", workspace_id, name)
        await connection.execute(
            """UPDATE sygmax_role SET name = coalesce($3, name), description = coalesce($4, description),
                      permissions = coalesce($5, permissions), updated_at = now()
               WHERE workspace_id = $1 AND id = $2""", workspace_id, role_id, name, description, codes)
        details = _given(name=name, description=description)
        if codes is not None:
            details["permissions"] = {"from": sorted(current["permissions"]), "to": codes}
        await audit.record(connection, actor_id=actor.user_id, action="role.update", object_type="role",
                           object_id=role_id, workspace_id=workspace_id, source=source, details=details)
        return _role_view(await _role_row(connection, workspace_id, role_id))


async def do_delete_role(actor: Actor, db, workspace_id: uuid.UUID, role_id: uuid.UUID, *,
                         source: Source | None = None) -> None:
    async with transaction(db) as connection:
        found = await _require(connection, actor, "roles.manage", workspace_id, source)
        await _lock_workspace(connection, workspace_id)
        current = await _role_row(connection, workspace_id, role_id)
        _check_can_define(found, current["permissions"])
        pending = await connection.fetchval(
            "SELECT count(*) FROM sygmax_invite WHERE workspace_id = $1 AND role_id = $2 AND used_at IS NULL "
            "AND expires_at > now()", workspace_id, role_id)
        if current["member_count"] or pending:
            raise Problem(409, "role-in-use", f"The role is held by {current['member_count']} member(s) and "
                                              f"{pending} pending invitation(s); give them another role first",
                          members=current["member_count"], invites=pending)
        await connection.execute("DELETE FROM sygmax_role WHERE workspace_id = $1 AND id = $2", workspace_id, role_id)
        await audit.record(connection, actor_id=actor.user_id, action="role.delete", object_type="role",
                           object_id=role_id, workspace_id=workspace_id, source=source,
                           details={"name": current["name"]})
