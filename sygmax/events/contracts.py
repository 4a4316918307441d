"""Events that cross module boundaries: the public contract between plugins.

Plugins never import one another (docs/architecture.md), so an event that one module
publishes and another consumes is declared here, in the kernel, where both can import it.
An event that only its own module consumes stays in that module.

Changing a field here is an API change: add a new class with ``version`` bumped and keep the
old one registered until no stream can still hold it.
"""

from __future__ import annotations

import uuid

import msgspec

from sygmax.events.bus import Event

# --- chats ---------------------------------------------------------------------------------


class ChatAttachmentRef(msgspec.Struct, kw_only=True):
    """A file attached to a chat message, as stored in object storage."""

    attachment_id: uuid.UUID
    storage_key: str
    filename: str
    content_type: str
    size: int


class ChatMessagePosted(Event, kw_only=True):
    """A message was committed to a channel (after its channel sequence number was assigned)."""

    event_type = "chats.message_posted"

    message_id: uuid.UUID
    channel_id: uuid.UUID
    workspace_id: uuid.UUID
    author_id: uuid.UUID
    seq: int
    text: str  # Markdown source as the author wrote it
    thread_root_id: uuid.UUID | None = None
    mentioned_user_ids: list[uuid.UUID] = []
    attachments: list[ChatAttachmentRef] = []
    mention_channel: bool = False  # @channel, @here or @all: everyone in the channel is mentioned
    channel_kind: str = "channel"  # "channel", "direct" or "group"
    channel_name: str = ""
    author_name: str = ""


class ChatMessageEdited(Event, kw_only=True):
    event_type = "chats.message_edited"

    message_id: uuid.UUID
    channel_id: uuid.UUID
    workspace_id: uuid.UUID
    editor_id: uuid.UUID
    text: str


class ChatMessageDeleted(Event, kw_only=True):
    event_type = "chats.message_deleted"

    message_id: uuid.UUID
    channel_id: uuid.UUID
    workspace_id: uuid.UUID


# --- feeds ---------------------------------------------------------------------------------


class FeedItemAdded(Event, kw_only=True):
    """A new item arrived in a subscription (after de-duplication)."""

    event_type = "feeds.item_added"

    item_id: uuid.UUID
    subscription_id: uuid.UUID
    user_id: uuid.UUID | None  # the subscriber; None for a shared workspace feed
    workspace_id: uuid.UUID | None  # set for shared workspace feeds
    title: str
    url: str | None
    text: str  # plain text of the item (sanitised HTML stripped of tags)
    annotate: bool = False  # the subscription asks for an AI summary and tags


class FeedItemRemoved(Event, kw_only=True):
    """An item was removed (retention or unsubscribe); search indexes drop it."""

    event_type = "feeds.item_removed"

    item_id: uuid.UUID
    subscription_id: uuid.UUID


# --- ai --------------------------------------------------------------------------------------


class AiAnnotationReady(Event, kw_only=True):
    """The AI worker summarised and tagged something another module asked about."""

    event_type = "ai.annotation_ready"

    target_type: str  # e.g. "feeds.item"
    target_id: uuid.UUID
    summary: str
    tags: list[str] = []
    model: str = ""


class AiTranscriptSegment(msgspec.Struct, kw_only=True):
    start: float
    end: float
    text: str


class AiTranscriptReady(Event, kw_only=True):
    """An audio file (a voice message, an attachment) was transcribed."""

    event_type = "ai.transcript_ready"

    target_type: str  # e.g. "chats.attachment"
    target_id: uuid.UUID
    text: str
    language: str | None = None
    segments: list[AiTranscriptSegment] = []
    model: str = ""


# --- notifications ---------------------------------------------------------------------------


class NotificationRequested(Event, kw_only=True):
    """Someone should be told about something while they are away (offline mention, DM, digest).

    Delivery (in-app, email, push) belongs to the notifications module; until it exists the
    event stays on the bus for it.
    """

    event_type = "notifications.requested"

    user_id: uuid.UUID
    category: str  # "chats.mention", "chats.direct", "feeds.new_items", ...
    title: str
    body: str
    url: str | None = None
    workspace_id: uuid.UUID | None = None
    source_id: str | None = None  # id of what caused it, for de-duplication by the deliverer
