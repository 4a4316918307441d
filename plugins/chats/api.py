"""Thin REST handlers of the chats module, mounted under ``/api/v1/chats``.

Each handler parses its input (msgspec Structs that forbid unknown fields and bound every
size), calls one action or query with the actor first, and returns its view. The protocol is
documented in docs/api.md ("Chats").
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Body, FromPath, HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream

from plugins.chats import actions, queries
from plugins.chats.access import access_attachment
from plugins.chats.attachments import INLINE_IMAGES, check_upload, download_headers
from plugins.chats.views import (
    AttachmentOut,
    ChannelOut,
    EditOut,
    MemberOut,
    MessageOut,
    PresenceOut,
    ReactionOut,
    ReadOut,
    SearchHit,
    UnreadOut,
)
from sygmax.auth import workspaces
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import CurrentActor
from sygmax.errors import Problem, problem_responses
from sygmax.kernel import KernelDep
from sygmax.storage.base import ObjectNotFound

SECURITY = [{"bearer": []}]
TAGS = ["chats"]

# Plain-text names and topics, by the workspace rules (no control characters, no < or >):
# they end up in notifications, e-mail subjects and logs, not only in the escaped UI.
ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=80, pattern=workspaces.NAME_PATTERN,
                                          description="plain text: no control characters, no < or >")]
Topic = Annotated[str, msgspec.Meta(max_length=250, pattern=workspaces.DESCRIPTION_PATTERN)]
# The configured size limit (default 10,000 characters) is checked by the action with a 413;
# this bound only stops absurd bodies before they are decoded further. A message needs
# something to say: at least one character that is not white space (with attachments too).
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1_000_000, pattern=actions.TEXT_PATTERN,
                                   description="Markdown; at least one non-space character, no control "
                                               "characters but tab and newline")]
# A new message may leave the text empty when it carries attachments: the field alone allows
# "", and the body's schema says that text or attachment_ids must have something (anyOf).
OptionalText = Annotated[str, msgspec.Meta(max_length=1_000_000, pattern=actions.TEXT_CHARS_PATTERN,
                                           description="Markdown; may be empty when attachment_ids is not")]
# (additional_properties=True: each branch constrains one field; the body's own schema stays closed.)
_TEXT_OR_FILES = [
    Schema(type=OpenAPIType.OBJECT, required=["text"], additional_properties=True,
           properties={"text": Schema(type=OpenAPIType.STRING, pattern=actions.TEXT_PATTERN)}),
    Schema(type=OpenAPIType.OBJECT, required=["attachment_ids"], additional_properties=True,
           properties={"attachment_ids": Schema(type=OpenAPIType.ARRAY, min_items=1)}),
]
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=actions.EMOJI_PATTERN)]
# At most 2**53: larger JSON numbers lose precision in JavaScript clients and JSON-schema tools.
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=200,
                                                       description="repeat a post safely: the same key returns "
                                                                   "the first message")]
# A sequence number; out-of-range values are clamped by the query (an optional parameter's
# bounds would not reach the OpenAPI schema, so the schema could not say them).
Cursor = Annotated[int | None, QueryParameter(description="a sequence number")]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]



def _responses(*codes: int) -> dict[int, ResponseSpec]:
    text = {403: "Not allowed", 404: "No such object, or not visible to you",
            409: "Conflicts with the current state", 413: "Too large (message or attachment)",
            422: "Well-formed but out of range", 429: "Too many messages; see Retry-After"}
    return problem_responses(text, *codes)


class ChannelIn(msgspec.Struct, forbid_unknown_fields=True):
    workspace_id: uuid.UUID
    name: ChannelName
    private: bool = False
    topic: Topic = ""


class ChannelPatch(msgspec.Struct, forbid_unknown_fields=True):
    name: ChannelName | None = None
    topic: Topic | None = None


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID


class DirectIn(msgspec.Struct, forbid_unknown_fields=True):
    workspace_id: uuid.UUID
    user_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=actions.MAX_GROUP - 1,
                                                      description="the others; you are always included")]


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    text: OptionalText = ""
    thread_root_id: uuid.UUID | None = None
    attachment_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=10)] = []


class MessagePatch(msgspec.Struct, forbid_unknown_fields=True):
    text: Text


class ReactionIn(msgspec.Struct, forbid_unknown_fields=True):
    emoji: Emoji


class ReadIn(msgspec.Struct, forbid_unknown_fields=True):
    seq: Seq


class UploadIn(msgspec.Struct):
    file: UploadFile


C = "/channels/{channel_id:uuid}"
M = "/messages/{message_id:uuid}"


# ---------------------------------------------------------------------------------------------
# Channels and members


@post("/channels", tags=TAGS, summary="Create a channel (you become a member and its manager)", security=SECURITY,
      responses=_responses(403, 404, 409))
async def create_channel(data: JSONBody[ChannelIn], actor: CurrentActor, kernel: KernelDep,
                         request: Request) -> ChannelOut:
    return await actions.check_create_channel(actor, kernel, workspace_id=data.workspace_id, name=data.name,
                                              private=data.private, topic=data.topic, source=source_of(request))


@get("/channels", tags=TAGS, summary="Channels of a workspace you can read, with unread counts", security=SECURITY,
     responses=_responses(403, 404))
async def list_channels(workspace_id: Annotated[uuid.UUID, QueryParameter()], actor: CurrentActor,
                        kernel: KernelDep) -> list[ChannelOut]:
    return await queries.list_channels(actor, kernel, workspace_id)


@get(C, tags=TAGS, summary="One channel", security=SECURITY, responses=_responses(403))
async def read_channel(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> ChannelOut:
    return await queries.get_channel(actor, kernel, channel_id)


@patch(C, tags=TAGS, summary="Rename a channel or change its topic", security=SECURITY,
       responses=_responses(403, 409))
async def update_channel(channel_id: FromPath[uuid.UUID], data: JSONBody[ChannelPatch], actor: CurrentActor,
                         kernel: KernelDep, request: Request) -> ChannelOut:
    return await actions.check_update_channel(actor, kernel, channel_id, name=data.name, topic=data.topic,
                                              source=source_of(request))


@delete(C, tags=TAGS, summary="Delete a channel and its messages", security=SECURITY, responses=_responses(403))
async def delete_channel(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                         request: Request) -> None:
    await actions.check_delete_channel(actor, kernel, channel_id, source=source_of(request))


@get(C + "/members", tags=TAGS, summary="Members of a channel with their read markers", security=SECURITY,
     responses=_responses(403))
async def list_members(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> list[MemberOut]:
    return await queries.list_members(actor, kernel, channel_id)


@post(C + "/members", tags=TAGS, summary="Join a public channel, or add a member (chats.manage)",
      security=SECURITY, status_code=204, responses=_responses(403, 409))
async def add_member(channel_id: FromPath[uuid.UUID], data: JSONBody[MemberIn], actor: CurrentActor,
                     kernel: KernelDep, request: Request) -> None:
    await actions.check_add_member(actor, kernel, channel_id, data.user_id, source=source_of(request))


@delete(C + "/members/{user_id:uuid}", tags=TAGS, summary="Leave a channel, or remove a member (chats.manage)",
        security=SECURITY, responses=_responses(403, 409))
async def remove_member(channel_id: FromPath[uuid.UUID], user_id: FromPath[uuid.UUID], actor: CurrentActor,
                        kernel: KernelDep, request: Request) -> None:
    await actions.check_remove_member(actor, kernel, channel_id, user_id, source=source_of(request))


@post("/direct", tags=TAGS, summary="Open (or find) a direct or group conversation", security=SECURITY,
      status_code=200, responses={**_responses(403, 404),
                                  201: ResponseSpec(data_container=ChannelOut, description="Opened now")})
async def open_direct(data: JSONBody[DirectIn], actor: CurrentActor, kernel: KernelDep,
                      request: Request) -> Response[ChannelOut]:
    channel, created = await actions.check_open_direct(actor, kernel, workspace_id=data.workspace_id,
                                                       user_ids=data.user_ids, source=source_of(request))
    return Response(channel, status_code=201 if created else 200)


@get("/unread", tags=TAGS, summary="Unread and mention counts of your channels in a workspace", security=SECURITY,
     responses=_responses(403, 404))
async def unread(workspace_id: Annotated[uuid.UUID, QueryParameter()], actor: CurrentActor,
                 kernel: KernelDep) -> list[UnreadOut]:
    return await queries.unread_counts(actor, kernel, workspace_id)


@post(C + "/read", tags=TAGS, summary="Move your read marker to seq", security=SECURITY, status_code=200,
      responses=_responses(403, 409, 422))
async def mark_read(channel_id: FromPath[uuid.UUID], data: JSONBody[ReadIn], actor: CurrentActor,
                    kernel: KernelDep) -> ReadOut:
    return await actions.check_mark_read(actor, kernel, channel_id, data.seq)


@get("/presence", tags=TAGS, summary="Online, away or offline, for every member of a workspace", security=SECURITY,
     responses=_responses(403, 404))
async def presence(workspace_id: Annotated[uuid.UUID, QueryParameter()], actor: CurrentActor,
                   kernel: KernelDep) -> list[PresenceOut]:
    return await queries.presence(actor, kernel, workspace_id)


# ---------------------------------------------------------------------------------------------
# Messages


@post(C + "/messages", tags=TAGS, summary="Post a message (Markdown); the answer carries its seq and HTML",
      security=SECURITY, responses={**_responses(403, 413, 429),
                                    200: ResponseSpec(data_container=MessageOut,
                                                      description="Posted before with this Idempotency-Key")})
async def post_message(channel_id: FromPath[uuid.UUID],
                       data: Annotated[MessageIn, Body(schema_extra={"any_of": _TEXT_OR_FILES})],
                       actor: CurrentActor,
                       kernel: KernelDep, idempotency_key: IdempotencyKey = None) -> Response[MessageOut]:
    message, created = await actions.check_post_message(
        actor, kernel, channel_id, text=data.text, thread_root_id=data.thread_root_id,
        attachment_ids=data.attachment_ids, idempotency_key=idempotency_key)
    return Response(message, status_code=201 if created else 200)


@get(C + "/messages", tags=TAGS, summary="History in seq order: the newest page, or the page below ?before= "
                                         "or above ?after= (both: the oldest page between them)",
     security=SECURITY, responses=_responses(403))
async def list_messages(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                        before: Cursor = None, after: Cursor = None, limit: Limit = 50) -> list[MessageOut]:
    return await queries.list_messages(actor, kernel, channel_id, before=before, after=after, limit=limit)


@get(C + "/pins", tags=TAGS, summary="Pinned messages of a channel, latest pin first", security=SECURITY,
     responses=_responses(403))
async def list_pins(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> list[MessageOut]:
    return await queries.pins(actor, kernel, channel_id)


@get(M, tags=TAGS, summary="One message", security=SECURITY, responses=_responses(403))
async def read_message(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> MessageOut:
    return await queries.get_message(actor, kernel, message_id)


@patch(M, tags=TAGS, summary="Edit your message (the earlier text is kept in its history)", security=SECURITY,
       responses=_responses(403, 409, 413))
async def edit_message(message_id: FromPath[uuid.UUID], data: JSONBody[MessagePatch], actor: CurrentActor,
                       kernel: KernelDep) -> MessageOut:
    return await actions.check_edit_message(actor, kernel, message_id, data.text)


@delete(M, tags=TAGS, summary="Delete a message (yours, or any with chats.manage); its content is removed",
        security=SECURITY, responses=_responses(403))
async def delete_message(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                         request: Request) -> None:
    await actions.check_delete_message(actor, kernel, message_id, source=source_of(request))


@get(M + "/history", tags=TAGS, summary="Earlier versions of an edited message, oldest first", security=SECURITY,
     responses=_responses(403))
async def message_history(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> list[EditOut]:
    return await queries.message_history(actor, kernel, message_id)


@get(M + "/thread", tags=TAGS, summary="A thread: its root, then the replies in seq order", security=SECURITY,
     responses=_responses(403))
async def read_thread(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                      limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200) -> list[MessageOut]:
    return await queries.thread(actor, kernel, message_id, limit)


@post(M + "/reactions", tags=TAGS, summary="React with an emoji; answers the message's reactions",
      security=SECURITY, status_code=200, responses=_responses(403, 409))
async def add_reaction(message_id: FromPath[uuid.UUID], data: JSONBody[ReactionIn], actor: CurrentActor,
                       kernel: KernelDep) -> list[ReactionOut]:
    return await actions.check_react(actor, kernel, message_id, data.emoji, add=True)


@delete(M + "/reactions/{emoji:str}", tags=TAGS, summary="Take your reaction back", security=SECURITY,
        status_code=200, responses=_responses(403, 409))
async def remove_reaction(message_id: FromPath[uuid.UUID],
                          emoji: Annotated[str, PathParameter(min_length=1, max_length=64,
                                                              pattern=actions.EMOJI_PATTERN)],
                          actor: CurrentActor,
                          kernel: KernelDep) -> list[ReactionOut]:
    return await actions.check_react(actor, kernel, message_id, emoji, add=False)


@post(M + "/pin", tags=TAGS, summary="Pin a message to its channel", security=SECURITY, status_code=204,
      responses=_responses(403, 409))
async def pin_message(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> None:
    await actions.check_pin(actor, kernel, message_id, pin=True)


@delete(M + "/pin", tags=TAGS, summary="Unpin a message", security=SECURITY, responses=_responses(403, 409))
async def unpin_message(message_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> None:
    await actions.check_pin(actor, kernel, message_id, pin=False)


@get("/search", tags=TAGS, summary="Full-text search (stemmed) over the messages you can read", security=SECURITY,
     responses=_responses(403, 404))
async def search(q: Annotated[str, QueryParameter(min_length=1, max_length=500)],
                 workspace_id: Annotated[uuid.UUID, QueryParameter()], actor: CurrentActor, kernel: KernelDep,
                 channel_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
                 limit: Limit = 50) -> list[SearchHit]:
    return await queries.search(actor, kernel, q=q, workspace_id=workspace_id, channel_id=channel_id, limit=limit)


# ---------------------------------------------------------------------------------------------
# Attachments


# The upload route's own body limit: the highest [chats] max_attachment_bytes allowed, plus room for
# the multipart envelope; the configured limit is enforced by the action (413 attachment-too-large).
UPLOAD_BODY_LIMIT = 256 * 1024 * 1024 + 64 * 1024


@post(C + "/attachments", tags=TAGS, summary="Upload a file (multipart field 'file'); send its id with a message",
      security=SECURITY, responses=_responses(403, 413), request_max_body_size=UPLOAD_BODY_LIMIT)
async def upload_attachment(channel_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                            data: Annotated[UploadIn, Body(media_type=RequestEncodingType.MULTI_PART)]
                            ) -> AttachmentOut:
    content = await data.file.read()
    return await check_upload(actor, kernel, channel_id, filename=data.file.filename or "", data=content)


async def _download(actor, kernel, attachment_id: uuid.UUID, thumbnail: bool) -> Stream:
    async with kernel.db.pool.acquire() as connection:
        row = await access_attachment(connection, actor, attachment_id)
    key = row["thumbnail_key"] if thumbnail else row["storage_key"]
    if key is None:
        raise Problem(404, "not-found", "This attachment has no thumbnail")
    content_type = "image/webp" if thumbnail else row["content_type"]
    served = content_type if content_type in INLINE_IMAGES else "application/octet-stream"
    chunks = kernel.storage.get(key)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except ObjectNotFound:
        raise Problem(404, "not-found", "The attachment's file is missing from storage") from None

    async def body():
        yield first
        async for chunk in chunks:
            yield chunk

    return Stream(body(), media_type=served, headers=download_headers(row["filename"], content_type))


@get("/attachments/{attachment_id:uuid}", tags=TAGS, summary="Download an attachment (access-checked stream)",
     security=SECURITY, responses=_responses(403))
async def download_attachment(attachment_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> Stream:
    return await _download(actor, kernel, attachment_id, thumbnail=False)


@get("/attachments/{attachment_id:uuid}/thumbnail", tags=TAGS, summary="An image attachment's WebP thumbnail",
     security=SECURITY, responses=_responses(403))
async def download_thumbnail(attachment_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> Stream:
    return await _download(actor, kernel, attachment_id, thumbnail=True)


HANDLERS = [
    create_channel, list_channels, read_channel, update_channel, delete_channel, list_members, add_member,
    remove_member, open_direct, unread, mark_read, presence, post_message, list_messages, list_pins, read_message,
    edit_message, delete_message, message_history, read_thread, add_reaction, remove_reaction, pin_message,
    unpin_message, search, upload_attachment, download_attachment, download_thumbnail,
]
