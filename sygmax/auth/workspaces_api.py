"""Thin HTTP handlers for workspaces, members, invitations, teams, roles, ACLs and the audit log.

Each handler parses its input (msgspec Structs that forbid unknown fields and bound every
size), calls one action of sygmax.auth.workspaces / invites / acl / audit_query with the
actor first, and returns the action's view.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Request, delete, get, patch, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from sygmax.auth import acl, audit_query, invites, policy, workspaces
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import CurrentActor
from sygmax.errors import problem_responses
from sygmax.kernel import KernelDep

# What the schema can say, it says (so clients and the fuzzer see the real contract); what
# depends on the workspace (does this role exist?) is checked by the actions, after access.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=workspaces.NAME_MAX, pattern=workspaces.NAME_PATTERN,
                                   description="plain text: no control characters, no < or >")]
Description = Annotated[str, msgspec.Meta(max_length=workspaces.DESCRIPTION_MAX,
                                          pattern=workspaces.DESCRIPTION_PATTERN)]
RoleRef = Annotated[str, msgspec.Meta(min_length=1, max_length=workspaces.ROLE_NAME_MAX,
                                      description="a built-in role (owner, admin, editor, viewer), or a custom "
                                                  "role's id or name")]
RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=workspaces.ROLE_NAME_MAX,
                                       pattern=workspaces.ROLE_NAME_PATTERN)]
# Permission codes are checked by the actions (known, not owner-only), after access: the
# OpenAPI generator does not carry constraints on list items into the schema.
PermissionList = Annotated[list[str], msgspec.Meta(max_length=200)]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=invites.EMAIL_PATTERN)]

SECURITY = [{"bearer": []}]



def _responses(*codes: int) -> dict[int, ResponseSpec]:
    text = {403: "Not allowed", 409: "Conflicts with the current state", 503: "The mail relay is unavailable"}
    return problem_responses(text, *codes)


# ---------------------------------------------------------------------------------------------
# Inputs


class WorkspaceIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class WorkspacePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class MemberPatch(msgspec.Struct, forbid_unknown_fields=True):
    role: RoleRef


class InviteIn(msgspec.Struct, forbid_unknown_fields=True):
    role: RoleRef = "editor"
    email: Email | None = None
    ttl_s: Annotated[int, msgspec.Meta(ge=300, le=invites.MAX_TTL_S)] | None = None


class TeamIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class TeamPatch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    description: Description | None = None


class RoleIn(msgspec.Struct, forbid_unknown_fields=True):
    name: RoleName
    permissions: PermissionList
    description: Description = ""


class RolePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: RoleName | None = None
    permissions: PermissionList | None = None
    description: Description | None = None


class GrantIn(msgspec.Struct, forbid_unknown_fields=True):
    principal_kind: Literal["user", "team", "role"]
    principal: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    permissions: Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]


class AclIn(msgspec.Struct, forbid_unknown_fields=True):
    grants: Annotated[list[GrantIn], msgspec.Meta(max_length=acl.MAX_GRANTS)]
    restricted: bool = False


class PermissionOut(msgspec.Struct):
    code: str
    description: str
    declared_by: str
    roles: list[str]


# Query parameters of both audit routes.
Actor_ = Annotated[uuid.UUID | None, QueryParameter(name="actor", description="actor's user id")]
Action = Annotated[str | None, QueryParameter(min_length=1, max_length=100, pattern=audit_query.ACTION_PATTERN,
                                              description="exact action, or a prefix like member.*")]
ObjectType = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]
ObjectId = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]
Since = Annotated[datetime | None, QueryParameter(description="entries at or after (ISO-8601 with zone)")]
Until = Annotated[datetime | None, QueryParameter(description="entries before (ISO-8601 with zone)")]
Cursor = Annotated[int | None, QueryParameter(ge=1, le=2**62, description="next_cursor of the previous page")]
Limit = Annotated[int, QueryParameter(ge=1, le=audit_query.MAX_LIMIT)]

WS = "/api/v1/workspaces/{workspace_id:uuid}"
TAGS = ["workspaces"]


def _plugins(kernel) -> list:
    return list(kernel.plugins.values())


# ---------------------------------------------------------------------------------------------
# Workspaces


@post("/api/v1/workspaces", tags=TAGS, summary="Create a workspace (you become its owner)", security=SECURITY,
      responses=_responses(403))
async def create_workspace(data: JSONBody[WorkspaceIn], actor: CurrentActor, kernel: KernelDep,
                           request: Request) -> workspaces.WorkspaceView:
    return await workspaces.do_create_workspace(actor, kernel.db.pool, data.name, plugins=_plugins(kernel),
                                                source=source_of(request))


@get("/api/v1/workspaces", tags=TAGS, summary="The workspaces you are a member of", security=SECURITY)
async def my_workspaces(actor: CurrentActor, kernel: KernelDep) -> list[workspaces.WorkspaceView]:
    return await workspaces.list_workspaces(actor, kernel.db.pool, plugins=_plugins(kernel))


@get(WS, tags=TAGS, summary="One workspace, with your role and permissions there", security=SECURITY,
     responses=_responses(403))
async def read_workspace(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                         request: Request) -> workspaces.WorkspaceView:
    return await workspaces.get_workspace(actor, kernel.db.pool, workspace_id, plugins=_plugins(kernel),
                                          source=source_of(request))


@patch(WS, tags=TAGS, summary="Rename a workspace", security=SECURITY, responses=_responses(403))
async def update_workspace(workspace_id: FromPath[uuid.UUID], data: JSONBody[WorkspacePatch], actor: CurrentActor,
                           kernel: KernelDep, request: Request) -> workspaces.WorkspaceView:
    return await workspaces.do_update_workspace(actor, kernel.db.pool, workspace_id, name=data.name,
                                                plugins=_plugins(kernel), source=source_of(request))


@delete(WS, tags=TAGS, summary="Delete a workspace and everything in it (owners only)", security=SECURITY,
        responses=_responses(403))
async def delete_workspace(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                           request: Request) -> None:
    await workspaces.do_delete_workspace(actor, kernel.db.pool, workspace_id, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Members


@get(WS + "/members", tags=TAGS, summary="Members of a workspace", security=SECURITY, responses=_responses(403))
async def members(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                  request: Request) -> list[workspaces.MemberView]:
    return await workspaces.list_members(actor, kernel.db.pool, workspace_id, source=source_of(request))


@patch(WS + "/members/{user_id:uuid}", tags=TAGS, summary="Change a member's role", security=SECURITY,
       responses=_responses(403, 409))
async def change_member_role(workspace_id: FromPath[uuid.UUID], user_id: FromPath[uuid.UUID],
                             data: JSONBody[MemberPatch], actor: CurrentActor, kernel: KernelDep,
                             request: Request) -> workspaces.MemberView:
    return await workspaces.do_change_member_role(actor, kernel.db.pool, workspace_id, user_id, role=data.role,
                                                  source=source_of(request))


@delete(WS + "/members/{user_id:uuid}", tags=TAGS, summary="Remove a member", security=SECURITY,
        responses=_responses(403, 409))
async def remove_member(workspace_id: FromPath[uuid.UUID], user_id: FromPath[uuid.UUID], actor: CurrentActor,
                        kernel: KernelDep, request: Request) -> None:
    await workspaces.do_remove_member(actor, kernel.db.pool, workspace_id, user_id, source=source_of(request))


@post(WS + "/leave", tags=TAGS, summary="Leave a workspace", security=SECURITY, status_code=204,
      responses=_responses(409))
async def leave_workspace(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                          request: Request) -> None:
    await workspaces.do_leave_workspace(actor, kernel.db.pool, workspace_id, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Invitations


@post(WS + "/invites", tags=TAGS, summary="Invite someone (a link; mailed too when email is given)",
      security=SECURITY, responses=_responses(403, 503))
async def create_invite(workspace_id: FromPath[uuid.UUID], data: JSONBody[InviteIn], actor: CurrentActor,
                        kernel: KernelDep, request: Request) -> invites.CreatedInvite:
    return await invites.do_create_invite(
        actor, kernel.db.pool, workspace_id, role=data.role, email=data.email, ttl_s=data.ttl_s,
        public_url=kernel.settings.server.public_url, smtp=kernel.settings.smtp, source=source_of(request))


@get(WS + "/invites", tags=TAGS, summary="Invitations of a workspace", security=SECURITY, responses=_responses(403))
async def list_invites(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                       request: Request) -> list[invites.InviteView]:
    return await invites.list_invites(actor, kernel.db.pool, workspace_id, source=source_of(request))


@delete(WS + "/invites/{invite_id:uuid}", tags=TAGS, summary="Revoke an invitation", security=SECURITY,
        responses=_responses(403))
async def delete_invite(workspace_id: FromPath[uuid.UUID], invite_id: FromPath[uuid.UUID], actor: CurrentActor,
                        kernel: KernelDep, request: Request) -> None:
    await invites.do_delete_invite(actor, kernel.db.pool, workspace_id, invite_id, source=source_of(request))


@post("/api/v1/invites/{token:str}/accept", tags=TAGS, summary="Accept an invitation: join its workspace",
      security=SECURITY, status_code=200, responses=_responses(409))
async def accept_invite(token: FromPath[str], actor: CurrentActor, kernel: KernelDep,
                        request: Request) -> invites.AcceptedInvite:
    return await invites.do_accept_invite(actor, kernel.db.pool, token, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Teams


@get(WS + "/teams", tags=TAGS, summary="Teams of a workspace", security=SECURITY, responses=_responses(403))
async def teams(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                request: Request) -> list[workspaces.TeamView]:
    return await workspaces.list_teams(actor, kernel.db.pool, workspace_id, source=source_of(request))


@post(WS + "/teams", tags=TAGS, summary="Create a team", security=SECURITY, responses=_responses(403, 409))
async def create_team(workspace_id: FromPath[uuid.UUID], data: JSONBody[TeamIn], actor: CurrentActor,
                      kernel: KernelDep, request: Request) -> workspaces.TeamView:
    return await workspaces.do_create_team(actor, kernel.db.pool, workspace_id, name=data.name,
                                           description=data.description, source=source_of(request))


@get(WS + "/teams/{team_id:uuid}", tags=TAGS, summary="One team", security=SECURITY, responses=_responses(403))
async def read_team(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID], actor: CurrentActor,
                    kernel: KernelDep, request: Request) -> workspaces.TeamView:
    return await workspaces.get_team(actor, kernel.db.pool, workspace_id, team_id, source=source_of(request))


@patch(WS + "/teams/{team_id:uuid}", tags=TAGS, summary="Rename or describe a team", security=SECURITY,
       responses=_responses(403, 409))
async def update_team(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID], data: JSONBody[TeamPatch],
                      actor: CurrentActor, kernel: KernelDep, request: Request) -> workspaces.TeamView:
    return await workspaces.do_update_team(actor, kernel.db.pool, workspace_id, team_id, name=data.name,
                                           description=data.description, source=source_of(request))


@delete(WS + "/teams/{team_id:uuid}", tags=TAGS, summary="Delete a team", security=SECURITY,
        responses=_responses(403))
async def delete_team(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID], actor: CurrentActor,
                      kernel: KernelDep, request: Request) -> None:
    await workspaces.do_delete_team(actor, kernel.db.pool, workspace_id, team_id, source=source_of(request))


@get(WS + "/teams/{team_id:uuid}/members", tags=TAGS, summary="Members of a team", security=SECURITY,
     responses=_responses(403))
async def team_members(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID], actor: CurrentActor,
                       kernel: KernelDep, request: Request) -> list[workspaces.MemberView]:
    return await workspaces.list_team_members(actor, kernel.db.pool, workspace_id, team_id,
                                              source=source_of(request))


@put(WS + "/teams/{team_id:uuid}/members/{user_id:uuid}", tags=TAGS, summary="Add a workspace member to a team",
     security=SECURITY, responses=_responses(403))
async def add_team_member(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID],
                          user_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                          request: Request) -> workspaces.MemberView:
    return await workspaces.do_add_team_member(actor, kernel.db.pool, workspace_id, team_id, user_id,
                                               source=source_of(request))


@delete(WS + "/teams/{team_id:uuid}/members/{user_id:uuid}", tags=TAGS, summary="Remove someone from a team",
        security=SECURITY, responses=_responses(403))
async def remove_team_member(workspace_id: FromPath[uuid.UUID], team_id: FromPath[uuid.UUID],
                             user_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                             request: Request) -> None:
    await workspaces.do_remove_team_member(actor, kernel.db.pool, workspace_id, team_id, user_id,
                                           source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Roles and permissions


@get("/api/v1/permissions", tags=TAGS, summary="Every permission the kernel and the enabled plugins declare",
     security=SECURITY)
async def permissions(actor: CurrentActor, kernel: KernelDep) -> list[PermissionOut]:
    return [PermissionOut(code, description, declared_by, list(roles))
            for code, (declared_by, description, roles) in policy.known_permissions(_plugins(kernel)).items()]


@get(WS + "/roles", tags=TAGS, summary="Built-in and custom roles of a workspace", security=SECURITY,
     responses=_responses(403))
async def roles(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                request: Request) -> list[workspaces.RoleView]:
    return await workspaces.list_roles(actor, kernel.db.pool, workspace_id, plugins=_plugins(kernel),
                                       source=source_of(request))


@post(WS + "/roles", tags=TAGS, summary="Create a custom role", security=SECURITY, responses=_responses(403, 409))
async def create_role(workspace_id: FromPath[uuid.UUID], data: JSONBody[RoleIn], actor: CurrentActor,
                      kernel: KernelDep, request: Request) -> workspaces.RoleView:
    return await workspaces.do_create_role(actor, kernel.db.pool, workspace_id, name=data.name,
                                           permissions=data.permissions, description=data.description,
                                           plugins=_plugins(kernel), source=source_of(request))


@get(WS + "/roles/{role_id:uuid}", tags=TAGS, summary="One custom role", security=SECURITY,
     responses=_responses(403))
async def read_role(workspace_id: FromPath[uuid.UUID], role_id: FromPath[uuid.UUID], actor: CurrentActor,
                    kernel: KernelDep, request: Request) -> workspaces.RoleView:
    return await workspaces.get_role(actor, kernel.db.pool, workspace_id, role_id, source=source_of(request))


@patch(WS + "/roles/{role_id:uuid}", tags=TAGS, summary="Change a custom role", security=SECURITY,
       responses=_responses(403, 409))
async def update_role(workspace_id: FromPath[uuid.UUID], role_id: FromPath[uuid.UUID], data: JSONBody[RolePatch],
                      actor: CurrentActor, kernel: KernelDep, request: Request) -> workspaces.RoleView:
    return await workspaces.do_update_role(actor, kernel.db.pool, workspace_id, role_id, name=data.name,
                                           description=data.description, permissions=data.permissions,
                                           plugins=_plugins(kernel), source=source_of(request))


@delete(WS + "/roles/{role_id:uuid}", tags=TAGS, summary="Delete an unused custom role", security=SECURITY,
        responses=_responses(403, 409))
async def delete_role(workspace_id: FromPath[uuid.UUID], role_id: FromPath[uuid.UUID], actor: CurrentActor,
                      kernel: KernelDep, request: Request) -> None:
    await workspaces.do_delete_role(actor, kernel.db.pool, workspace_id, role_id, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Per-object ACLs

ACL = WS + "/acl/{object_type:str}/{object_id:str}"


@get(ACL, tags=TAGS, summary="Who may access an object", security=SECURITY, responses=_responses(403))
async def read_acl(workspace_id: FromPath[uuid.UUID], object_type: FromPath[str], object_id: FromPath[str],
                   actor: CurrentActor, kernel: KernelDep, request: Request) -> acl.AclView:
    return await acl.get_acl(actor, kernel.db.pool, workspace_id, object_type, object_id, plugins=_plugins(kernel),
                             source=source_of(request))


@put(ACL, tags=TAGS, summary="Replace an object's grants and restricted flag", security=SECURITY,
     responses=_responses(403))
async def replace_acl(workspace_id: FromPath[uuid.UUID], object_type: FromPath[str], object_id: FromPath[str],
                      data: JSONBody[AclIn], actor: CurrentActor, kernel: KernelDep, request: Request) -> acl.AclView:
    grants = [acl.GrantSpec(grant.principal_kind, grant.principal, list(grant.permissions)) for grant in data.grants]
    return await acl.do_set_acl(actor, kernel.db.pool, workspace_id, object_type, object_id,
                                restricted=data.restricted, grants=grants, plugins=_plugins(kernel),
                                source=source_of(request))


@delete(ACL, tags=TAGS, summary="Drop an object's grants and restriction", security=SECURITY,
        responses=_responses(403))
async def clear_acl(workspace_id: FromPath[uuid.UUID], object_type: FromPath[str], object_id: FromPath[str],
                    actor: CurrentActor, kernel: KernelDep, request: Request) -> None:
    await acl.do_clear_acl(actor, kernel.db.pool, workspace_id, object_type, object_id, plugins=_plugins(kernel),
                           source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Audit log


@get("/api/v1/audit", tags=["audit"], summary="The audit log (instance administrators)", security=SECURITY,
     responses=_responses(403))
async def audit_log(actor: CurrentActor, kernel: KernelDep, request: Request, actor_id: Actor_ = None,
                    action: Action = None, object_type: ObjectType = None, object_id: ObjectId = None,
                    workspace_id: Annotated[uuid.UUID | None, QueryParameter()] = None, since: Since = None,
                    until: Until = None, cursor: Cursor = None,
                    limit: Limit = audit_query.DEFAULT_LIMIT) -> audit_query.AuditPage:
    filters = audit_query.AuditFilter(actor_id, action, object_type, object_id, workspace_id, since, until, cursor,
                                      limit)
    return await audit_query.list_audit(actor, kernel.db.pool, filters, source=source_of(request))


@get(WS + "/audit", tags=["audit"], summary="A workspace's audit log (audit.read)", security=SECURITY,
     responses=_responses(403))
async def workspace_audit_log(workspace_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                              request: Request, actor_id: Actor_ = None, action: Action = None,
                              object_type: ObjectType = None, object_id: ObjectId = None, since: Since = None,
                              until: Until = None, cursor: Cursor = None,
                              limit: Limit = audit_query.DEFAULT_LIMIT) -> audit_query.AuditPage:
    filters = audit_query.AuditFilter(actor_id, action, object_type, object_id, None, since, until, cursor, limit)
    return await audit_query.list_workspace_audit(actor, kernel.db.pool, workspace_id, filters,
                                                  source=source_of(request))


def workspace_handlers() -> list:
    return [
        create_workspace, my_workspaces, read_workspace, update_workspace, delete_workspace,
        members, change_member_role, remove_member, leave_workspace,
        create_invite, list_invites, delete_invite, accept_invite,
        teams, create_team, read_team, update_team, delete_team, team_members, add_team_member, remove_team_member,
        permissions, roles, create_role, read_role, update_role, delete_role,
        read_acl, replace_acl, clear_acl,
        audit_log, workspace_audit_log,
    ]


__all__ = ["workspace_handlers"]
