"""The ai profile's model server: loads the registry's models once and serves them over Redis.

Started by the plugin's start-up hook only in a process running the ``ai`` profile (``sygmax
run ai``); the protocol is described in :mod:`plugins.ai.protocol`. One serving loop per
loaded model runs one job at a time (llama.cpp and friends are not re-entrant), taking
interactive requests first and durable jobs from PostgreSQL when none wait. Model calls run
in a thread so the loop keeps heartbeating, streaming tokens and hearing cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any, Callable

import structlog

from plugins.ai import metrics, protocol, registry, tasks
from plugins.ai.tasks import OP_KIND, TEXT_OPS, JobError
from plugins.ai.vectors import VectorIndex, embed_pending
from sygmax.events.contracts import AiAnnotationReady, AiTranscriptReady, AiTranscriptSegment
from sygmax.runtime import process_name

log = structlog.get_logger("sygmax.ai")

VECTOR_WAKE, REINDEX_KEY = protocol.VECTOR_WAKE, protocol.REINDEX_KEY
FLUSH_S = 0.05  # streamed tokens are written to Redis in batches this far apart

_CLAIM = """
UPDATE ai_job SET status = 'running', owner = $2, attempts = attempts + 1, started_at = now()
WHERE id = (SELECT id FROM ai_job WHERE model = $1 AND status = 'queued'
            ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING *
"""


class ModelServer:
    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.settings = kernel.settings.section("ai")
        self.redis = kernel.redis
        self.client = protocol.AiClient(kernel.redis, self.settings)
        self.name = f"ai-{process_name()}-{uuid.uuid4().hex[:6]}"
        self.engines: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.busy: dict[str, asyncio.Lock] = {}
        self.running: dict[str, threading.Event] = {}  # job id -> set when cancelled
        self.index: VectorIndex | None = None
        self.reindex_mark: bytes | None = None
        self.started = time.time()
        self.stopping = asyncio.Event()

    # -- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.kernel.db.pool.acquire() as connection:
            rows = await registry.ensure_defaults(connection, self.settings)
        for row in rows:
            if not (row.is_default or row.rollout_percent or row.options.get("preload")):
                continue
            try:
                engine = await asyncio.to_thread(_load, row, self.settings)
            except Exception as exc:  # one bad model must not keep the others from serving
                self.failed[row.name] = f"{type(exc).__name__}: {exc}"[:300]
                log.error("ai_model_load_failed", model=row.name, error=self.failed[row.name])
                continue
            self.engines[row.name] = engine
            self.busy[row.name] = asyncio.Lock()
            metrics.MODEL_LOADED.labels(row.name, row.kind, row.version, engine.device).set(1)
            metrics.MODEL_RSS.labels(row.name).set(engine.rss_bytes)
            log.info("ai_model_loaded", model=row.name, kind=row.kind, device=engine.device,
                     rss_mb=round(engine.rss_bytes / 2**20), seconds=round(engine.load_seconds, 2))
        embedder = self._engine_of_kind("embedding", rows)
        if embedder is not None:
            self.index = VectorIndex(embedder.dimension, embedder.name)
            self.reindex_mark = await self.redis.get(REINDEX_KEY)
            await self.index.sync(self.kernel.db.pool, full=True)
            metrics.INDEX_VECTORS.set(self.index.size)
        await self._heartbeat()
        await self._recover()
        spawn = self.kernel.spawn
        spawn(self._heartbeat_loop(), "ai:heartbeat")
        spawn(self._cancel_listener(), "ai:cancel")
        spawn(self._recovery_loop(), "ai:recovery")
        for name in self.engines:
            spawn(self._serve(name), f"ai:serve:{name}")
        if embedder is not None:
            spawn(self._vector_loop(embedder), "ai:vectors")
        log.info("ai_server_started", instance=self.name, models=list(self.engines), failed=list(self.failed))

    async def stop(self) -> None:
        self.stopping.set()
        for event in self.running.values():
            event.set()
        with contextlib.suppress(Exception):
            await self.redis.zrem(protocol.INSTANCES, self.name)
            await self.redis.delete(protocol.instance_key(self.name))
        # Give the running model calls a moment to notice, then release the models.
        for lock in self.busy.values():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lock.acquire(), 5)
        for engine in self.engines.values():
            with contextlib.suppress(Exception):
                engine.close()

    def _engine_of_kind(self, kind: str, rows: list[registry.ModelRow]):
        default = next((row for row in rows if row.kind == kind and row.is_default), None)
        return self.engines.get(default.name) if default else None

    # -- liveness -----------------------------------------------------------------------------

    def describe(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "started": self.started,
                "models": {name: {"kind": e.kind, "version": e.version, "device": e.device,
                                  "rss_bytes": e.rss_bytes} for name, e in self.engines.items()},
                "failed": self.failed, "gpu": any(e.device == "gpu" for e in self.engines.values()),
                "index_vectors": self.index.size if self.index else 0}

    async def _heartbeat(self) -> None:
        ttl = max(3.0, 3 * self.settings.heartbeat_s)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(protocol.instance_key(self.name), json.dumps(self.describe()), px=int(ttl * 1000))
        pipe.zadd(protocol.INSTANCES, {self.name: time.time() + ttl})
        for name in self.engines:
            pipe.llen(protocol.queue_key(name))
        answers = await pipe.execute()
        for name, depth in zip(self.engines, answers[2:]):
            metrics.QUEUE_DEPTH.labels(name).set(depth)

    async def _heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self._heartbeat()
            except Exception as exc:  # Redis away: callers will see us as gone, which is true
                log.warning("ai_heartbeat_failed", error=str(exc))

    async def _cancel_listener(self) -> None:
        while not self.stopping.is_set():
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(protocol.CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        event = self.running.get(data.decode() if isinstance(data, bytes) else data)
                        if event is not None:
                            event.set()
            except Exception as exc:
                log.warning("ai_cancel_listener_failed", error=str(exc))
                await asyncio.sleep(1)

    # -- durable jobs: recovery ----------------------------------------------------------------

    async def _recover(self) -> None:
        """Jobs left running by a dead ai process: queue them again, or fail them after the last attempt."""
        async with self.kernel.db.pool.acquire() as connection:
            rows = await connection.fetch("SELECT id, owner, attempts, model FROM ai_job WHERE status = 'running'")
            for row in rows:
                if row["owner"] == self.name or await self.client.alive(row["owner"] or ""):
                    continue
                if row["attempts"] >= self.settings.job_attempts:
                    await connection.execute(
                        """UPDATE ai_job SET status = 'failed', finished_at = now(), error = $2
                           WHERE id = $1 AND status = 'running' AND owner = $3""",
                        row["id"], json.dumps({"status": 503, "slug": "ai-process-lost",
                                               "detail": f"the ai process running this job stopped "
                                                         f"{row['attempts']} times; it was not retried again"}),
                        row["owner"])
                    log.warning("ai_job_failed_after_restarts", job=str(row["id"]), attempts=row["attempts"])
                else:
                    await connection.execute(
                        "UPDATE ai_job SET status = 'queued', owner = NULL WHERE id = $1 AND status = 'running' "
                        "AND owner = $2", row["id"], row["owner"])
                    log.info("ai_job_requeued", job=str(row["id"]), attempts=row["attempts"])
                    await self.client.wake(row["model"])

    async def _recovery_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(max(2.0, 3 * self.settings.heartbeat_s))
            try:
                await self._recover()
            except Exception as exc:
                log.warning("ai_recovery_failed", error=str(exc))

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self, model: str) -> None:
        keys = (protocol.queue_key(model), protocol.wake_key(model))
        while not self.stopping.is_set():
            try:
                popped = await self.redis.blmpop(1, 2, *keys, direction="LEFT", count=1)
                if popped:
                    key = popped[0].decode() if isinstance(popped[0], bytes) else popped[0]
                    if key == keys[0]:
                        if self.stopping.is_set():  # popped while shutting down: give it back
                            await self.redis.lpush(keys[0], popped[1][0])
                            return
                        await self._interactive(protocol.decode_job(popped[1][0]))
                        continue
                while await self._durable(model):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ai_serve_loop_error", model=model)
                await asyncio.sleep(1)

    async def _interactive(self, job: protocol.JobRequest) -> None:
        out = protocol.out_key(job.id)
        if time.time() > job.deadline or await self.redis.exists(f"{protocol.PREFIX}:cancelled:{job.id}"):
            metrics.JOBS.labels(job.op, job.model, "skipped").inc()
            return  # its caller has given up and answered already
        await self.redis.hset(protocol.job_key(job.id), "owner", self.name)
        await self.redis.expire(protocol.job_key(job.id), protocol.OUT_TTL_S)
        cancel = self.running[job.id] = threading.Event()
        pending: list[str] = []

        async def flush() -> None:
            if pending:
                await self.redis.xadd(out, {"k": "t", "v": "".join(pending)})
                pending.clear()

        def emit(token: str) -> None:
            pending.append(token)

        started = time.monotonic()
        try:
            result = await self._execute(job, cancel, emit if job.stream else None, flush)
            await flush()
            await self.redis.xadd(out, {"k": "done", "v": json.dumps(result)})
            metrics.JOBS.labels(job.op, job.model, "ok").inc()
        except JobError as error:
            await self.redis.xadd(out, {"k": "error", "v": json.dumps(error.as_dict())})
            metrics.JOBS.labels(job.op, job.model, "rejected").inc()
        except Exception as exc:
            log.exception("ai_job_error", job=job.id, op=job.op, model=job.model)
            await self.redis.xadd(out, {"k": "error", "v": json.dumps(
                {"status": 500, "slug": "ai-internal-error", "detail": f"the model failed: {type(exc).__name__}"})})
            metrics.JOBS.labels(job.op, job.model, "error").inc()
        finally:
            self.running.pop(job.id, None)
            await self.redis.expire(out, protocol.OUT_TTL_S)
            await self._record_time(job.model, time.monotonic() - started)

    async def _record_time(self, model: str, seconds: float) -> None:
        key = protocol.stats_key(model)
        previous = await self.redis.hget(key, "avg_s")
        average = seconds if previous is None else 0.8 * float(previous) + 0.2 * seconds
        await self.redis.hset(key, "avg_s", f"{average:.3f}")

    async def _durable(self, model: str) -> bool:
        """Claim and run one queued durable job of ``model``; False when none is queued."""
        pool = self.kernel.db.pool
        async with pool.acquire() as connection:
            row = await connection.fetchrow(_CLAIM, model, self.name)
        if row is None:
            return False
        params = json.loads(row["params"]) if isinstance(row["params"], str) else dict(row["params"] or {})
        job = protocol.JobRequest(id=str(row["id"]), op=row["op"], model=model, text=row["input_text"],
                                  params=params, input_key=row["input_key"],
                                  user_id=str(row["user_id"]) if row["user_id"] else None)
        cancel = self.running[job.id] = threading.Event()
        status, result, error = "done", None, None
        try:
            result = await self._execute(job, cancel, None, None)
            metrics.JOBS.labels(job.op, model, "ok").inc()
        except JobError as exc:
            status, error = "failed", exc.as_dict()
            metrics.JOBS.labels(job.op, model, "rejected").inc()
            log.warning("ai_job_failed", job=job.id, op=job.op, model=model, slug=exc.slug, detail=exc.detail)
        except Exception as exc:
            log.exception("ai_job_error", job=job.id, op=job.op, model=model)
            status, error = "failed", {"status": 500, "slug": "ai-internal-error",
                                       "detail": f"the model failed: {type(exc).__name__}"}
            metrics.JOBS.labels(job.op, model, "error").inc()
        finally:
            self.running.pop(job.id, None)
        if cancel.is_set() and self.stopping.is_set():
            return False  # shutting down: leave it running; recovery queues it again
        async with pool.acquire() as connection:
            updated = await connection.execute(
                """UPDATE ai_job SET status = $3, result = $4, error = $5, finished_at = now()
                   WHERE id = $1 AND owner = $2 AND status = 'running'""",
                row["id"], self.name, status, json.dumps(result) if result is not None else None,
                json.dumps(error) if error is not None else None)
        if updated.endswith(" 1"):
            await self._after_durable(row, result)
        return True

    async def _after_durable(self, row, result: dict | None) -> None:
        if row["input_key"] and row["delete_input"]:
            with contextlib.suppress(Exception):
                await self.kernel.storage.delete(row["input_key"])
        notify = row["notify"]
        if result is None or not notify:
            return
        notify = json.loads(notify) if isinstance(notify, str) else dict(notify)
        target = uuid.UUID(notify["target_id"])
        if row["op"] == "annotate":
            await self.kernel.bus.publish(AiAnnotationReady(
                target_type=notify["target_type"], target_id=target, summary=result["summary"],
                tags=result["tags"], model=result["model"]))
        elif row["op"] == "transcribe":
            await self.kernel.bus.publish(AiTranscriptReady(
                target_type=notify["target_type"], target_id=target, text=result["text"],
                language=result.get("language"), model=result["model"],
                segments=[AiTranscriptSegment(start=s["start"], end=s["end"], text=s["text"])
                          for s in result["segments"]]))

    # -- the work itself ------------------------------------------------------------------------

    async def _in_thread(self, engine, function: Callable, *args):
        async with self.busy[engine.name]:
            return await asyncio.to_thread(function, *args)

    async def _execute(self, job: protocol.JobRequest, cancel: threading.Event,
                       emit: Callable[[str], None] | None, flush) -> dict:
        engine = self.engines.get(job.model)
        if engine is None or engine.kind != OP_KIND.get(job.op):
            raise JobError(400, "unknown-model", f"model {job.model} cannot do {job.op} here")
        started = time.monotonic()
        if job.op in TEXT_OPS:
            result = await self._generate(engine, job.op, job.text or "", job.params, cancel, emit, flush)
        elif job.op == "annotate":
            summary = await self._generate(engine, "summarize", job.text or "", {"sentences": 2}, cancel, None, None)
            tags = await self._generate(engine, "generate_tags", job.text or "", {"max_tags": 5}, cancel, None, None)
            result = {"summary": summary["text"], "tags": tags["tags"],
                      "tokens": summary["tokens"] + tags["tokens"]}
        elif job.op == "transcribe":
            result = await self._transcribe(engine, job, cancel)
        elif job.op == "entities":
            result = {"entities": await self._in_thread(engine, engine.entities, job.text or "")}
        elif job.op == "search":
            result = await self._search(engine, job)
        else:
            raise JobError(400, "unknown-operation", f"no operation {job.op!r}")
        elapsed = time.monotonic() - started
        metrics.INFERENCE_SECONDS.labels(job.op, job.model).observe(elapsed)
        return {**result, "model": engine.name, "version": engine.version, "seconds": round(elapsed, 3)}

    async def _generate(self, engine, op: str, text: str, params: dict, cancel: threading.Event,
                        emit: Callable[[str], None] | None, flush) -> dict:
        messages, options = tasks.build(op, text, params)
        prompt_tokens = engine.count_tokens(text)
        budget = engine.context - prompt_tokens - 128
        if budget < 16:
            raise JobError(413, "text-too-long", f"the text is {prompt_tokens} tokens; model {engine.name} reads "
                                                 f"at most about {engine.context - 144}", field="text")
        wanted = int(params.get("max_tokens") or options.pop("max_tokens", None) or
                     min(self.settings.max_new_tokens, max(64, prompt_tokens * 2 if op != "summarize" else 256)))
        options.pop("max_tokens", None)
        max_tokens = min(wanted, budget, self.settings.max_new_tokens)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()
        pieces: list[str] = []
        counted = [0, 0.0]

        def produce() -> None:
            first = None
            try:
                for piece in engine.generate(messages, max_tokens, options, cancel.is_set):
                    first = first or time.monotonic()
                    counted[0] += 1
                    loop.call_soon_threadsafe(tokens.put_nowait, piece)
            finally:
                counted[1] = time.monotonic() - (first or time.monotonic())
                loop.call_soon_threadsafe(tokens.put_nowait, None)

        flushed = time.monotonic()
        async with self.busy[engine.name]:
            worker = asyncio.ensure_future(asyncio.to_thread(produce))
            while True:
                piece = await tokens.get()
                if piece is None:
                    break
                pieces.append(piece)
                if emit is not None:
                    emit(piece)
                    # At most one Redis write per FLUSH_S: per-token writes cost the generating
                    # thread the GIL and the model time; readers still see text every 50 ms.
                    if tokens.empty() and time.monotonic() - flushed >= FLUSH_S:
                        await flush()
                        flushed = time.monotonic()
            await worker
        if cancel.is_set():
            raise JobError(499, "cancelled", "the request was cancelled")
        metrics.TOKENS.labels(engine.name).inc(counted[0])
        rate = (counted[0] - 1) / counted[1] if counted[0] > 1 and counted[1] > 0 else 0.0
        if rate:
            metrics.TOKENS_PER_SECOND.labels(engine.name).set(rate)
        return {**tasks.parse(op, "".join(pieces), params), "tokens": counted[0], "tokens_per_s": round(rate, 1)}

    async def _transcribe(self, engine, job: protocol.JobRequest, cancel: threading.Event) -> dict:
        from plugins.ai.engines import decode_audio

        try:
            data = await self.kernel.storage.read(job.input_key or "")
        except Exception:
            raise JobError(404, "audio-not-found", "the audio file is no longer in storage") from None
        if len(data) > self.settings.max_audio_bytes:
            raise JobError(413, "audio-too-large", f"audio files may be at most {self.settings.max_audio_bytes} bytes",
                           field="file")
        samples = await asyncio.to_thread(decode_audio, data, self.settings.max_audio_seconds)
        language = job.params.get("language")
        return await self._in_thread(engine, engine.transcribe, samples, language, cancel.is_set)

    async def _search(self, engine, job: protocol.JobRequest) -> dict:
        if self.index is None or self.index.model != engine.name:
            raise JobError(503, "index-unavailable", "this ai process has no search index for that model")
        vector = (await self._in_thread(engine, engine.embed, [job.text or ""]))[0]
        await self._maybe_rebuild()
        await self.index.sync(self.kernel.db.pool)
        metrics.INDEX_VECTORS.set(self.index.size)
        k = int(job.params.get("k", 50))
        return {"hits": self.index.search(vector, k), "index_size": self.index.size}

    async def _maybe_rebuild(self) -> None:
        mark = await self.redis.get(REINDEX_KEY)
        if mark != self.reindex_mark and self.index is not None:
            self.reindex_mark = mark
            await self.index.sync(self.kernel.db.pool, full=True)

    async def _vector_loop(self, engine) -> None:
        """Embed what the worker recorded, as soon as it says so (and every few seconds anyway)."""
        while not self.stopping.is_set():
            try:
                await self.redis.blpop([VECTOR_WAKE], timeout=2)
                done = await embed_pending(self.kernel.db.pool, engine, self._in_thread)
                if done:
                    log.info("ai_vectors_embedded", count=done)
                    await self.index.sync(self.kernel.db.pool)
                    metrics.INDEX_VECTORS.set(self.index.size)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ai_vector_loop_error")
                await asyncio.sleep(2)


def _load(row: registry.ModelRow, settings):
    from plugins.ai.engines import load_engine

    return load_engine(row.as_dict(), settings)
