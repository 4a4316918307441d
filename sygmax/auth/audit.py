"""The audit log: every state change, append-only and hash-chained.

Each row's hash is SHA-256 over the previous row's hash and the row's own canonical JSON,
so changing, removing or reordering any row breaks every hash after it; ``verify_chain``
(``sygmax audit verify``) finds the first broken row. Appends are serialised by a
transaction-scoped advisory lock so the chain never forks; call ``record`` inside the
transaction that makes the change, so the change and its audit row commit together.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg

AUDIT_LOCK_KEY = 0x5947_4D41_5841_5544
GENESIS = b"\x00" * 32


@dataclass(frozen=True)
class Source:
    """Where a change came from: the request's client IP and request id (None for CLI/jobs)."""

    ip: str | None = None
    request_id: str | None = None


def source_of(connection) -> Source:
    """The Source of a Litestar request or WebSocket (client IP as seen by the app, request id)."""
    client = connection.scope.get("client")
    return Source(client[0] if client else None, connection.scope.get("state", {}).get("request_id"))


def _canonical(seq: int, at: datetime, actor_id, action: str, object_type: str, object_id, workspace_id,
               source_ip, request_id, details: dict) -> bytes:
    return json.dumps(
        [seq, at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
         str(actor_id) if actor_id else None, action, object_type, object_id,
         str(workspace_id) if workspace_id else None, source_ip, request_id, details],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    ).encode()


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev_hash + canonical).digest()


async def record(
    connection: asyncpg.Connection,
    *,
    actor_id: uuid.UUID | None,
    action: str,
    object_type: str,
    object_id: str | uuid.UUID | None = None,
    workspace_id: uuid.UUID | None = None,
    source: Source | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one entry (inside the caller's transaction); returns its sequence number."""
    source = source or Source()
    details = json.loads(json.dumps(details or {}, default=str))  # what jsonb will give back
    object_id = str(object_id) if object_id is not None else None
    async with connection.transaction():  # a savepoint when the caller already has one
        await connection.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
        last = await connection.fetchrow("SELECT seq, hash FROM sygmax_audit ORDER BY seq DESC LIMIT 1")
        seq = (last["seq"] + 1) if last else 1
        prev_hash = bytes(last["hash"]) if last else GENESIS
        at = datetime.now(timezone.utc)
        digest = chain_hash(prev_hash, _canonical(seq, at, actor_id, action, object_type, object_id,
                                                  workspace_id, source.ip, source.request_id, details))
        await connection.execute(
            """INSERT INTO sygmax_audit (seq, at, actor_id, action, object_type, object_id, workspace_id,
                                        source_ip, request_id, details, prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)""",
            seq, at, actor_id, action, object_type, object_id, workspace_id, source.ip, source.request_id,
            json.dumps(details), prev_hash, digest,
        )
    return seq


@dataclass(frozen=True)
class ChainReport:
    rows: int
    first_bad_seq: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


async def verify_chain(connection: asyncpg.Connection, batch: int = 5000) -> ChainReport:
    """Recompute every hash in order; report the first row that does not match."""
    prev_hash, expected_seq, rows = GENESIS, 1, 0
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        cursor = connection.cursor(
            "SELECT seq, at, actor_id, action, object_type, object_id, workspace_id, source_ip, request_id, "
            "details, prev_hash, hash FROM sygmax_audit ORDER BY seq", prefetch=batch)
        async for row in cursor:
            rows += 1
            if row["seq"] != expected_seq:
                return ChainReport(rows, row["seq"], f"row {expected_seq} is missing (found {row['seq']})")
            if bytes(row["prev_hash"]) != prev_hash:
                return ChainReport(rows, row["seq"], f"row {row['seq']} does not follow the row before it")
            details = json.loads(row["details"]) if isinstance(row["details"], str) else row["details"]
            digest = chain_hash(prev_hash, _canonical(
                row["seq"], row["at"], row["actor_id"], row["action"], row["object_type"], row["object_id"],
                row["workspace_id"], row["source_ip"], row["request_id"], details))
            if digest != bytes(row["hash"]):
                return ChainReport(rows, row["seq"], f"row {row['seq']} was altered after it was written")
            prev_hash, expected_seq = digest, expected_seq + 1
    return ChainReport(rows, None, None)
