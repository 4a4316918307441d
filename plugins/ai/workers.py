"""Event consumers of the AI module (run by the worker profile; no model is loaded here).

* Chat messages and feed items are recorded for semantic search as they arrive (edits
  re-index, deletes remove); the ai process embeds what was recorded, in batches, and every
  ai process brings its FAISS index up to date from PostgreSQL.
* A feed item whose subscription asks for it gets a durable ``annotate`` job (summary and
  tags); a chat message's audio attachments get ``transcribe`` jobs. The ai process runs them
  and publishes AiAnnotationReady / AiTranscriptReady.

Handlers are idempotent: indexing is an upsert, and a job's id is derived from the event, so
a redelivered event creates no second job.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

import structlog

from plugins.ai import actions, registry
from plugins.ai.protocol import VECTOR_WAKE
from plugins.ai.tasks import OP_KIND
from plugins.ai.vectors import forget_source, record_source
from sygmax.events.contracts import (
    ChatMessageDeleted,
    ChatMessageEdited,
    ChatMessagePosted,
    FeedItemAdded,
    FeedItemRemoved,
)

log = structlog.get_logger("sygmax.ai")

AUDIO_SUFFIXES = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".aac", ".flac", ".webm"}
JOB_NAMESPACE = uuid.UUID("0b7c6d1e-5a8f-4f43-9a57-3c1f2e9d7a10")
CHANNEL = "chats.channel"


async def _nudge(kernel) -> None:
    await kernel.redis.rpush(VECTOR_WAKE, 1)
    await kernel.redis.ltrim(VECTOR_WAKE, -4, -1)


async def _default_model(kernel, op: str) -> registry.ModelRow | None:
    """The default model for ``op``; registers the packaged ones if the registry is still empty."""
    ai = actions.service(kernel)
    models = await ai.registry.get(kernel.db.pool)
    chosen = registry.choose(models, OP_KIND[op], None)
    if chosen is None:
        async with kernel.db.pool.acquire() as connection:
            models = await registry.ensure_defaults(connection, ai.settings)
        ai.registry.forget()
        chosen = registry.choose(models, OP_KIND[op], None)
    return chosen


def is_audio(content_type: str, filename: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind.startswith("audio/") or kind in ("application/ogg", "video/ogg") or \
        PurePosixPath(filename.lower()).suffix in AUDIO_SUFFIXES


async def on_message_posted(kernel, event: ChatMessagePosted) -> None:
    if event.text.strip():
        async with kernel.db.pool.acquire() as connection:
            await record_source(connection, source_type="chats.message", source_id=event.message_id,
                                text=event.text, workspace_id=event.workspace_id, object_type=CHANNEL,
                                object_id=str(event.channel_id))
        await _nudge(kernel)
    audio = [a for a in event.attachments if is_audio(a.content_type, a.filename)]
    if not audio:
        return
    model = await _default_model(kernel, "transcribe")
    if model is None:
        log.warning("ai_no_stt_model", message=str(event.message_id), attachments=len(audio))
        return
    ai = actions.service(kernel)
    for attachment in audio:
        await ai.create_job(None, "transcribe", model, input_key=attachment.storage_key, bounded=False,
                            notify={"target_type": "chats.attachment", "target_id": str(attachment.attachment_id)},
                            job_id=uuid.uuid5(JOB_NAMESPACE, f"transcribe:{attachment.attachment_id}"))


async def on_message_edited(kernel, event: ChatMessageEdited) -> None:
    async with kernel.db.pool.acquire() as connection:
        if event.text.strip():
            await record_source(connection, source_type="chats.message", source_id=event.message_id,
                                text=event.text, workspace_id=event.workspace_id, object_type=CHANNEL,
                                object_id=str(event.channel_id))
        else:
            await forget_source(connection, source_type="chats.message", source_id=event.message_id)
    await _nudge(kernel)


async def on_message_deleted(kernel, event: ChatMessageDeleted) -> None:
    async with kernel.db.pool.acquire() as connection:
        await forget_source(connection, source_type="chats.message", source_id=event.message_id)


async def on_feed_item_added(kernel, event: FeedItemAdded) -> None:
    text = "\n".join(part for part in (event.title.strip(), event.text.strip()) if part)
    if text:
        async with kernel.db.pool.acquire() as connection:
            # A personal item is readable by its subscriber only; a shared one by the workspace.
            await record_source(connection, source_type="feeds.item", source_id=event.item_id, text=text,
                                workspace_id=event.workspace_id if event.user_id is None else None,
                                user_id=event.user_id)
        await _nudge(kernel)
    if not event.annotate or not text:
        return
    model = await _default_model(kernel, "annotate")
    if model is None:
        log.warning("ai_no_llm_model", item=str(event.item_id))
        return
    await actions.service(kernel).create_job(
        None, "annotate", model, text=text[: actions.service(kernel).settings.max_text_chars], bounded=False,
        notify={"target_type": "feeds.item", "target_id": str(event.item_id)},
        job_id=uuid.uuid5(JOB_NAMESPACE, f"annotate:{event.item_id}"))


async def on_feed_item_removed(kernel, event: FeedItemRemoved) -> None:
    async with kernel.db.pool.acquire() as connection:
        await forget_source(connection, source_type="feeds.item", source_id=event.item_id)


HANDLERS = {
    ChatMessagePosted: on_message_posted,
    ChatMessageEdited: on_message_edited,
    ChatMessageDeleted: on_message_deleted,
    FeedItemAdded: on_feed_item_added,
    FeedItemRemoved: on_feed_item_removed,
}
