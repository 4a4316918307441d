"""Every AI request from users: model choice, limits, quotas, cache, sync/streamed/async runs.

Handlers in api.py stay thin and call these with the actor first. The API process never
touches a model: it talks to the ai process through :class:`plugins.ai.protocol.AiClient`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable

from litestar.response.sse import ServerSentEventMessage

from plugins.ai import metrics, protocol, registry
from plugins.ai.protocol import AiError, JobRequest
from plugins.ai.tasks import OP_KIND
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

CACHE_PREFIX = f"{protocol.PREFIX}:cache"
QUOTA_PREFIX = f"{protocol.PREFIX}:quota"
_services: "weakref.WeakKeyDictionary[Any, AiService]" = weakref.WeakKeyDictionary()


def service(kernel) -> "AiService":
    found = _services.get(kernel)
    if found is None:
        found = _services[kernel] = AiService(kernel)
    return found


def problem_of(error: AiError) -> Problem:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    status = error.status if 400 <= error.status <= 599 and error.status != 499 else 503
    return Problem(status, error.slug, error.detail, field=error.field, headers=headers)


class AiService:
    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.settings = kernel.settings.section("ai")
        self.client = protocol.AiClient(kernel.redis, self.settings)
        self.registry = registry.RegistryCache()

    # -- choosing a model ----------------------------------------------------------------------

    async def model_for(self, actor: Actor | None, op: str, requested: str | None) -> registry.ModelRow:
        kind = OP_KIND[op]
        models = await self.registry.get(self.kernel.db.pool)
        if requested is not None:
            found = next((m for m in models if m.name == requested), None)
            if found is None:  # registered a moment ago, perhaps
                self.registry.forget()
                models = await self.registry.get(self.kernel.db.pool)
                found = next((m for m in models if m.name == requested), None)
            if found is None:
                raise Problem(404, "unknown-model", f"model: no model called {requested!r}; "
                                                    f"GET /api/v1/ai/models lists them", field="model")
            if found.kind != kind:
                raise Problem(400, "wrong-model-kind", f"model: {requested} is a {found.kind} model; {op} needs "
                                                       f"a {kind} model", field="model")
            return found
        chosen = registry.choose(models, kind, actor.user_id if actor else None)
        if chosen is None:
            if not await self.client.instances():
                raise problem_of(protocol.not_running())
            raise Problem(503, "no-model", f"no {kind} model is registered: an operator adds one with "
                                           f"`sygmax ai models add`", headers={"Retry-After": "60"})
        return chosen

    # -- limits ---------------------------------------------------------------------------------

    def check_text(self, text: str, field: str = "text", limit: int | None = None) -> str:
        limit = limit or self.settings.max_text_chars
        if not text.strip():
            raise Problem(400, "empty-text", f"{field}: the text is empty", field=field)
        if len(text) > limit:
            raise Problem(413, "text-too-large", f"{field}: {len(text)} characters; at most {limit} are accepted",
                          field=field, limit=limit)
        return text

    @staticmethod
    def check_scope(actor: Actor) -> None:
        if not actor.has_scope("ai.use"):
            raise Problem(403, "forbidden", "This API token is not scoped for ai.use", permission="ai.use")

    async def check_quota(self, actor: Actor, model: str) -> None:
        self.check_scope(actor)
        now = int(time.time())
        minute, day = now // 60, now // 86400
        keys = (f"{QUOTA_PREFIX}:m:{actor.user_id}:{minute}", f"{QUOTA_PREFIX}:d:{actor.user_id}:{day}")
        pipe = self.kernel.redis.pipeline(transaction=True)
        pipe.incr(keys[0])
        pipe.expire(keys[0], 120)
        pipe.incr(keys[1])
        pipe.expire(keys[1], 2 * 86400)
        per_minute, _, per_day, _ = await pipe.execute()
        if per_minute > self.settings.quota_per_minute:
            retry, which = 60 - now % 60, f"{self.settings.quota_per_minute} AI requests a minute"
        elif per_day > self.settings.quota_per_day:
            retry, which = 86400 - now % 86400, f"{self.settings.quota_per_day} AI requests a day"
        else:
            return
        metrics.REJECTIONS.labels(model, "quota").inc()
        raise Problem(429, "ai-quota-exceeded", f"you have used your quota of {which}; retry in {retry}s",
                      headers={"Retry-After": str(retry)})

    # -- the cache ------------------------------------------------------------------------------

    def cache_key(self, model: registry.ModelRow, op: str, payload: Any) -> str:
        digest = hashlib.sha256(json.dumps([op, payload], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return f"{CACHE_PREFIX}:{model.name}:{model.version}:{digest}"

    async def cache_get(self, key: str) -> dict | None:
        if not self.settings.cache_ttl_s:
            return None
        raw = await self.kernel.redis.get(key)
        return json.loads(raw) if raw else None

    async def cache_put(self, key: str, result: dict) -> None:
        if self.settings.cache_ttl_s:
            await self.kernel.redis.set(key, json.dumps(result), ex=self.settings.cache_ttl_s)

    # -- running --------------------------------------------------------------------------------

    async def prepare(self, actor: Actor, op: str, model_name: str | None, cache_payload: Any
                      ) -> tuple[registry.ModelRow, str, dict | None]:
        """Choose the model and look in the cache; the quota is charged only for real model work."""
        self.check_scope(actor)
        model = await self.model_for(actor, op, model_name)
        key = self.cache_key(model, op, cache_payload)
        cached = await self.cache_get(key)
        metrics.CACHE.labels(op, model.name, "hit" if cached else "miss").inc()
        if cached is None:
            await self.check_quota(actor, model.name)
        return model, key, cached

    def job(self, actor: Actor, op: str, model: registry.ModelRow, *, text: str | None = None,
            params: dict | None = None, input_key: str | None = None, stream: bool = False) -> JobRequest:
        return JobRequest(id=protocol.new_job_id(), op=op, model=model.name, text=text, params=params or {},
                          input_key=input_key, stream=stream, user_id=str(actor.user_id))

    async def run(self, job: JobRequest, endpoint: str,
                  disconnected: Callable[[], Awaitable[None]] | None = None) -> dict:
        """Run a job and wait for it; a caller that disconnects cancels it (its slot is freed)."""
        started = time.monotonic()
        outcome = "error"
        try:
            call = asyncio.ensure_future(self.client.call(job))
            waiters = {call}
            watcher = asyncio.ensure_future(disconnected()) if disconnected else None
            if watcher is not None:
                waiters.add(watcher)
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if watcher is not None and not watcher.done():
                    watcher.cancel()
            if not call.done():  # the client went away: cancelling the call cancels the job
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
                outcome = "cancelled"
                raise Problem(503, "client-disconnected", "the client disconnected; the job was cancelled")
            try:
                result = call.result()
            except AiError as error:
                outcome = error.slug
                self._count_rejection(job.model, error)
                raise problem_of(error) from None
            outcome = "ok"
            return result
        finally:
            metrics.REQUESTS.labels(endpoint, job.model, outcome).inc()
            metrics.REQUEST_SECONDS.labels(endpoint, job.model).observe(time.monotonic() - started)

    def _count_rejection(self, model: str, error: AiError) -> None:
        if error.slug == "ai-queue-full":
            metrics.REJECTIONS.labels(model, "queue_full").inc()
        elif error.status == 503 and error.slug in ("ai-unavailable", "model-not-loaded"):
            metrics.REJECTIONS.labels(model, "unavailable").inc()

    async def submit_stream(self, job: JobRequest) -> None:
        """Admission for a streamed job happens before the 200 and its event stream start."""
        try:
            await self.client.submit(job)
        except AiError as error:
            self._count_rejection(job.model, error)
            metrics.REQUESTS.labels(job.op, job.model, error.slug).inc()
            raise problem_of(error) from None

    async def stream(self, job: JobRequest, cache_key: str) -> AsyncIterator[ServerSentEventMessage]:
        """Server-sent events: ``token`` per piece of text, then ``done`` (the result) or ``error``.

        When the client disconnects Litestar cancels this generator; ``finally`` cancels the job.
        """
        started = time.monotonic()
        finished = False
        outcome = "cancelled"
        try:
            async for kind, value in self.client.events(job):
                if kind == "token":
                    yield ServerSentEventMessage(data=json.dumps({"text": value}), event="token")
                else:
                    finished = True
                    outcome = "ok"
                    await self.cache_put(cache_key, value)
                    yield ServerSentEventMessage(data=json.dumps({**value, "cached": False}), event="done")
        except AiError as error:
            finished = True
            outcome = error.slug
            yield ServerSentEventMessage(data=json.dumps(problem_of(error).extra_members | {
                "type": f"https://sygmax.dev/problems/{error.slug}", "status": error.status,
                "detail": error.detail}), event="error")
        finally:
            if not finished:
                await asyncio.shield(self.client.cancel(job))
            metrics.REQUESTS.labels(job.op, job.model, outcome).inc()
            metrics.REQUEST_SECONDS.labels(job.op, job.model).observe(time.monotonic() - started)

    # -- async jobs -------------------------------------------------------------------------------

    async def create_job(self, actor: Actor | None, op: str, model: registry.ModelRow, *, text: str | None = None,
                         params: dict | None = None, input_key: str | None = None, delete_input: bool = False,
                         notify: dict | None = None, bounded: bool = True, job_id: uuid.UUID | None = None
                         ) -> uuid.UUID:
        """A durable job in PostgreSQL (202 + GET /jobs/{id}, or background work for other modules).

        Jobs users ask for are bounded per model (429 when ``ai.async_queue_size`` wait); work
        from other modules' events is durable backlog, never refused.
        """
        job_id = job_id or uuid.uuid4()
        async with self.kernel.db.pool.acquire() as connection:
            if bounded:
                waiting = await connection.fetchval(
                    "SELECT count(*) FROM ai_job WHERE model = $1 AND status = 'queued'", model.name)
                if waiting >= self.settings.async_queue_size:
                    metrics.REJECTIONS.labels(model.name, "queue_full").inc()
                    retry = await self.client.retry_after(model.name, waiting)
                    raise Problem(429, "ai-queue-full", f"model {model.name} has {waiting} jobs waiting, its limit",
                                  headers={"Retry-After": str(retry)})
            await connection.execute(
                """INSERT INTO ai_job (id, user_id, op, model, params, input_text, input_key, delete_input, notify)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING""",
                job_id, actor.user_id if actor else None, op, model.name, json.dumps(params or {}), text,
                input_key, delete_input, json.dumps(notify) if notify else None)
        await self.client.wake(model.name)
        return job_id

    async def get_job(self, actor: Actor, job_id: uuid.UUID) -> dict:
        async with self.kernel.db.pool.acquire() as connection:
            row = await connection.fetchrow("SELECT * FROM ai_job WHERE id = $1 AND user_id = $2", job_id,
                                            actor.user_id)
        if row is None:
            raise Problem(404, "not-found", "No such AI job")
        view = {"id": str(row["id"]), "op": row["op"], "model": row["model"], "status": row["status"],
                "attempts": row["attempts"], "created_at": row["created_at"].isoformat(),
                "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
                "result": json.loads(row["result"]) if row["result"] else None,
                "error": json.loads(row["error"]) if row["error"] else None}
        if row["status"] in ("queued", "running") and not await self.client.serving(row["model"]):
            view["note"] = "no ai process is serving this model right now; the job runs when one starts"
        return view
