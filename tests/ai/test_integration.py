"""Feeds and chats integration through the event contracts only: annotations and transcripts."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
from redis.asyncio import Redis

from sygmax.events.bus import EventBus
from sygmax.storage.base import open_store
from sygmax.events.contracts import (
    AiAnnotationReady,
    AiTranscriptReady,
    ChatAttachmentRef,
    ChatMessagePosted,
    FeedItemAdded,
)
from tests.ai.conftest import async_wait_for


@pytest.fixture
def api(api_worker):
    return api_worker  # these tests need the worker's event consumers


@pytest.fixture
async def bus(ai_running):
    client = Redis.from_url(ai_running.redis_url)
    yield EventBus(client, ai_running.settings().events)
    await client.aclose()


async def published(bus: EventBus, event_type, target_id: uuid.UUID, db=None):
    if db is not None:  # a failed job would never publish: say why at once
        failed = await db.fetchval("SELECT error FROM ai_job WHERE notify->>'target_id' = $1 AND status = 'failed'",
                                   str(target_id))
        assert failed is None, failed
    entries = await bus.redis.xrange(bus.stream_for(event_type))
    for _, fields in entries:
        event = bus.decode(fields)
        if event.target_id == target_id:
            return event
    return None


async def test_feed_item_asking_for_annotation_gets_summary_and_tags(api, bus, make_user, ai_db):
    alice = await make_user("alice")
    item = FeedItemAdded(item_id=uuid.uuid4(), subscription_id=uuid.uuid4(), user_id=alice.id, workspace_id=None,
                         title="New battery chemistry doubles electric car range",
                         url="https://news.example/battery", annotate=True,
                         text="Researchers announced a solid-state battery that charges in ten minutes and lasts "
                              "twice as long as lithium-ion cells used in electric cars today.")
    plain = FeedItemAdded(item_id=uuid.uuid4(), subscription_id=item.subscription_id, user_id=alice.id,
                          workspace_id=None, title="Weather", url=None, text="Sunny all week.")
    await bus.publish_many([item, plain])
    event = await async_wait_for(lambda: published(bus, AiAnnotationReady, item.item_id, ai_db), timeout=180)
    assert event.target_type == "feeds.item" and event.summary.strip() and event.model == "smollm2-135m-instruct"
    assert 1 <= len(event.tags) <= 5 and all(tag == tag.lower() for tag in event.tags)
    # Only the subscription that asked for it is annotated; the same event again makes no second job.
    await bus.publish(item)
    assert await published(bus, AiAnnotationReady, plain.item_id) is None


async def test_voice_message_in_a_chat_gets_a_transcript(api, bus, make_user, ai_running, ai_db):
    if not shutil.which("espeak-ng") or not shutil.which("ffmpeg"):
        pytest.skip("espeak-ng and ffmpeg are needed")
    alice = await make_user("alice")
    wav = ai_running.directory / "voice.wav"
    ogg = ai_running.directory / "voice.ogg"
    subprocess.run(["espeak-ng", "-s", "130", "-w", str(wav), "Please send the report by Friday."], check=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libopus", str(ogg)],
                   check=True)
    key = f"chats/attachments/{uuid.uuid4()}/voice.ogg"
    settings = ai_running.settings()
    store = open_store(settings.storage, public_base_url=settings.server.public_url)
    await store.put(key, ogg.read_bytes(), content_type="audio/ogg")  # as the chats module stores it
    attachment = ChatAttachmentRef(attachment_id=uuid.uuid4(), storage_key=key, filename="voice.ogg",
                                   content_type="audio/ogg; codecs=opus", size=ogg.stat().st_size)
    picture = ChatAttachmentRef(attachment_id=uuid.uuid4(), storage_key="chats/x.png", filename="x.png",
                                content_type="image/png", size=10)
    await bus.publish(ChatMessagePosted(message_id=uuid.uuid4(), channel_id=uuid.uuid4(), workspace_id=uuid.uuid4(),
                                        author_id=alice.id, seq=1, text="", attachments=[attachment, picture]))
    event = await async_wait_for(lambda: published(bus, AiTranscriptReady, attachment.attachment_id, ai_db), timeout=180)
    assert event.target_type == "chats.attachment" and "report" in event.text.lower()
    assert event.segments and event.segments[0].end > event.segments[0].start
    assert await store.exists(key)  # the chat's file is the chat's: the AI never deletes it
    await store.close()
    assert await published(bus, AiTranscriptReady, picture.attachment_id) is None
