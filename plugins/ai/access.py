"""Which search hits a user may see, decided by the kernel's policy (sygmax/auth/policy.py).

* A hit in a chat channel (object ``chats.channel`` in its workspace) is readable when the
  policy lets the user see that object: a member of the workspace, and, for a restricted
  channel, named by one of its grants. This is the policy's own visibility rule (the one that
  decides 404), so it holds whether or not the chats module is enabled in this process.
* A personal feed item is readable only by its subscriber; a workspace feed item by the
  members of its workspace.

Search over-fetches from FAISS and filters here, so a hit from a channel the user cannot
read is never returned, nor counted, nor hinted at.
"""

from __future__ import annotations

import uuid

from sygmax.auth import policy
from sygmax.auth.tokens import Actor

SCOPES = {"all": None, "chats": "chats.message", "feeds": "feeds.item"}


async def readable_hits(connection, actor: Actor, hits: list[tuple[int, float]], *, scope: str,
                        workspace_id: uuid.UUID | None) -> list[dict]:
    """The hits (in rank order) the actor may read, with what the client shows."""
    if not hits:
        return []
    rows = await connection.fetch(
        """SELECT id, source_type, source_id, workspace_id, object_type, object_id, user_id, text
           FROM ai_vector WHERE id = ANY($1::bigint[]) AND NOT deleted""", [hit_id for hit_id, _ in hits])
    by_id = {row["id"]: row for row in rows}
    wanted_type = SCOPES[scope]
    decided: dict[tuple, bool] = {}
    out = []
    for hit_id, score in hits:
        row = by_id.get(hit_id)
        if row is None or (wanted_type and row["source_type"] != wanted_type):
            continue
        if workspace_id is not None and row["workspace_id"] != workspace_id:
            continue
        key = (row["workspace_id"], row["object_type"], row["object_id"], row["user_id"])
        if key not in decided:
            decided[key] = await _may_read(connection, actor, row)
        if decided[key]:
            out.append({"source_type": row["source_type"], "source_id": str(row["source_id"]),
                        "workspace_id": str(row["workspace_id"]) if row["workspace_id"] else None,
                        "object_type": row["object_type"], "object_id": row["object_id"],
                        "text": row["text"][:500], "score": round(score, 4)})
    return out


async def _may_read(connection, actor: Actor, row) -> bool:
    if row["user_id"] is not None:
        return row["user_id"] == actor.user_id
    if row["workspace_id"] is None:
        return False
    if row["object_type"] is not None:
        found = await policy.access(connection, actor, workspace_id=row["workspace_id"],
                                    object_type=row["object_type"], object_id=row["object_id"])
    else:
        found = await policy.access(connection, actor, workspace_id=row["workspace_id"])
    return found.visible
