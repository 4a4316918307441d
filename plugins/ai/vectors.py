"""Semantic search storage: vectors durable in PostgreSQL, searched in memory with FAISS.

The worker records what to index (:func:`record_source`, :func:`forget_source`) as chat and
feed events arrive; the ai process embeds pending rows in batches (:func:`embed_pending`) and
keeps a FAISS index per process that it rebuilds from PostgreSQL when it starts and brings
up to date incrementally (by ``seq``) before every search. FAISS is imported lazily: only
the ai process loads it.
"""

from __future__ import annotations

import asyncio
import uuid

SYNC_OVERLAP = "10 seconds"  # re-read recent changes: a lower seq may commit after a higher one


async def record_source(connection, *, source_type: str, source_id: uuid.UUID, text: str,
                        workspace_id: uuid.UUID | None = None, object_type: str | None = None,
                        object_id: str | None = None, user_id: uuid.UUID | None = None) -> None:
    """Index (or re-index after an edit) one thing; its vector is computed by the ai process."""
    await connection.execute(
        """INSERT INTO ai_vector (source_type, source_id, workspace_id, object_type, object_id, user_id, text)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (source_type, source_id) DO UPDATE SET
             workspace_id = excluded.workspace_id, object_type = excluded.object_type,
             object_id = excluded.object_id, user_id = excluded.user_id, text = excluded.text,
             vector = NULL, model = NULL, deleted = false, seq = nextval('ai_vector_seq'), updated_at = now()""",
        source_type, source_id, workspace_id, object_type, object_id, user_id, text)


async def forget_source(connection, *, source_type: str, source_id: uuid.UUID) -> None:
    """Remove a thing from search; the row stays as a tombstone so every index drops it."""
    await connection.execute(
        """INSERT INTO ai_vector (source_type, source_id, text, deleted) VALUES ($1, $2, '', true)
           ON CONFLICT (source_type, source_id) DO UPDATE SET text = '', vector = NULL, model = NULL,
             deleted = true, seq = nextval('ai_vector_seq'), updated_at = now()""",
        source_type, source_id)


async def request_reindex(connection) -> int:
    """Recompute every vector (``sygmax ai reindex``): returns how many rows will be re-embedded."""
    async with connection.transaction():
        await connection.execute("DELETE FROM ai_vector WHERE deleted")
        status = await connection.execute(
            "UPDATE ai_vector SET vector = NULL, model = NULL, seq = nextval('ai_vector_seq'), updated_at = now()")
    return int(status.split()[-1])


async def embed_pending(pool, engine, run_in_thread, batch: int = 64) -> int:
    """Embed rows with no vector from the current model; returns how many were embedded."""
    done = 0
    while True:
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                """SELECT id, text FROM ai_vector WHERE NOT deleted AND (vector IS NULL OR model IS DISTINCT FROM $1)
                   ORDER BY id LIMIT $2""", engine.name, batch)
            if not rows:
                return done
            vectors = await run_in_thread(engine, engine.embed, [row["text"] for row in rows])
            # Only rows unchanged since we read them: an edit meanwhile must be embedded again.
            await connection.executemany(
                """UPDATE ai_vector SET vector = $2, model = $3, seq = nextval('ai_vector_seq'), updated_at = now()
                   WHERE id = $1 AND text = $4 AND NOT deleted""",
                [(row["id"], vector.astype("<f4").tobytes(), engine.name, row["text"])
                 for row, vector in zip(rows, vectors)])
            done += len(rows)


class VectorIndex:
    """One FAISS inner-product index over L2-normalised vectors (cosine similarity), ids = ai_vector.id."""

    def __init__(self, dimension: int, model: str) -> None:
        import faiss

        self.faiss = faiss
        self.dimension, self.model = dimension, model
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self.seq = 0
        self.lock = asyncio.Lock()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def apply(self, ids: list[int], vectors: list[bytes | None]) -> None:
        """Upsert rows with a vector, drop rows without (deleted, pending, another model)."""
        import numpy as np

        if not ids:
            return
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        keep = [(i, v) for i, v in zip(ids, vectors) if v is not None and len(v) == 4 * self.dimension]
        if keep:
            matrix = np.frombuffer(b"".join(v for _, v in keep), dtype="<f4").reshape(len(keep), self.dimension)
            self.index.add_with_ids(np.ascontiguousarray(matrix, dtype=np.float32),
                                    np.asarray([i for i, _ in keep], dtype=np.int64))

    async def sync(self, pool, full: bool = False) -> None:
        async with self.lock:
            async with pool.acquire() as connection:
                if full:
                    self.index.reset()
                    self.seq = 0
                    rows = await connection.fetch(
                        "SELECT id, vector, seq FROM ai_vector WHERE NOT deleted AND model = $1", self.model)
                else:
                    rows = await connection.fetch(
                        f"""SELECT id, CASE WHEN NOT deleted AND model = $2 THEN vector END AS vector, seq
                            FROM ai_vector WHERE seq > $1 OR updated_at > now() - interval '{SYNC_OVERLAP}'""",
                        self.seq, self.model)
            self.apply([row["id"] for row in rows], [bytes(row["vector"]) if row["vector"] is not None else None
                                                     for row in rows])
            if rows:
                self.seq = max(self.seq, max(row["seq"] for row in rows))

    def search(self, query, k: int) -> list[tuple[int, float]]:
        import numpy as np

        if self.size == 0:
            return []
        scores, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                        min(k, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
