"""The model registry in PostgreSQL: which models exist, which is each kind's default, rollouts.

Users get the default model of a kind, except that a model with ``rollout_percent`` N > 0
takes N % of users instead (canary; 50 % against the default is an A/B test). The bucket is
a stable hash of model name and user id, so a user stays on the same side between requests
and processes, and raising N only adds users.

Every change goes through a ``do_*`` action that writes an audit row in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sygmax.auth import audit
from sygmax.errors import Problem

KINDS = ("llm", "stt", "embedding", "ner")
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
CACHE_S = 5.0


@dataclass(frozen=True)
class ModelRow:
    name: str
    kind: str
    path: str
    version: str
    options: dict = field(default_factory=dict)
    is_default: bool = False
    rollout_percent: int = 0

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "version": self.version,
                "options": self.options, "is_default": self.is_default, "rollout_percent": self.rollout_percent}


def _row(record) -> ModelRow:
    options = record["options"]
    return ModelRow(record["name"], record["kind"], record["path"], record["version"],
                    json.loads(options) if isinstance(options, str) else dict(options or {}),
                    record["is_default"], record["rollout_percent"])


async def list_models(connection) -> list[ModelRow]:
    rows = await connection.fetch("SELECT * FROM ai_model ORDER BY kind, name")
    return [_row(row) for row in rows]


def bucket(model: str, user_id: uuid.UUID | str) -> int:
    """0..99, stable for (model, user)."""
    digest = hashlib.sha256(f"ai-rollout:{model}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def choose(models: list[ModelRow], kind: str, user_id: uuid.UUID | str | None) -> ModelRow | None:
    """The model of ``kind`` a user gets: a rollout that includes them, else the default."""
    if user_id is not None:
        for model in sorted((m for m in models if m.kind == kind and m.rollout_percent and not m.is_default),
                            key=lambda m: m.name):
            if bucket(model.name, user_id) < model.rollout_percent:
                return model
    return next((m for m in models if m.kind == kind and m.is_default), None)


class RegistryCache:
    """A process's view of the registry, refreshed at most every ``CACHE_S`` seconds."""

    def __init__(self) -> None:
        self.models: list[ModelRow] = []
        self.loaded_at = 0.0

    async def get(self, pool) -> list[ModelRow]:
        if time.monotonic() - self.loaded_at > CACHE_S:
            async with pool.acquire() as connection:
                self.models = await list_models(connection)
            self.loaded_at = time.monotonic()
        return self.models

    def forget(self) -> None:
        self.loaded_at = 0.0


def check_path(kind: str, path: str, models_dir: str) -> list[str]:
    """What is wrong with a model path for this host (empty: looks loadable)."""
    full = Path(path) if Path(path).is_absolute() else Path(models_dir, path)
    if not full.exists():
        return [f"{full} does not exist on this host"]
    expected = {
        "llm": (full.is_file() and full.read_bytes()[:4] == b"GGUF" if full.is_file() else False,
                "a GGUF file"),
        "stt": (full.is_dir() and (full / "model.bin").exists(), "a CTranslate2 Whisper directory (model.bin)"),
        "embedding": ((full.is_file() and full.suffix == ".onnx") or (full / "model.onnx").exists(),
                      "an .onnx file or a directory holding model.onnx"),
        "ner": (full.is_dir() and (full / "config.cfg").exists(), "a spaCy pipeline directory (config.cfg)"),
    }[kind]
    return [] if expected[0] else [f"{full} is not {expected[1]}"]


def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise Problem(400, "validation-error", f"name: {name!r} must match {NAME_PATTERN}", field="name")


async def _get(connection, name: str) -> ModelRow:
    record = await connection.fetchrow("SELECT * FROM ai_model WHERE name = $1", name)
    if record is None:
        raise Problem(404, "unknown-model", f"no model called {name!r} in the registry", field="name")
    return _row(record)


async def do_add_model(actor_id, connection, *, name: str, kind: str, path: str, version: str = "1",
                       options: dict | None = None, make_default: bool = False,
                       source: audit.Source | None = None) -> ModelRow:
    _check_name(name)
    if kind not in KINDS:
        raise Problem(400, "validation-error", f"kind: one of {', '.join(KINDS)}", field="kind")
    if not re.match(VERSION_PATTERN, version):
        raise Problem(400, "validation-error", f"version: {version!r} must match {VERSION_PATTERN}", field="version")
    if not path or len(path) > 1024:
        raise Problem(400, "validation-error", "path: 1 to 1024 characters", field="path")
    async with connection.transaction():
        if await connection.fetchval("SELECT 1 FROM ai_model WHERE name = $1", name):
            raise Problem(409, "model-exists", f"a model called {name!r} is already registered", field="name")
        has_default = await connection.fetchval("SELECT 1 FROM ai_model WHERE kind = $1 AND is_default", kind)
        if make_default and has_default:
            await connection.execute("UPDATE ai_model SET is_default = false, updated_at = now() "
                                     "WHERE kind = $1 AND is_default", kind)
        await connection.execute(
            "INSERT INTO ai_model (name, kind, path, version, options, is_default) VALUES ($1, $2, $3, $4, $5, $6)",
            name, kind, path, version, json.dumps(options or {}), bool(make_default or not has_default))
        await audit.record(connection, actor_id=actor_id, action="ai.model_add", object_type="ai.model",
                           object_id=name, source=source,
                           details={"kind": kind, "path": path, "version": version})
        return await _get(connection, name)


async def do_set_default(actor_id, connection, *, kind: str, name: str, source: audit.Source | None = None) -> ModelRow:
    if kind not in KINDS:
        raise Problem(400, "validation-error", f"kind: one of {', '.join(KINDS)}", field="kind")
    async with connection.transaction():
        model = await _get(connection, name)
        if model.kind != kind:
            raise Problem(400, "kind-mismatch", f"{name} is a {model.kind} model, not {kind}", field="name")
        await connection.execute("UPDATE ai_model SET is_default = false, updated_at = now() "
                                 "WHERE kind = $1 AND is_default", kind)
        # The new default serves everyone: a rollout percentage of its own no longer applies.
        await connection.execute("UPDATE ai_model SET is_default = true, rollout_percent = 0, updated_at = now() "
                                 "WHERE name = $1", name)
        await audit.record(connection, actor_id=actor_id, action="ai.model_default", object_type="ai.model",
                           object_id=name, source=source, details={"kind": kind})
        return await _get(connection, name)


async def do_set_rollout(actor_id, connection, *, name: str, percent: int,
                         source: audit.Source | None = None) -> ModelRow:
    if not 0 <= percent <= 100:
        raise Problem(400, "validation-error", "percent: 0 to 100", field="percent")
    async with connection.transaction():
        model = await _get(connection, name)
        if model.is_default and percent:
            raise Problem(409, "is-default", f"{name} is already the default {model.kind} model: it serves "
                                             f"everyone not in another rollout", field="name")
        await connection.execute("UPDATE ai_model SET rollout_percent = $2, updated_at = now() WHERE name = $1",
                                 name, percent)
        await audit.record(connection, actor_id=actor_id, action="ai.model_rollout", object_type="ai.model",
                           object_id=name, source=source, details={"percent": percent})
        return await _get(connection, name)


async def do_remove_model(actor_id, connection, *, name: str, source: audit.Source | None = None) -> None:
    async with connection.transaction():
        model = await _get(connection, name)
        if model.is_default:
            raise Problem(409, "is-default", f"{name} is the default {model.kind} model: make another model the "
                                             f"default first", field="name")
        await connection.execute("DELETE FROM ai_model WHERE name = $1", name)
        await audit.record(connection, actor_id=actor_id, action="ai.model_remove", object_type="ai.model",
                           object_id=name, source=source, details={"kind": model.kind})


async def ensure_defaults(connection, settings) -> list[ModelRow]:
    """Register a model for each kind that has none: the configured path, else the packaged one.

    Runs when an ai process starts, so a fresh install works offline with no registry commands.
    """
    from plugins.ai.packaged import packaged_models

    packaged = packaged_models()
    configured = {"llm": settings.default_llm, "stt": settings.default_stt,
                  "embedding": settings.default_embedding, "ner": settings.default_ner}
    async with connection.transaction():
        # One ai process at a time: two starting together must not both register a default.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('sygmax.ai.defaults'))")
        for kind in KINDS:
            if await connection.fetchval("SELECT 1 FROM ai_model WHERE kind = $1 AND is_default", kind):
                continue
            if configured[kind]:
                path = configured[kind]
                options = {"tokenizer": settings.embedding_tokenizer} if kind == "embedding" and \
                    settings.embedding_tokenizer else {}
                name = re.sub(r"[^a-z0-9._-]+", "-", Path(path).stem.lower()).strip("-.")[:48] or kind
                entry = {"name": name, "path": path, "version": "1", "options": options}
            elif kind in packaged:
                entry = packaged[kind]
            else:
                continue
            existing = await connection.fetchrow("SELECT kind FROM ai_model WHERE name = $1", entry["name"])
            if existing is None:
                await do_add_model(None, connection, name=entry["name"], kind=kind, path=entry["path"],
                                   version=entry["version"], options=entry["options"], make_default=True)
            elif existing["kind"] == kind:
                await do_set_default(None, connection, kind=kind, name=entry["name"])
    return await list_models(connection)
