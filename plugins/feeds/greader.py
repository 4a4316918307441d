"""The Google Reader API, as FreshRSS and Miniflux serve it, for existing mobile/desktop readers
(NetNewsWire, Reeder, ReadKit, FeedMe, FocusReader, Fluent Reader, ...).

Base URL for clients: ``https://<host>/api/v1/feeds/greader`` (the kernel mounts plugin routes
under ``/api/v1/<plugin>``; clients append ``/accounts/ClientLogin`` and ``/reader/api/0/...``).

Login: ``POST /accounts/ClientLogin`` with ``Email`` and ``Passwd``, where ``Passwd`` is the
user's feeds API password (set in the feeds preferences; Sygmax never accepts the account
password here, as FreshRSS and Miniflux do not) or a personal API token of that user. The
answer's ``Auth=`` value is sent back as ``Authorization: GoogleLogin auth=<value>``; it is
random, stored hashed, limited to the feeds permissions and ends when the API password
changes. Failed logins count against the kernel's brute-force lockout like any login.

Ids: streams are ``feed/<subscription id>``, ``user/-/label/<folder or tag>`` and
``user/-/state/com.google/{reading-list,starred,read}``; items are the item's 63-bit ``seq``,
in the long form ``tag:google.com,2005:reader/item/<16 hex digits>`` or as a decimal number.

The ``T`` (action token) parameter of writes is accepted and not required: the writes need
the ``Authorization`` header, which a browser never adds to a cross-site request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, FromQuery, QueryParameter

from plugins.feeds import access, actions
from plugins.feeds.actions import ItemFilter
from plugins.feeds.settings import feeds_settings
from sygmax.auth import lockout
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import Actor, authenticate
from sygmax.errors import Problem, problem_responses
from sygmax.kernel import KernelDep

BASE = "/greader"
API = BASE + "/reader/api/0"
SECURITY = [{"bearer": []}]
TAGS = ["feeds: Google Reader API"]
STATE = "user/-/state/com.google/"
READING_LIST = STATE + "reading-list"
STARRED = STATE + "starred"
READ = STATE + "read"
LABEL = "user/-/label/"
ITEM_PREFIX = "tag:google.com,2005:reader/item/"
MAX_IDS = 1000
SESSION_PREFIX = "sgr_"
_USER_PREFIX = re.compile(r"^user/[^/]+/")
_MAX_SEQ = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAX_UNIX = 253402300799  # 9999-12-31



def _responses(*codes: int) -> dict[int, ResponseSpec]:
    text = {401: "Wrong e-mail address or password", 403: "Not allowed", 404: "No such stream, feed or folder",
            409: "Conflicts with the current state",
            429: "Too many failed logins"}
    return problem_responses(text, *codes)


Many = str | list[str] | None
FormText = Annotated[str, msgspec.Meta(max_length=4096)]


# Forms as clients send them. Unknown fields are allowed on purpose: clients add their own
# (client=, accountType=, service=, source=, T=), and refusing them would lock those readers out.
class LoginForm(msgspec.Struct):
    Email: Annotated[str, msgspec.Meta(min_length=1, max_length=254, pattern=actions.TEXT_PATTERN)]
    Passwd: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    output: FromQuery[str | None] = None


# Form encoding has no null and drops empty lists: optional fields default to "" or None and
# an absent list means "none" (an edit of no items changes nothing).
class EditTagForm(msgspec.Struct):
    i: Many = None
    a: Many = None
    r: Many = None
    T: FormText | None = None


class ItemsContentsForm(msgspec.Struct):
    i: Many = None
    output: FormText | None = None
    T: FormText | None = None


class MarkAllForm(msgspec.Struct):
    s: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    ts: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{0,20}$")] = ""
    T: FormText | None = None


class SubscriptionEditForm(msgspec.Struct):
    s: Many = None
    ac: Literal["subscribe", "unsubscribe", "edit"] = "edit"
    t: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    a: Many = None
    r: Many = None
    T: FormText | None = None


class QuickAddForm(msgspec.Struct):
    quickadd: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    T: FormText | None = None


def _many(value: Many) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _text(body: str) -> Response[str]:
    return Response(body, media_type="text/plain; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# Authentication


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def greader_actor(kernel, request: Request) -> Actor:
    """``Authorization: GoogleLogin auth=...`` (a ClientLogin session), or a Bearer personal token."""
    header = request.headers.get("authorization") or ""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "googlelogin":
        token = rest.strip()
        if token.lower().startswith("auth="):
            token = token[5:]
        if token.startswith("syg_"):
            return await authenticate(kernel, f"Bearer {token}")
        if not token.startswith(SESSION_PREFIX) or len(token) > 200:
            raise Problem(401, "invalid-token", "The GoogleLogin auth token is malformed")
        row = await kernel.db.pool.fetchrow(
            """SELECT u.id, u.email, u.display_name, u.is_admin FROM feeds_greader_session g
               JOIN sygmax_user u ON u.id = g.user_id
               WHERE g.token_hash = $1 AND g.expires_at > now() AND u.is_active""", _hash(token))
        if row is None:
            raise Problem(401, "invalid-token", "The GoogleLogin auth token is unknown or expired")
        return Actor(row["id"], row["email"], row["display_name"], row["is_admin"], scopes=frozenset({"feeds.*"}),
                     via="greader")
    return await authenticate(kernel, header or None)


@post(BASE + "/accounts/ClientLogin", tags=TAGS, summary="Google Reader login: Email + API password (or token)",
      status_code=200, responses=_responses(401, 429))
async def client_login(data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                       kernel: KernelDep, request: Request) -> Response[Any]:
    source = source_of(request)
    email = data.Email.strip().lower()
    await lockout.check(kernel, email, source.ip, source.request_id)
    user = await kernel.db.pool.fetchrow(
        """SELECT u.id, u.is_active, p.api_password FROM sygmax_user u
           LEFT JOIN feeds_preference p ON p.user_id = u.id WHERE lower(u.email) = $1""", email)
    ok = False
    if data.Passwd.startswith("syg_"):
        try:
            actor = await authenticate(kernel, f"Bearer {data.Passwd}")
            ok = user is not None and actor.user_id == user["id"] and actor.has_scope(access.READ)
        except Problem:
            ok = False
    else:
        from sygmax.auth.passwords import verify_password

        ok, _ = await verify_password(kernel.settings.auth, user["api_password"] if user else None, data.Passwd)
    if not ok or not user["is_active"]:
        await lockout.record_failure(kernel, email, source.ip)
        raise Problem(401, "invalid-credentials", "Wrong e-mail address or API password (set one in the feeds "
                                                  "preferences, or use a personal API token)")
    await lockout.clear_account(kernel, email)
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    await kernel.db.pool.execute(
        "INSERT INTO feeds_greader_session (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        _hash(token), user["id"],
        datetime.now(timezone.utc) + timedelta(days=feeds_settings(kernel).greader_session_days))
    if (data.output or "").lower() == "json":
        return Response({"SID": token, "LSID": token, "Auth": token})
    return _text(f"SID={token}\nLSID={token}\nAuth={token}\n")


@get(API + "/token", tags=TAGS, summary="Action token (T) for writes", security=SECURITY, media_type="text/plain")
async def token(kernel: KernelDep, request: Request) -> Response[str]:
    actor = await greader_actor(kernel, request)
    return _text(hashlib.sha256(b"sygmax-greader-T\x00" + actor.user_id.bytes).hexdigest()[:57])


@get(API + "/user-info", tags=TAGS, summary="Who is logged in", security=SECURITY)
async def user_info(kernel: KernelDep, request: Request) -> dict[str, str]:
    actor = await greader_actor(kernel, request)
    return {"userId": str(actor.user_id), "userName": actor.display_name, "userProfileId": str(actor.user_id),
            "userEmail": actor.email}


# ---------------------------------------------------------------------------------------------
# Ids


def item_seq(value: str) -> int | None:
    """An item id in any of the forms clients send: long (tag:...:item/<hex>), bare 16-digit hex,
    or decimal (signed 64-bit, as Google's were). None for anything else: like an id of an item
    the caller cannot see, it selects nothing (the form fields are lists the schema cannot
    constrain item by item, so a malformed id is not refused)."""
    value = value.strip()
    try:
        if value.startswith(ITEM_PREFIX):
            number = int(value[len(ITEM_PREFIX):], 16)
        elif len(value) == 16 and not value.lstrip("-").isdigit():
            number = int(value, 16)
        else:
            number = int(value, 10)
    except ValueError:
        return None
    if number < 0:
        number &= _MAX_SEQ  # the signed 64-bit form of a long id
    return number if 0 < number <= _MAX_SEQ else None


def _seqs(values: list[str]) -> list[int]:
    return [seq for seq in map(item_seq, values) if seq is not None]


def long_id(seq: int) -> str:
    return f"{ITEM_PREFIX}{seq:016x}"


def _stream(value: str) -> str:
    value = value.strip().lstrip("/")
    return _USER_PREFIX.sub("user/-/", value) if value.startswith("user/") else value


async def _filter_for(connection, actor: Actor, stream: str) -> ItemFilter:
    stream = _stream(stream)
    if _CONTROL.search(stream):
        raise Problem(404, "not-found", "No such stream")
    if stream in ("", READING_LIST):
        return ItemFilter()
    if stream == STARRED:
        return ItemFilter(starred=True)
    if stream == READ:
        return ItemFilter(unread=False)
    if stream.startswith("feed/"):
        try:
            return ItemFilter(subscription_id=uuid.UUID(stream[5:]))
        except ValueError:
            raise Problem(404, "not-found", "No such stream") from None
    if stream.startswith(LABEL):
        name = stream[len(LABEL):]
        folder = await connection.fetchval(
            "SELECT id FROM feeds_folder WHERE user_id = $1 AND lower(name) = lower($2)", actor.user_id, name)
        if folder is None:
            for row in await access.visible_subscriptions(connection, actor):
                if row["folder"] is not None and row["folder"].lower() == name.lower():
                    folder = row["folder_id"]
                    break
        return ItemFilter(folder_id=folder) if folder is not None else ItemFilter(tag=name)
    raise Problem(404, "not-found", "No such stream")


def _apply_params(flt: ItemFilter, xt: list[str], it: list[str], ot: str | None, nt: str | None,
                  r: str | None) -> ItemFilter:
    for excluded in map(_stream, xt):
        if excluded == READ:
            flt.unread = True
        elif excluded == STARRED:
            flt.starred = False
    for included in map(_stream, it):
        if included == STARRED:
            flt.starred = True
        elif included == READ:
            flt.unread = False
    for value, attribute in ((ot, "newer_than"), (nt, "older_than")):
        if value:
            seconds = min(max(int(value), 0), _MAX_UNIX)  # the schema allows digits only
            setattr(flt, attribute, datetime.fromtimestamp(seconds, tz=timezone.utc))
    flt.oldest_first = r == "o"
    return flt


# ---------------------------------------------------------------------------------------------
# Subscriptions and tags


def _sub_json(sub: actions.SubscriptionView) -> dict:
    categories = [{"id": LABEL + sub.folder, "label": sub.folder}] if sub.folder else []
    return {"id": f"feed/{sub.id}", "title": sub.title, "categories": categories, "url": sub.url,
            "htmlUrl": sub.site_url or sub.url, "iconUrl": ""}


@get(API + "/subscription/list", tags=TAGS, summary="Subscriptions with their folders", security=SECURITY)
async def subscription_list(kernel: KernelDep, request: Request, output: FromQuery[str | None] = None) -> dict[str, list]:
    actor = await greader_actor(kernel, request)
    return {"subscriptions": [_sub_json(sub) for sub in await actions.list_subscriptions(actor, kernel)]}


def _label(value: str) -> str | None:
    value = _stream(value)
    return value[len(LABEL):] if value.startswith(LABEL) else None


@post(API + "/subscription/edit", tags=TAGS, summary="Subscribe, unsubscribe, rename, move between folders",
      status_code=200, security=SECURITY, media_type="text/plain", responses=_responses(403, 404, 409))
async def subscription_edit(data: Annotated[SubscriptionEditForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                            kernel: KernelDep, request: Request) -> Response[str]:
    actor = await greader_actor(kernel, request)
    source = source_of(request)
    streams = _many(data.s)
    if not streams:
        raise Problem(404, "not-found", "No feed stream (s=feed/...) to edit")
    folder = next((label for label in map(_label, _many(data.a)) if label and _valid_name(label)), None)
    title = data.t.strip() if data.t and _valid_name(data.t) else None
    for stream in streams:
        stream = _stream(stream)
        if not stream.startswith("feed/"):
            raise Problem(404, "not-found", "No such feed stream (feed/...)")
        target = stream[5:]
        if data.ac == "subscribe":
            try:
                await actions.check_subscribe(actor, kernel, target, folder=folder, title=title, source=source)
            except Problem as exc:
                if exc.slug != "already-subscribed":
                    raise
            continue
        try:
            subscription_id = uuid.UUID(target)
        except ValueError:
            subscription_id = await _subscription_by_url(kernel, actor, target)
        if data.ac == "unsubscribe":
            await actions.do_unsubscribe(actor, kernel, subscription_id, source=source)
        elif data.ac == "edit":
            removed = [label for label in map(_label, _many(data.r)) if label]
            if folder is None and removed:
                # Moving out of a folder to none: the API has no "no folder", so clear it.
                async with kernel.db.pool.acquire() as connection:
                    await access.access_subscription(connection, actor, subscription_id, access.MANAGE)
                    await connection.execute("UPDATE feeds_subscription SET folder_id = NULL WHERE id = $1",
                                             subscription_id)
            await actions.do_update_subscription(actor, kernel, subscription_id, title=title, folder=folder,
                                                 source=source)
    return _text("OK")


def _valid_name(value: str) -> bool:
    """Folder names and titles sent by clients: kept when Sygmax can keep them, else ignored."""
    return bool(re.match(actions.NAME_PATTERN, value)) and len(value.strip()) <= actions.MAX_NAME


async def _subscription_by_url(kernel, actor: Actor, url: str) -> uuid.UUID:
    for sub in await actions.list_subscriptions(actor, kernel):
        if sub.url == url:
            return sub.id
    raise Problem(404, "not-found", "No such subscription")


@post(API + "/subscription/quickadd", tags=TAGS, summary="Subscribe to a URL (a site's feed is discovered)",
      status_code=200, security=SECURITY, responses=_responses(403, 404, 409))
async def quickadd(data: Annotated[QuickAddForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                   kernel: KernelDep, request: Request) -> dict[str, Any]:
    actor = await greader_actor(kernel, request)
    url = data.quickadd.strip()
    if url.startswith("feed/"):
        url = url[5:]
    try:
        sub = await actions.check_subscribe(actor, kernel, url, source=source_of(request))
    except Problem as exc:
        if exc.slug != "already-subscribed":
            raise
        sub = await actions.get_subscription(actor, kernel, await _subscription_by_url(kernel, actor, url))
    return {"numResults": 1, "query": url, "streamId": f"feed/{sub.id}", "streamName": sub.title}


@get(API + "/tag/list", tags=TAGS, summary="Folders and states", security=SECURITY)
async def tag_list(kernel: KernelDep, request: Request, output: FromQuery[str | None] = None) -> dict[str, list]:
    actor = await greader_actor(kernel, request)
    tags: list[dict] = [{"id": STARRED}]
    names = {folder.name for folder in await actions.list_folders(actor, kernel)}
    tags += [{"id": LABEL + name, "type": "folder"} for name in sorted(names, key=str.lower)]
    rows = await kernel.db.pool.fetch(
        "SELECT DISTINCT unnest(tags) AS tag FROM feeds_item_state WHERE user_id = $1", actor.user_id)
    tags += [{"id": LABEL + row["tag"], "type": "tag"} for row in rows if row["tag"] not in names]
    return {"tags": tags}


@get(API + "/unread-count", tags=TAGS, summary="Unread counts per feed, folder and in all", security=SECURITY)
async def unread_count(kernel: KernelDep, request: Request, output: FromQuery[str | None] = None) -> dict[str, Any]:
    actor = await greader_actor(kernel, request)
    subscriptions = await actions.list_subscriptions(actor, kernel)
    now = str(int(datetime.now(timezone.utc).timestamp() * 1_000_000))
    counts = [{"id": f"feed/{sub.id}", "count": sub.unread_count, "newestItemTimestampUsec": now}
              for sub in subscriptions]
    folders: dict[str, int] = {}
    for sub in subscriptions:
        if sub.folder:
            folders[sub.folder] = folders.get(sub.folder, 0) + sub.unread_count
    counts += [{"id": LABEL + name, "count": count, "newestItemTimestampUsec": now} for name, count in folders.items()]
    total = sum(sub.unread_count for sub in subscriptions)
    counts.append({"id": READING_LIST, "count": total, "newestItemTimestampUsec": now})
    return {"max": max(total, 1000), "unreadcounts": counts}


# ---------------------------------------------------------------------------------------------
# Streams and items

Count = Annotated[int, QueryParameter(name="n", ge=1, le=MAX_IDS, description="items per page")]
Continuation = Annotated[str | None, QueryParameter(name="c", max_length=40, pattern=actions.CURSOR_PATTERN)]
Strings = Annotated[list[str] | None, QueryParameter(max_items=20)]
UnixTime = Annotated[str | None, QueryParameter(max_length=20, pattern=r"^-?[0-9]+$")]
Order = Annotated[str | None, QueryParameter(max_length=2)]


async def _items(kernel, actor: Actor, stream: str, n: int, c: str | None, xt: list[str], it: list[str],
                 ot: str | None, nt: str | None, r: str | None, columns: str | None = None):
    async with kernel.db.pool.acquire() as connection:
        flt = _apply_params(await _filter_for(connection, actor, stream), xt, it, ot, nt, r)
        if flt.folder_id is not None:
            await access.access_folder(connection, actor, flt.folder_id)
        feeds = await actions.scope_feeds(connection, actor, flt)
        subscriptions = {row["id"]: row for row in await access.visible_subscriptions(connection, actor)}
        rows = await actions.query_items(connection, actor.user_id, list(feeds), flt, c, n + 1, columns) if feeds else []
    continuation = actions.encode_cursor(rows[n - 1]["published_at"], rows[n - 1]["seq"]) if len(rows) > n else None
    return rows[:n], feeds, subscriptions, continuation


def _item_json(row, feeds: dict, subscriptions: dict) -> dict:
    sub = subscriptions[feeds[row["feed_id"]]]
    categories = [READING_LIST]
    if row["read"]:
        categories.append(READ)
    if row["starred"]:
        categories.append(STARRED)
    if sub["folder"]:
        categories.append(LABEL + sub["folder"])
    categories += [LABEL + tag for tag in row["tags"]]
    published = int(row["published_at"].timestamp())
    crawled = row["fetched_at"].timestamp()
    link = [{"href": row["url"], "type": "text/html"}] if row["url"] else []
    return {
        "id": long_id(row["seq"]),
        "crawlTimeMsec": str(int(crawled * 1000)),
        "timestampUsec": str(int(row["published_at"].timestamp() * 1_000_000)),
        "published": published,
        "updated": published,
        "title": row["title"],
        "author": row["author"],
        "canonical": link,
        "alternate": link,
        "summary": {"direction": "ltr", "content": row["content_html"]},
        "categories": categories,
        "origin": {"streamId": f"feed/{sub['id']}", "title": sub["custom_title"] or sub["feed_title"] or sub["url"],
                   "htmlUrl": sub["site_url"] or sub["url"]},
    }


@get(API + "/stream/contents/{stream_id:path}", tags=TAGS, summary="Items of a stream, with their content",
     security=SECURITY, responses=_responses(403))
async def stream_contents(stream_id: FromPath[str], kernel: KernelDep, request: Request, n: Count = 20,
                          c: Continuation = None, xt: Strings = None, it: Strings = None, ot: UnixTime = None,
                          nt: UnixTime = None, r: Order = None, output: FromQuery[str | None] = None) -> dict[str, Any]:
    actor = await greader_actor(kernel, request)
    rows, feeds, subscriptions, continuation = await _items(kernel, actor, stream_id, n, c, xt or [], it or [], ot,
                                                            nt, r)
    body: dict[str, Any] = {"direction": "ltr", "id": _stream(stream_id) or READING_LIST,
                            "updated": int(datetime.now(timezone.utc).timestamp()),
                            "items": [_item_json(row, feeds, subscriptions) for row in rows]}
    if continuation:
        body["continuation"] = continuation
    return body


@get(API + "/stream/items/ids", tags=TAGS, summary="Item ids of a stream (what clients sync first)",
     security=SECURITY, responses=_responses(403, 404))
async def stream_item_ids(kernel: KernelDep, request: Request,
                          s: Annotated[str, QueryParameter(min_length=1, max_length=4096)],
                          n: Count = 20, c: Continuation = None, xt: Strings = None, it: Strings = None,
                          ot: UnixTime = None, nt: UnixTime = None, r: Order = None,
                          output: FromQuery[str | None] = None) -> dict[str, Any]:
    actor = await greader_actor(kernel, request)
    rows, _, _, continuation = await _items(kernel, actor, s, n, c, xt or [], it or [], ot, nt, r,
                                            columns="i.id, i.seq, i.feed_id, i.published_at")
    body: dict[str, Any] = {"itemRefs": [
        {"id": str(row["seq"]), "directStreamIds": [],
         "timestampUsec": str(int(row["published_at"].timestamp() * 1_000_000))} for row in rows]}
    if continuation:
        body["continuation"] = continuation
    return body


async def _items_by_ids(kernel, actor: Actor, ids: list[str]) -> dict[str, Any]:
    if len(ids) > MAX_IDS:
        raise Problem(400, "validation-error", f"i: at most {MAX_IDS} items at once", field="i")
    seqs = _seqs(ids)
    async with kernel.db.pool.acquire() as connection:
        feeds = await actions.scope_feeds(connection, actor, ItemFilter())
        subscriptions = {row["id"]: row for row in await access.visible_subscriptions(connection, actor)}
        rows = await actions.query_items(connection, actor.user_id, list(feeds), ItemFilter(item_seqs=seqs), None,
                                         MAX_IDS) if feeds and seqs else []
    return {"direction": "ltr", "id": READING_LIST, "updated": int(datetime.now(timezone.utc).timestamp()),
            "items": [_item_json(row, feeds, subscriptions) for row in rows]}


@post(API + "/stream/items/contents", tags=TAGS, summary="Items by id (form field i, repeated)", status_code=200,
      security=SECURITY, responses=_responses(403))
async def stream_items_contents(data: Annotated[ItemsContentsForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                                kernel: KernelDep, request: Request) -> dict[str, Any]:
    actor = await greader_actor(kernel, request)
    ids = _many(data.i) + request.query_params.getall("i", [])
    return await _items_by_ids(kernel, actor, ids)


@post(API + "/edit-tag", tags=TAGS, summary="Mark items read/unread, star/unstar, tag (a= adds, r= removes)",
      status_code=200, security=SECURITY, media_type="text/plain", responses=_responses(403))
async def edit_tag(data: Annotated[EditTagForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                   kernel: KernelDep, request: Request) -> Response[str]:
    actor = await greader_actor(kernel, request)
    ids = _many(data.i)
    if len(ids) > MAX_IDS:
        raise Problem(400, "validation-error", f"i: at most {MAX_IDS} items at once", field="i")
    seqs = _seqs(ids)
    added, removed = [_stream(v) for v in _many(data.a)], [_stream(v) for v in _many(data.r)]
    read = True if READ in added else (False if READ in removed else None)
    starred = True if STARRED in added else (False if STARRED in removed else None)
    add_tags = [v[len(LABEL):] for v in added if v.startswith(LABEL)]
    remove_tags = [v[len(LABEL):] for v in removed if v.startswith(LABEL)]
    async with kernel.db.pool.acquire() as connection:
        feeds = await actions.scope_feeds(connection, actor, ItemFilter())
        rows = await connection.fetch(
            """SELECT i.id, coalesce(st.tags, '{}') AS tags FROM feeds_item i
               LEFT JOIN feeds_item_state st ON st.user_id = $3 AND st.item_id = i.id
               WHERE i.seq = ANY($1::bigint[]) AND i.feed_id = ANY($2::uuid[])""", seqs, list(feeds), actor.user_id)
        ids_found = [row["id"] for row in rows]
        if read is not None or starred is not None:
            await actions.set_item_states(connection, actor.user_id, ids_found, read=read, starred=starred)
        for row in rows if add_tags or remove_tags else ():
            tags = [tag for tag in row["tags"] if tag not in remove_tags]
            tags += [tag for tag in add_tags if tag not in tags]
            await actions.set_item_states(connection, actor.user_id, [row["id"]], tags=actions._clean_tags(tags))
    return _text("OK")


@post(API + "/mark-all-as-read", tags=TAGS, summary="Mark a stream read up to ts (microseconds)", status_code=200,
      security=SECURITY, media_type="text/plain", responses=_responses(403, 404))
async def mark_all_as_read(data: Annotated[MarkAllForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
                           kernel: KernelDep, request: Request) -> Response[str]:
    actor = await greader_actor(kernel, request)
    async with kernel.db.pool.acquire() as connection:
        flt = await _filter_for(connection, actor, data.s)
    if data.ts:
        stamp = int(data.ts)
        # Clients send microseconds (Google), some seconds or milliseconds: tell them apart by size.
        seconds = stamp / 1_000_000 if stamp > 10**14 else stamp / 1000 if stamp > 10**11 else stamp
        flt.older_than = datetime.fromtimestamp(min(seconds, _MAX_UNIX), tz=timezone.utc) + timedelta(microseconds=1)
    await actions.do_mark_all_read(actor, kernel, flt)
    return _text("OK")


HANDLERS = [client_login, token, user_info, subscription_list, subscription_edit, quickadd, tag_list, unread_count,
            stream_contents, stream_item_ids, stream_items_contents, edit_tag, mark_all_as_read]
