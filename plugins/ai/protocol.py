"""How the api and worker processes talk to the ai process: the kernel's Redis, nothing else.

* An interactive request is one msgpack-encoded :class:`JobRequest` pushed onto the model's
  list ``q:<model>`` by a Lua script that refuses it when the list already holds
  ``ai.queue_size`` entries (the bounded queue; the caller answers 429 with Retry-After).
* The ai process pops it, records itself as the owner in ``job:<id>`` and appends the answer
  to the stream ``out:<id>``: token entries while an LLM writes (when the caller streams),
  then one ``done`` or ``error`` entry. The caller reads that stream, so nothing is lost
  between the two even if the caller subscribes late.
* Each ai process refreshes ``instance:<name>`` (what it serves, GPU or not) every
  ``ai.heartbeat_s``; the key expires when it dies. A caller whose job's owner is gone, or
  whose model no live ai process serves, gets a clear 503 at once instead of a hang.
* A caller that goes away (or times out) publishes the job id on ``cancel``; the ai process
  stops generating and the queue slot is free.
* Async jobs (202) and background work live in PostgreSQL (``ai_job``); ``wake:<model>``
  only nudges the ai process to look there now rather than at its next poll.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, AsyncIterator

import msgspec
from redis.asyncio import Redis

PREFIX = "sygmax:ai"
CANCEL_CHANNEL = f"{PREFIX}:cancel"
INSTANCES = f"{PREFIX}:instances"
VECTOR_WAKE = f"{PREFIX}:wake:vectors"  # the worker recorded something to embed
REINDEX_KEY = f"{PREFIX}:reindex"  # bumped by `sygmax ai reindex`: rebuild every FAISS index
OUT_TTL_S = 600


def queue_key(model: str) -> str:
    return f"{PREFIX}:q:{model}"


def wake_key(model: str) -> str:
    return f"{PREFIX}:wake:{model}"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def out_key(job_id: str) -> str:
    return f"{PREFIX}:out:{job_id}"


def instance_key(name: str) -> str:
    return f"{PREFIX}:instance:{name}"


def stats_key(model: str) -> str:
    return f"{PREFIX}:stats:{model}"


class JobRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    op: str  # summarize, correct_text, generate_tags, translate, transcribe, entities, search, embed
    model: str
    text: str | None = None
    texts: list[str] | None = None
    params: dict[str, Any] = {}
    input_key: str | None = None  # object-storage key of the audio
    stream: bool = False
    deadline: float = 0.0  # epoch seconds; the ai process skips a job past it
    user_id: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode_job = msgspec.msgpack.Decoder(JobRequest).decode
_json = msgspec.json.Encoder().encode
_unjson = msgspec.json.decode


def encode_job(job: JobRequest) -> bytes:
    return _encode(job)


def decode_job(raw: bytes) -> JobRequest:
    return _decode_job(raw)


# KEYS[1]: the model's queue. ARGV: job, capacity. Returns the new length, or -length when full.
_ADMIT = """
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[2]) then return -n end
redis.call('RPUSH', KEYS[1], ARGV[1])
return n + 1
"""


class AiError(Exception):
    """A request the AI could not serve; the API turns it into a problem response."""

    def __init__(self, status: int, slug: str, detail: str, *, field: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.field, self.retry_after = status, slug, detail, field, retry_after


def not_running() -> AiError:
    return AiError(503, "ai-unavailable", "The AI profile is not running: no ai process is serving models "
                                          "(an operator starts one with `sygmax scale ai=1`)", retry_after=30)


class AiClient:
    """The caller's side of the protocol (api and worker processes)."""

    def __init__(self, redis: Redis, settings) -> None:
        self.redis = redis
        self.settings = settings
        self._admit = redis.register_script(_ADMIT)

    async def instances(self) -> list[dict]:
        """Live ai processes and what each serves (expired ones are pruned)."""
        now = time.time()
        await self.redis.zremrangebyscore(INSTANCES, "-inf", now)
        names = await self.redis.zrangebyscore(INSTANCES, now, "+inf")
        if not names:
            return []
        values = await self.redis.mget([instance_key(n if isinstance(n, str) else n.decode()) for n in names])
        return [_unjson(value) for value in values if value]

    async def serving(self, model: str) -> bool:
        return any(model in instance.get("models", {}) for instance in await self.instances())

    async def alive(self, name: str) -> bool:
        return bool(await self.redis.exists(instance_key(name)))

    async def retry_after(self, model: str, waiting: int) -> int:
        average = await self.redis.hget(stats_key(model), "avg_s")
        seconds = float(average) if average else 1.0
        return max(1, math.ceil(seconds * max(waiting, 1)))

    async def submit(self, job: JobRequest) -> None:
        """Queue an interactive job, or raise 503 (no ai process serves it) / 429 (its queue is full)."""
        if not await self.serving(job.model):
            if not await self.instances():
                raise not_running()
            raise AiError(503, "model-not-loaded", f"no running ai process has loaded model {job.model}; "
                                                   f"it loads models when it starts", retry_after=30)
        job.deadline = job.deadline or time.time() + self.settings.request_timeout_s
        length = int(await self._admit(keys=[queue_key(job.model)], args=[encode_job(job), self.settings.queue_size]))
        if length < 0:
            retry = await self.retry_after(job.model, -length)
            raise AiError(429, "ai-queue-full", f"model {job.model} has {-length} requests waiting, its limit; "
                                                f"retry in {retry}s", retry_after=retry)

    async def cancel(self, job: JobRequest) -> None:
        """The caller gave up: take the job off the queue if it waits there, stop it if it runs."""
        await self.redis.lrem(queue_key(job.model), 1, encode_job(job))
        await self.redis.set(f"{PREFIX}:cancelled:{job.id}", 1, ex=OUT_TTL_S)
        await self.redis.publish(CANCEL_CHANNEL, job.id)

    async def events(self, job: JobRequest) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``("token", text)`` while the model writes, then ``("done", result)``; raise AiError on failure."""
        stream, last = out_key(job.id), "0-0"
        while True:
            remaining = job.deadline - time.time()
            if remaining <= 0:
                raise AiError(504, "ai-timeout", f"the AI did not answer within {self.settings.request_timeout_s:g}s")
            block_ms = int(min(1.0, remaining, self.settings.heartbeat_s) * 1000) or 1
            answer = await self.redis.xread({stream: last}, count=256, block=block_ms)
            if not answer:
                await self._check_alive(job)
                continue
            for entry_id, fields in answer[0][1]:
                last = entry_id
                kind = _text(fields.get(b"k") or fields.get("k"))
                value = fields.get(b"v") if b"v" in fields else fields.get("v")
                if kind == "t":
                    yield "token", _text(value)
                elif kind == "done":
                    yield "done", _unjson(value)
                    return
                elif kind == "error":
                    error = _unjson(value)
                    raise AiError(error["status"], error["slug"], error["detail"], field=error.get("field"))

    async def _check_alive(self, job: JobRequest) -> None:
        owner = await self.redis.hget(job_key(job.id), "owner")
        if owner:
            if not await self.alive(_text(owner)):
                raise AiError(503, "ai-process-lost", "the ai process running this request stopped before it "
                                                      "finished; nothing was kept, send the request again",
                              retry_after=5)
        elif not await self.serving(job.model):
            raise not_running() if not await self.instances() else AiError(
                503, "model-not-loaded", f"no running ai process serves model {job.model} any more", retry_after=30)

    async def call(self, job: JobRequest) -> dict:
        """Submit and wait for the result (raises AiError)."""
        await self.submit(job)
        try:
            async for kind, value in self.events(job):
                if kind == "done":
                    return value
        except BaseException:
            await asyncio.shield(self.cancel(job))
            raise
        raise AiError(502, "ai-protocol", "the ai process ended the answer without a result")

    async def wake(self, model: str) -> None:
        await self.redis.rpush(wake_key(model), 1)
        await self.redis.ltrim(wake_key(model), -8, -1)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_job_id() -> str:
    return str(uuid.uuid4())
