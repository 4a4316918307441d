"""Thin HTTP handlers of the AI module (/api/v1/ai/...).

Each parses and bounds its input (msgspec Structs that forbid unknown fields), then calls the
service in actions.py with the actor first. Short jobs answer at once (200); ``"async": true``
or ``Prefer: respond-async`` (and large audio uploads) answer 202 with a job to poll; LLM tools
stream server-sent events with ``"stream": true`` or ``Accept: text/event-stream``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, JSONBody, QueryParameter
from litestar.response import Response, ServerSentEvent

from plugins.ai import access, actions, registry
from plugins.ai.protocol import AiError
from plugins.ai.tasks import LANGUAGE_PATTERN
from sygmax.auth.tokens import CurrentActor
from sygmax.errors import Problem, problem_responses
from sygmax.kernel import KernelDep

SECURITY = [{"bearer": []}]
TAGS = ["ai"]

# Not only white space (the schema says so); the length limit is the configured ai.max_text_chars (413).
Text = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S", description="the text to work on (limit: ai.max_text_chars)")]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=registry.NAME_PATTERN,
                                        description="a registered model; default: the one chosen for you")]
MaxTokens = Annotated[int, msgspec.Meta(ge=16, le=4096)]
Language = Annotated[str, msgspec.Meta(min_length=2, max_length=40, pattern=LANGUAGE_PATTERN)]



class JobAccepted(msgspec.Struct):
    id: str
    status: str
    url: str


class TextOut(msgspec.Struct):
    text: str
    model: str
    version: str
    cached: bool
    tokens: int = 0
    tokens_per_s: float = 0.0
    seconds: float = 0.0


class TagsOut(msgspec.Struct):
    tags: list[str]
    model: str
    version: str
    cached: bool
    tokens: int = 0
    seconds: float = 0.0


class Segment(msgspec.Struct):
    start: float
    end: float
    text: str


class TranscriptOut(msgspec.Struct):
    text: str
    segments: list[Segment]
    language: str | None
    duration: float
    model: str
    version: str
    cached: bool
    seconds: float = 0.0


class Entity(msgspec.Struct):
    text: str
    label: str
    start: int
    end: int


class EntitiesOut(msgspec.Struct):
    entities: list[Entity]
    model: str
    version: str
    cached: bool
    seconds: float = 0.0


class Hit(msgspec.Struct):
    source_type: str
    source_id: str
    workspace_id: str | None
    object_type: str | None
    object_id: str | None
    text: str
    score: float


class SearchOut(msgspec.Struct):
    hits: list[Hit]
    model: str


class JobOut(msgspec.Struct):
    id: str
    op: str
    model: str
    status: Literal["queued", "running", "done", "failed"]
    attempts: int
    created_at: str
    finished_at: str | None
    result: dict | None
    error: dict | None
    note: str | None = None


class ModelOut(msgspec.Struct):
    name: str
    kind: str
    version: str
    is_default: bool
    rollout_percent: int
    loaded: bool
    device: str | None


class ModelsOut(msgspec.Struct):
    models: list[ModelOut]
    ai_running: bool
    gpu: bool


class SummarizeIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    model: ModelName | None = None
    sentences: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    max_tokens: MaxTokens | None = None
    stream: bool = False
    run_async: bool = msgspec.field(default=False, name="async")


class CorrectIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    model: ModelName | None = None
    max_tokens: MaxTokens | None = None
    stream: bool = False
    run_async: bool = msgspec.field(default=False, name="async")


class TagsIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    model: ModelName | None = None
    max_tags: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    run_async: bool = msgspec.field(default=False, name="async")


class TranslateIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    target_language: Language
    model: ModelName | None = None
    max_tokens: MaxTokens | None = None
    stream: bool = False
    run_async: bool = msgspec.field(default=False, name="async")


class EntitiesIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    model: ModelName | None = None


class SearchIn(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S", description="what to look for, in plain words")]
    scope: Literal["all", "chats", "feeds"] = "all"
    workspace_id: uuid.UUID | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10


@dataclass
class TranscribeForm:
    file: UploadFile


def _responses(*codes: int, accepted: bool = False) -> dict[int, ResponseSpec]:
    text = {403: "This API token is not scoped for ai.use", 404: "No model of that name is registered",
            503: "The AI profile is not running, or the model is not loaded (see Retry-After)",
            502: "The model's answer could not be used", 504: "The AI did not answer in time"}
    found = problem_responses(text, *codes)
    if accepted:
        found[202] = ResponseSpec(data_container=JobAccepted, description="Accepted as a job: poll its url")
    return found


def _wants_async(request: Request, flag: bool) -> bool:
    return flag or "respond-async" in request.headers.get("prefer", "").lower()


def _wants_stream(request: Request, flag: bool) -> bool:
    return flag or "text/event-stream" in request.headers.get("accept", "").lower()


def _accepted(job_id: uuid.UUID) -> Response:
    url = f"/api/v1/ai/jobs/{job_id}"
    return Response(JobAccepted(str(job_id), "queued", url), status_code=202, headers={"Location": url})


def _disconnect_watch(request: Request):
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    return disconnected


async def _text_tool(op: str, data, params: dict, actor, kernel, request: Request, out_type) -> Response:
    ai = actions.service(kernel)
    text = ai.check_text(data.text)
    model, cache_key, cached = await ai.prepare(actor, op, data.model, [text, params])
    if cached is not None:
        return Response(out_type(**{**cached, "cached": True}), headers={"X-AI-Cache": "hit"})
    if _wants_async(request, data.run_async):
        return _accepted(await ai.create_job(actor, op, model, text=text, params=params))
    job = ai.job(actor, op, model, text=text, params=params, stream=_wants_stream(request, getattr(data, "stream", False)))
    if job.stream:
        await ai.submit_stream(job)
        return ServerSentEvent(ai.stream(job, cache_key), headers={"X-AI-Cache": "miss", "Cache-Control": "no-store"})
    result = await ai.run(job, op, _disconnect_watch(request))
    await ai.cache_put(cache_key, result)
    return Response(out_type(**_fields(out_type, result), cached=False), headers={"X-AI-Cache": "miss"})


def _fields(out_type, result: dict) -> dict:
    names = set(out_type.__struct_fields__) - {"cached"}
    return {key: value for key, value in result.items() if key in names}


@post("/summarize", tags=TAGS, summary="Summarise a text", security=SECURITY, status_code=200,
      responses=_responses(403, 404, 502, 503, 504, accepted=True))
async def summarize(data: JSONBody[SummarizeIn], actor: CurrentActor, kernel: KernelDep,
                    request: Request) -> Response[TextOut]:
    params = {"sentences": data.sentences, "max_tokens": data.max_tokens}
    return await _text_tool("summarize", data, params, actor, kernel, request, TextOut)


@post("/correct_text", tags=TAGS, summary="Correct spelling and grammar", security=SECURITY, status_code=200,
      responses=_responses(403, 404, 502, 503, 504, accepted=True))
async def correct_text(data: JSONBody[CorrectIn], actor: CurrentActor, kernel: KernelDep,
                       request: Request) -> Response[TextOut]:
    return await _text_tool("correct_text", data, {"max_tokens": data.max_tokens}, actor, kernel, request, TextOut)


@post("/generate_tags", tags=TAGS, summary="Suggest topic tags (a JSON list)", security=SECURITY, status_code=200,
      responses=_responses(403, 404, 502, 503, 504, accepted=True))
async def generate_tags(data: JSONBody[TagsIn], actor: CurrentActor, kernel: KernelDep,
                        request: Request) -> Response[TagsOut]:
    return await _text_tool("generate_tags", data, {"max_tags": data.max_tags}, actor, kernel, request, TagsOut)


@post("/translate", tags=TAGS, summary="Translate a text", security=SECURITY, status_code=200,
      responses=_responses(403, 404, 502, 503, 504, accepted=True))
async def translate(data: JSONBody[TranslateIn], actor: CurrentActor, kernel: KernelDep,
                    request: Request) -> Response[TextOut]:
    params = {"target_language": data.target_language, "max_tokens": data.max_tokens}
    return await _text_tool("translate", data, params, actor, kernel, request, TextOut)


@post("/entities", tags=TAGS, summary="Named entities (people, places, organisations, dates...)",
      security=SECURITY, status_code=200, responses=_responses(403, 404, 503, 504))
async def entities(data: JSONBody[EntitiesIn], actor: CurrentActor, kernel: KernelDep,
                   request: Request) -> Response[EntitiesOut]:
    ai = actions.service(kernel)
    text = ai.check_text(data.text)
    model, cache_key, cached = await ai.prepare(actor, "entities", data.model, [text])
    if cached is not None:
        return Response(EntitiesOut(**{**cached, "cached": True}), headers={"X-AI-Cache": "hit"})
    result = await ai.run(ai.job(actor, "entities", model, text=text), "entities", _disconnect_watch(request))
    await ai.cache_put(cache_key, result)
    return Response(EntitiesOut(**_fields(EntitiesOut, result), cached=False), headers={"X-AI-Cache": "miss"})


@post("/transcribe", tags=TAGS, summary="Speech to text (multipart field `file`: ogg/opus, mp3, wav, m4a...)",
      security=SECURITY, status_code=200, responses=_responses(403, 503, 504, accepted=True))
async def transcribe(data: Annotated[TranscribeForm, Body(media_type=RequestEncodingType.MULTI_PART)],
                     actor: CurrentActor, kernel: KernelDep, request: Request,
                     language: Annotated[str | None, QueryParameter(pattern=r"^[a-z]{2,3}$", max_length=3,
                                                               description="ISO 639-1 code; default: detect")] = None,
                     run_async: Annotated[bool, QueryParameter(name="async", description="answer 202 with a job")] = False) -> Response[TranscriptOut]:
    ai = actions.service(kernel)
    upload = data.file
    if not isinstance(upload, UploadFile):
        raise Problem(400, "validation-error", "file: upload the audio as a file in multipart field `file`",
                      field="file")
    audio = await upload.read(ai.settings.max_audio_bytes + 1)
    if len(audio) > ai.settings.max_audio_bytes:
        raise Problem(413, "audio-too-large", f"file: audio files may be at most {ai.settings.max_audio_bytes} bytes",
                      field="file", limit=ai.settings.max_audio_bytes)
    params = {"language": language} if language else {}
    model, cache_key, cached = await ai.prepare(actor, "transcribe", None,
                                                [hashlib.sha256(audio).hexdigest(), params])
    if not audio:
        raise Problem(400, "empty-file", "file: the upload is empty", field="file")
    if cached is not None:
        return Response(TranscriptOut(**{**cached, "cached": True}), headers={"X-AI-Cache": "hit"})
    key = f"ai/uploads/{uuid.uuid4()}"
    await kernel.storage.put(key, audio, content_type=upload.content_type or "application/octet-stream")
    if _wants_async(request, run_async) or len(audio) > ai.settings.sync_audio_bytes:
        return _accepted(await ai.create_job(actor, "transcribe", model, params=params, input_key=key,
                                             delete_input=True))
    try:
        result = await ai.run(ai.job(actor, "transcribe", model, params=params, input_key=key), "transcribe",
                              _disconnect_watch(request))
    finally:
        await kernel.storage.delete(key)
    await ai.cache_put(cache_key, result)
    return Response(TranscriptOut(**_fields(TranscriptOut, result), cached=False), headers={"X-AI-Cache": "miss"})


@post("/search", tags=TAGS, summary="Semantic search over the chats and feeds you can read", security=SECURITY,
      status_code=200, responses=_responses(403, 503, 504))
async def search(data: JSONBody[SearchIn], actor: CurrentActor, kernel: KernelDep, request: Request) -> SearchOut:
    ai = actions.service(kernel)
    query = ai.check_text(data.q, field="q", limit=ai.settings.max_query_chars)
    model = await ai.model_for(actor, "search", None)
    await ai.check_quota(actor, model.name)
    wanted = data.limit * ai.settings.search_overfetch
    while True:
        # Over-fetch, filter by the policy, and fetch deeper only if too few hits were readable.
        result = await ai.run(ai.job(actor, "search", model, text=query, params={"k": wanted}), "search",
                              _disconnect_watch(request))
        async with kernel.db.pool.acquire() as connection:
            hits = await access.readable_hits(connection, actor, [tuple(hit) for hit in result["hits"]],
                                              scope=data.scope, workspace_id=data.workspace_id)
        if len(hits) >= data.limit or len(result["hits"]) < wanted or wanted >= 2000:
            break
        wanted *= 4
    return SearchOut([Hit(**hit) for hit in hits[: data.limit]], model.name)


@get("/jobs/{job_id:uuid}", tags=TAGS, summary="An async AI job: status and result", security=SECURITY)
async def get_job(job_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> JobOut:
    return JobOut(**await actions.service(kernel).get_job(actor, job_id))


@get("/models", tags=TAGS, summary="Registered models, which are loaded, and whether a GPU is in use",
     security=SECURITY, responses=_responses(503))
async def list_models(actor: CurrentActor, kernel: KernelDep) -> ModelsOut:
    ai = actions.service(kernel)
    models = await ai.registry.get(kernel.db.pool)
    try:
        instances = await ai.client.instances()
    except Exception as exc:  # Redis away: say so rather than claim nothing runs
        raise Problem(503, "unavailable", f"cannot reach Redis: {type(exc).__name__}") from None
    loaded = {name: info for instance in instances for name, info in instance.get("models", {}).items()}
    return ModelsOut([ModelOut(m.name, m.kind, m.version, m.is_default, m.rollout_percent, m.name in loaded,
                               loaded.get(m.name, {}).get("device")) for m in models],
                     bool(instances), any(instance.get("gpu") for instance in instances))


HANDLERS = [summarize, correct_text, generate_tags, translate, entities, transcribe, search, get_job, list_models]
__all__ = ["HANDLERS", "AiError"]
