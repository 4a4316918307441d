"""Thin REST handlers under /api/v1/feeds: parse and bound the input, call one action."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from plugins.feeds import actions, opml
from plugins.feeds.actions import ItemFilter
from plugins.feeds.settings import feeds_settings
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import CurrentActor
from sygmax.errors import Problem, problem_responses
from sygmax.kernel import KernelDep

SECURITY = [{"bearer": []}]
TAGS = ["feeds"]

URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f-\x9f/?#]+([/?#][^\x00-\x20\x7f-\x9f]*)?$"
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=actions.MAX_URL, pattern=URL_PATTERN,
                                  description="feed or site URL (http/https); a site is searched for its feed")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=actions.MAX_NAME, pattern=actions.NAME_PATTERN,
                                   description="plain text")]
Keyword = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=actions.NAME_PATTERN.replace("<>", ""))]
RuleAction = Annotated[str, msgspec.Meta(pattern=r"^(mark_read|star|tag:" + actions.NAME_PATTERN[1:-1] + r")$",
                                         max_length=actions.MAX_NAME + 4,
                                         description="mark_read, star, or tag:<name>")]



def _responses(*codes: int) -> dict[int, ResponseSpec]:
    text = {400: "Malformed or invalid input", 403: "Not allowed", 404: "No such subscription, folder or workspace", 409: "Conflicts with the current state", 413: "Too large",
            422: "The URL could not be fetched or is not a feed"}
    return problem_responses(text, *codes)


# ---------------------------------------------------------------------------------------------
# Inputs


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    folder: Name | None = None
    title: Name | None = None
    workspace_id: uuid.UUID | None = None
    annotate: bool = False


class SubscriptionPatch(msgspec.Struct, forbid_unknown_fields=True):
    title: Name | None = None
    folder: Name | None = None
    annotate: bool | None = None


class ItemPatch(msgspec.Struct, forbid_unknown_fields=True):
    read: bool | None = None
    starred: bool | None = None
    # Item constraints of a list do not reach the OpenAPI schema, so each tag is checked by the
    # action (after access): plain text, 1-100 characters.
    tags: Annotated[list[str], msgspec.Meta(max_length=actions.MAX_TAGS)] | None = None


class MarkReadIn(msgspec.Struct, forbid_unknown_fields=True):
    subscription_id: uuid.UUID | None = None
    folder_id: uuid.UUID | None = None
    up_to_seq: int | None = None  # an item's seq; everything up to it (negative: nothing)
    older_than: datetime | None = None


class MarkReadOut(msgspec.Struct):
    feeds: int


class FolderIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class RuleIn(msgspec.Struct, forbid_unknown_fields=True):
    keyword: Keyword
    action: RuleAction
    field: Literal["title", "content", "any", "author", "url"] = "any"
    subscription_id: uuid.UUID | None = None


class PreferencesIn(msgspec.Struct, forbid_unknown_fields=True):
    digest: Literal["off", "daily", "weekly"] | None = None
    api_password: Annotated[str, msgspec.Meta(min_length=10, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")] | None = None
    clear_api_password: bool = False


# ---------------------------------------------------------------------------------------------
# Subscriptions


@post("/subscriptions", tags=TAGS, summary="Subscribe to a feed (or a site: its feed is discovered). A feed that "
                                           "cannot be read now is subscribed with the error shown and retried later",
      security=SECURITY, responses=_responses(403, 404, 409))
async def subscribe(data: JSONBody[SubscriptionIn], actor: CurrentActor, kernel: KernelDep,
                    request: Request) -> actions.SubscriptionView:
    return await actions.check_subscribe(actor, kernel, data.url, folder=data.folder, workspace_id=data.workspace_id,
                                         title=data.title, annotate=data.annotate, source=source_of(request))


@get("/subscriptions", tags=TAGS, summary="Your subscriptions and your workspaces' feeds, with unread counts",
     security=SECURITY)
async def subscriptions(actor: CurrentActor, kernel: KernelDep) -> list[actions.SubscriptionView]:
    return await actions.list_subscriptions(actor, kernel)


@get("/subscriptions/{subscription_id:uuid}", tags=TAGS, summary="One subscription (its last error included)",
     security=SECURITY, responses=_responses(403))
async def subscription(subscription_id: FromPath[uuid.UUID], actor: CurrentActor,
                       kernel: KernelDep) -> actions.SubscriptionView:
    return await actions.get_subscription(actor, kernel, subscription_id)


@patch("/subscriptions/{subscription_id:uuid}", tags=TAGS, summary="Rename, move to a folder, AI annotations",
       security=SECURITY, responses=_responses(403))
async def update_subscription(subscription_id: FromPath[uuid.UUID], data: JSONBody[SubscriptionPatch],
                              actor: CurrentActor, kernel: KernelDep, request: Request) -> actions.SubscriptionView:
    return await actions.do_update_subscription(actor, kernel, subscription_id, title=data.title, folder=data.folder,
                                                annotate=data.annotate, source=source_of(request))


@delete("/subscriptions/{subscription_id:uuid}", tags=TAGS, summary="Unsubscribe", security=SECURITY,
        responses=_responses(403))
async def unsubscribe(subscription_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                      request: Request) -> None:
    await actions.do_unsubscribe(actor, kernel, subscription_id, source=source_of(request))


@post("/subscriptions/{subscription_id:uuid}/refresh", tags=TAGS, summary="Fetch the feed now", status_code=200,
      security=SECURITY, responses=_responses(403))
async def refresh(subscription_id: FromPath[uuid.UUID], actor: CurrentActor,
                  kernel: KernelDep) -> actions.SubscriptionView:
    return await actions.do_refresh_subscription(actor, kernel, subscription_id)


# ---------------------------------------------------------------------------------------------
# Items

Cursor = Annotated[str | None, QueryParameter(max_length=40, pattern=actions.CURSOR_PATTERN,
                                              description="next_cursor of the previous page")]
Query = Annotated[str | None, QueryParameter(min_length=1, max_length=500, pattern=actions.TEXT_PATTERN,
                                             description="full-text search (web search syntax: words, \"phrases\", "
                                                         "-excluded, or)")]


@get("/items", tags=TAGS, summary="Items, newest first (filters combine); cursor pagination", security=SECURITY,
     responses=_responses(403, 404))
async def items(actor: CurrentActor, kernel: KernelDep,
                subscription: Annotated[uuid.UUID | None, QueryParameter(description="subscription id")] = None,
                folder: Annotated[uuid.UUID | None, QueryParameter(description="folder id")] = None,
                unread: FromQuery[bool | None] = None, starred: FromQuery[bool | None] = None,
                tag: Annotated[str | None, QueryParameter(min_length=1, max_length=100, pattern=actions.TEXT_PATTERN)] = None,
                q: Query = None, cursor: Cursor = None,
                limit: Annotated[int, QueryParameter(ge=1, le=actions.PAGE_MAX)] = 50) -> actions.ItemPage:
    flt = ItemFilter(subscription_id=subscription, folder_id=folder, unread=unread, starred=starred, tag=tag, q=q)
    return await actions.list_items(actor, kernel, flt, cursor, limit)


@get("/items/{item_id:uuid}", tags=TAGS, summary="One item (HTML sanitised on arrival)", security=SECURITY,
     responses=_responses(403))
async def item(item_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep) -> actions.ItemView:
    return await actions.get_item(actor, kernel, item_id)


@get("/items/{item_id:uuid}/images/{index:int}", tags=TAGS, summary="An image of an item, fetched through the "
     "server (same origin, no referrer, SSRF-guarded); REST items point their images here", security=SECURITY,
     media_type="image/*", responses=_responses(403))
async def item_image(item_id: FromPath[uuid.UUID], index: FromPath[int], actor: CurrentActor,
                     kernel: KernelDep) -> Response[bytes]:
    body, content_type = await actions.fetch_item_image(actor, kernel, item_id, index)
    return Response(body, media_type=content_type, headers={
        "Cache-Control": "private, max-age=86400",
        # The gateway adds nosniff and its page policy; an image needs nothing at all.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@patch("/items/{item_id:uuid}", tags=TAGS, summary="Mark read/unread, star/unstar, tag", security=SECURITY,
       responses=_responses(403))
async def update_item(item_id: FromPath[uuid.UUID], data: JSONBody[ItemPatch], actor: CurrentActor,
                      kernel: KernelDep) -> actions.ItemView:
    return await actions.do_update_item(actor, kernel, item_id, read=data.read, starred=data.starred, tags=data.tags)


@post("/items/mark-read", tags=TAGS, summary="Mark all read (everything, a subscription or a folder) up to an item "
                                             "seq or a time; later arrivals stay unread",
      status_code=200, security=SECURITY, responses=_responses(403, 404))
async def mark_read(data: JSONBody[MarkReadIn], actor: CurrentActor, kernel: KernelDep) -> MarkReadOut:
    flt = ItemFilter(subscription_id=data.subscription_id, folder_id=data.folder_id, older_than=data.older_than)
    return MarkReadOut(await actions.do_mark_all_read(actor, kernel, flt, data.up_to_seq))


# ---------------------------------------------------------------------------------------------
# Folders


@get("/folders", tags=TAGS, summary="Folders with unread counts", security=SECURITY, responses=_responses(403))
async def folders(actor: CurrentActor, kernel: KernelDep) -> list[actions.FolderView]:
    return await actions.list_folders(actor, kernel)


@post("/folders", tags=TAGS, summary="Create a folder", security=SECURITY, responses=_responses(403, 409))
async def create_folder(data: JSONBody[FolderIn], actor: CurrentActor, kernel: KernelDep,
                        request: Request) -> actions.FolderView:
    return await actions.do_create_folder(actor, kernel, data.name, source=source_of(request))


@patch("/folders/{folder_id:uuid}", tags=TAGS, summary="Rename a folder", security=SECURITY,
       responses=_responses(403, 409))
async def rename_folder(folder_id: FromPath[uuid.UUID], data: JSONBody[FolderIn], actor: CurrentActor,
                        kernel: KernelDep, request: Request) -> actions.FolderView:
    return await actions.do_rename_folder(actor, kernel, folder_id, data.name, source=source_of(request))


@delete("/folders/{folder_id:uuid}", tags=TAGS, summary="Delete a folder (its feeds stay, unfiled)",
        security=SECURITY, responses=_responses(403))
async def delete_folder(folder_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                        request: Request) -> None:
    await actions.do_delete_folder(actor, kernel, folder_id, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# Filter rules


@get("/rules", tags=TAGS, summary="Your keyword filter rules", security=SECURITY, responses=_responses(403))
async def rules(actor: CurrentActor, kernel: KernelDep) -> list[actions.RuleView]:
    return await actions.list_rules(actor, kernel)


@post("/rules", tags=TAGS, summary="Add a rule: new items matching the keyword are marked read, starred or tagged",
      security=SECURITY, responses=_responses(403, 404, 409))
async def create_rule(data: JSONBody[RuleIn], actor: CurrentActor, kernel: KernelDep,
                      request: Request) -> actions.RuleView:
    return await actions.do_create_rule(actor, kernel, field=data.field, keyword=data.keyword, action=data.action,
                                        subscription_id=data.subscription_id, source=source_of(request))


@delete("/rules/{rule_id:uuid}", tags=TAGS, summary="Delete a rule", security=SECURITY, responses=_responses(403))
async def delete_rule(rule_id: FromPath[uuid.UUID], actor: CurrentActor, kernel: KernelDep,
                      request: Request) -> None:
    await actions.do_delete_rule(actor, kernel, rule_id, source=source_of(request))


# ---------------------------------------------------------------------------------------------
# OPML and preferences


@post("/opml", tags=TAGS, summary="Import an OPML file sent as the raw request body (text/x-opml or "
                                  "application/xml); its feeds are fetched by the next poll", status_code=200,
      security=SECURITY, responses=_responses(400, 403, 413))
async def import_opml(actor: CurrentActor, kernel: KernelDep, request: Request) -> opml.ImportResult:
    # The body is read raw: Litestar would decode a typed ``bytes`` body as JSON.
    limit = feeds_settings(kernel).opml_max_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "payload-too-large", f"The OPML file is larger than {limit:,} bytes")
    if not body.strip():
        return opml.ImportResult(0, 0, [])  # an empty upload imports nothing
    return await opml.do_import_opml(actor, kernel, bytes(body), source=source_of(request))


@get("/opml", tags=TAGS, summary="Export your subscriptions as OPML 2.0", security=SECURITY,
     media_type="text/x-opml", responses=_responses(403))
async def export_opml(actor: CurrentActor, kernel: KernelDep) -> Response[bytes]:
    body = await opml.export_opml(actor, kernel)
    return Response(body, media_type="text/x-opml; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="sygmax-feeds.opml"'})


@get("/preferences", tags=TAGS, summary="Your digest and Google Reader API settings", security=SECURITY,
     responses=_responses(403))
async def preferences(actor: CurrentActor, kernel: KernelDep) -> actions.PreferenceView:
    return await actions.get_preferences(actor, kernel)


@put("/preferences", tags=TAGS, summary="Digest (off/daily/weekly); the API password Google Reader clients log in "
                                        "with", security=SECURITY, responses=_responses(403))
async def set_preferences(data: JSONBody[PreferencesIn], actor: CurrentActor, kernel: KernelDep,
                          request: Request) -> actions.PreferenceView:
    return await actions.do_set_preferences(actor, kernel, digest=data.digest, api_password=data.api_password,
                                            clear_api_password=data.clear_api_password, source=source_of(request))


HANDLERS = [subscribe, subscriptions, subscription, update_subscription, unsubscribe, refresh, items, item, item_image,
            update_item, mark_read, folders, create_folder, rename_folder, delete_folder, rules, create_rule,
            delete_rule, import_opml, export_opml, preferences, set_preferences]

__all__ = ["HANDLERS"]
