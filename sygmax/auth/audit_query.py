"""Reading the audit log: filtered, newest first, cursor-paginated by sequence number.

Instance administrators read every entry; a workspace's members holding ``audit.read`` read
that workspace's entries. The cursor is the ``seq`` of the last entry of the previous page
(entries strictly older come next), so pages stay stable while new entries are appended.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog

from sygmax.auth import policy, workspaces
from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

log = structlog.get_logger("sygmax.auth")

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$"
_ACTION = re.compile(ACTION_PATTERN)


class AuditEntry(msgspec.Struct):
    seq: int
    at: datetime
    actor_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: str | None
    workspace_id: uuid.UUID | None
    source_ip: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_cursor: int | None


@dataclass(frozen=True)
class AuditFilter:
    actor: uuid.UUID | None = None
    action: str | None = None           # exact, or a prefix ending in ".*" ("member.*")
    object_type: str | None = None
    object_id: str | None = None
    workspace_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: int | None = None
    limit: int = DEFAULT_LIMIT

    def check(self) -> "AuditFilter":
        if not 1 <= self.limit <= MAX_LIMIT:
            raise Problem(400, "validation-error", f"limit: between 1 and {MAX_LIMIT}", field="limit")
        if self.action is not None and (len(self.action) > 100 or not _ACTION.match(self.action)):
            raise Problem(400, "validation-error", "action: like member.role_change, or a prefix like member.*",
                          field="action")
        for name in ("object_type", "object_id"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > 200):
                raise Problem(400, "validation-error", f"{name}: 1-200 characters", field=name)
        if self.cursor is not None and self.cursor < 1:
            raise Problem(400, "validation-error", "cursor: a positive sequence number", field="cursor")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise Problem(400, "validation-error", f"{name}: give a time zone (e.g. 2025-01-31T12:00:00Z)",
                              field=name)
        return self


def _entry(row) -> AuditEntry:
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    return AuditEntry(row["seq"], row["at"], row["actor_id"], row["action"], row["object_type"], row["object_id"],
                      row["workspace_id"], row["source_ip"], row["request_id"], details)


async def query(connection, filters: AuditFilter) -> AuditPage:
    """One page of entries matching ``filters`` (no permission check: callers check first)."""
    filters = filters.check()
    action_clause, action = "action = {}", filters.action
    if action is not None and action.endswith(".*"):
        action_clause, action = "starts_with(action, {})", action[:-1]
    clauses, args = [], []
    # Each given filter is one clause; ``{}`` becomes its parameter's placeholder.
    for clause, value in (("actor_id = {}", filters.actor), (action_clause, action),
                          ("object_type = {}", filters.object_type), ("object_id = {}", filters.object_id),
                          ("workspace_id = {}", filters.workspace_id), ("at >= {}", filters.since),
                          ("at < {}", filters.until), ("seq < {}", filters.cursor)):
        if value is not None:
            args.append(value)
            clauses.append(clause.format(f"${len(args)}"))
    args.append(filters.limit + 1)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await connection.fetch(
        "SELECT seq, at, actor_id, action, object_type, object_id, workspace_id, source_ip, request_id, details "
        f"FROM sygmax_audit {where} ORDER BY seq DESC LIMIT ${len(args)}", *args)
    items = [_entry(row) for row in rows[:filters.limit]]
    return AuditPage(items, items[-1].seq if len(rows) > filters.limit else None)


async def list_audit(actor: Actor, db, filters: AuditFilter, *, source: Source | None = None) -> AuditPage:
    """The whole log, for instance administrators."""
    if not actor.is_admin or not policy.scope_allows(actor.scopes, "audit.read"):
        log.warning("auth_denied", reason="not_instance_admin", permission="audit.read",
                    request_id=source and source.request_id)
        raise Problem(403, "forbidden", "Only instance administrators read the whole audit log")
    async with workspaces.connection_of(db) as connection:
        return await query(connection, filters)


async def list_workspace_audit(actor: Actor, db, workspace_id: uuid.UUID, filters: AuditFilter, *,
                               source: Source | None = None) -> AuditPage:
    """A workspace's entries, for its members holding ``audit.read``."""
    async with workspaces.connection_of(db) as connection:
        await policy.require(connection, actor, "audit.read", workspace_id=workspace_id,
                             request_id=source and source.request_id)
        return await query(connection, AuditFilter(**{**filters.__dict__, "workspace_id": workspace_id}))


__all__ = ["AuditEntry", "AuditFilter", "AuditPage", "list_audit", "list_workspace_audit", "query"]
