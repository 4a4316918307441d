"""Subscriptions and items over REST against a real local feed server: every format, polling
across changes (no duplicates, 304 costs no parsing), errors shown on the subscription,
redirects, hostile content, SSRF refusals, access between users, and bad input."""

from __future__ import annotations

import uuid

import pytest

from plugins.feeds import parser
from tests.conftest import assert_problem
from tests.feeds.support import FIXTURES, rss

F = "/api/v1/feeds"


async def subscribe(api, user, url: str, **extra) -> dict:
    return await api.ok(user, "POST", F + "/subscriptions", {"url": url, **extra})


async def items_of(api, user, **params) -> list[dict]:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return (await api.ok(user, "GET", f"{F}/items?{query}"))["items"]


async def feed_rows(db) -> list:
    return await db.fetch("SELECT * FROM feeds_feed ORDER BY created_at")


@pytest.mark.parametrize("fixture, title, count", [
    ("rss2.xml", "Example News & Views", 3),
    ("rss1.xml", "RDF Site Summary Example", 2),
    ("rss091.xml", "Old School Weblog", 2),
    ("atom.xml", "Atom Example Blog", 2),
    ("feed.json", "JSON Feed Example", 2),
])
async def test_subscribe_to_every_format(api, example_user, feed_server, fixture, title, count):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url(f"/f/{fixture}"), folder="Reading")
    assert sub["title"] == title and sub["folder"] == "Reading" and sub["unread_count"] == count
    assert sub["last_error"] is None and sub["error_count"] == 0
    items = await items_of(api, alice, subscription=sub["id"])
    assert len(items) == count and all(not item["read"] and not item["starred"] for item in items)
    assert all(item["subscription_id"] == sub["id"] for item in items)
    dates = [item["published_at"] for item in items]
    assert dates == sorted(dates, reverse=True)


async def test_discovery_from_a_site_page(api, example_user, feed_server):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url("/f/site.html"))
    assert sub["url"] == feed_server.url("/f/atom.xml") and sub["title"] == "Atom Example Blog"
    page = await subscribe(api, alice, feed_server.url("/f/nofeed.html"))
    assert page["error_count"] == 1 and "advertises no feed" in page["last_error"]


async def test_polls_add_new_items_once_and_304_costs_no_parsing(api, example_user, feed_server, db):
    alice = await example_user("alice")
    feed_server.documents["news"] = rss([("a", "First"), ("b", "Second")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/news"))
    refresh = f"{F}/subscriptions/{sub['id']}/refresh"

    calls = dict(parser.PARSE_CALLS)
    unchanged = await api.ok(alice, "POST", refresh, status=200)
    assert parser.PARSE_CALLS == calls, "a 304 must not reach the parser"
    assert feed_server.requests[-1][1].get("if-none-match")
    assert unchanged["unread_count"] == 2 and unchanged["last_success_at"] is not None

    feed_server.documents["news"] = rss([("c", "Third"), ("a", "First"), ("b", "Second")])
    await api.ok(alice, "POST", refresh, status=200)
    await api.ok(alice, "POST", refresh, status=200)
    # The same text under a new guid is the same item (content hash), a changed title of a known guid too.
    feed_server.documents["news"] = rss([("c", "Third, edited"), ("a2", "First", "a"), ("a", "First"), ("b", "Second")])
    await api.ok(alice, "POST", refresh, status=200)
    titles = sorted(item["title"] for item in await items_of(api, alice))
    assert titles == ["First", "Second", "Third"]
    assert await db.fetchval("SELECT count(*) FROM feeds_item") == 3


async def test_errors_are_shown_on_the_subscription_with_backoff(api, example_user, feed_server, db):
    alice = await example_user("alice")
    feed_server.documents["flaky"] = rss([("a", "First")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/flaky"))
    refresh = f"{F}/subscriptions/{sub['id']}/refresh"
    feed_server.documents["flaky"] = (FIXTURES / "malformed.xml").read_bytes()
    failed = await api.ok(alice, "POST", refresh, status=200)
    assert failed["error_count"] == 1 and "not a valid RSS/Atom feed" in failed["last_error"]
    first_wait = await db.fetchval("SELECT next_poll_at - last_polled_at FROM feeds_feed")
    failed = await api.ok(alice, "POST", refresh, status=200)
    assert failed["error_count"] == 2
    second_wait = await db.fetchval("SELECT next_poll_at - last_polled_at FROM feeds_feed")
    assert second_wait == 2 * first_wait  # exponential backoff
    assert (await items_of(api, alice))[0]["title"] == "First"  # what was read before stays

    feed_server.documents["flaky"] = rss([("a", "First")])
    healed = await api.ok(alice, "POST", refresh, status=200)
    assert healed["error_count"] == 0 and healed["last_error"] is None


@pytest.mark.parametrize("path, message", [
    ("/slow", "timed out"), ("/huge", "larger than"), ("/status/503", "HTTP 503"), ("/f/malformed.xml", "mismatched tag"),
])
async def test_unreadable_feeds_are_subscribed_with_their_error(api, example_user, feed_server, db, path, message):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url(path))
    assert sub["error_count"] == 1 and message in sub["last_error"] and sub["unread_count"] == 0
    # Retried later, backed off: not due right away.
    assert await db.fetchval("SELECT next_poll_at > now() + interval '30 seconds' FROM feeds_feed")
    assert (await api.ok(alice, "GET", F + "/subscriptions"))[0]["last_error"] == sub["last_error"]


async def test_a_feed_that_breaks_later_keeps_its_error(api, example_user, feed_server):
    alice = await example_user("alice")
    feed_server.documents["x"] = rss([("a", "A")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/x"))
    del feed_server.documents["x"]
    listed = await api.ok(alice, "POST", f"{F}/subscriptions/{sub['id']}/refresh", status=200)
    assert listed["last_error"] == "HTTP 404 Not Found"
    assert (await api.ok(alice, "GET", F + "/subscriptions"))[0]["last_error"] == "HTTP 404 Not Found"


async def test_permanent_redirect_updates_the_url(api, example_user, feed_server, db):
    alice = await example_user("alice")
    feed_server.documents["old"] = rss([("a", "A")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/old"))
    feed_server.documents["new"] = feed_server.documents.pop("old")
    old_url, new_url = feed_server.url("/dyn/old"), feed_server.url("/dyn/new")
    await db.execute("UPDATE feeds_feed SET url = $1", feed_server.url(f"/redirect/302?to={new_url}"))
    temporary = await api.ok(alice, "POST", f"{F}/subscriptions/{sub['id']}/refresh", status=200)
    assert temporary["url"].startswith(feed_server.url("/redirect/302"))
    await db.execute("UPDATE feeds_feed SET url = $1", feed_server.url(f"/redirect/301?to={new_url}"))
    moved = await api.ok(alice, "POST", f"{F}/subscriptions/{sub['id']}/refresh", status=200)
    assert moved["url"] == new_url and moved["error_count"] == 0
    assert old_url != new_url


async def test_scripts_never_reach_the_reader(api, example_user, feed_server):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url("/f/xss.xml"))
    assert "<" not in sub["title"]
    response = await api.call(alice, "GET", f"{F}/items?subscription={sub['id']}")
    text = response.text
    for forbidden in ("<script", "onerror", "onclick", "javascript:", "<iframe"):
        assert forbidden not in text
    item = (await items_of(api, alice))[0]
    assert item["title"] in ("Click me", "Data URL")


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "localhost"])
async def test_ssrf_refused_when_private_addresses_are_not_allowed(feeds_api, example_user, feed_server, db, host):
    alice = await example_user("alice")
    async with feeds_api(SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES="false") as guarded:
        body = await guarded.problem(alice, "POST", F + "/subscriptions", 403, "url-not-allowed",
                                     {"url": f"http://{host}:{feed_server.port}/f/rss2.xml"})
        assert "not allowed" in body["detail"]
        await guarded.problem(alice, "POST", F + "/subscriptions", 400, "validation-error",
                              {"url": "file:///etc/passwd"})
    assert feed_server.requests == [] and await feed_rows(db) == []


async def test_ssrf_through_a_redirect_is_refused(feeds_api, example_user, feed_server, db):
    alice = await example_user("alice")
    inner = feed_server.url("/f/rss2.xml")
    async with feeds_api(SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES="false",
                         SYGMAX_FEEDS_PRIVATE_HOSTS="localhost") as guarded:
        await guarded.problem(alice, "POST", F + "/subscriptions", 403, "url-not-allowed",
                              {"url": feed_server.url(f"/redirect/302?to={inner}", host="localhost")})
    assert feed_server.hits("/f/rss2.xml") == 0 and await feed_rows(db) == []


async def test_another_user_cannot_see_your_subscription_or_items(api, example_user, feed_server, db):
    alice, mallory = await example_user("alice"), await example_user("mallory")
    sub = await subscribe(api, alice, feed_server.url("/f/rss2.xml"))
    item = (await items_of(api, alice))[0]
    assert await api.ok(mallory, "GET", F + "/subscriptions") == []
    assert await items_of(api, mallory) == []
    for method, url, body in [("GET", f"{F}/subscriptions/{sub['id']}", None),
                              ("PATCH", f"{F}/subscriptions/{sub['id']}", {"title": "mine"}),
                              ("DELETE", f"{F}/subscriptions/{sub['id']}", None),
                              ("POST", f"{F}/subscriptions/{sub['id']}/refresh", None),
                              ("GET", f"{F}/items/{item['id']}", None),
                              ("PATCH", f"{F}/items/{item['id']}", {"starred": True}),
                              ("GET", f"{F}/items?subscription={sub['id']}", None)]:
        await api.problem(mallory, method, url, 404, "not-found", body)
    # Mallory subscribing to the same feed shares its fetch state, never alice's reading state.
    await api.ok(alice, "PATCH", f"{F}/items/{item['id']}", {"read": True, "starred": True})
    shared = await subscribe(api, mallory, feed_server.url("/f/rss2.xml"))
    assert shared["feed_id"] == sub["feed_id"] and shared["unread_count"] == 3
    mine = await api.ok(mallory, "GET", f"{F}/items/{item['id']}")
    assert not mine["read"] and not mine["starred"]
    assert await db.fetchval("SELECT count(*) FROM feeds_feed") == 1


async def test_read_star_tag_and_filters(api, example_user, feed_server):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url("/f/rss2.xml"))
    other = await subscribe(api, alice, feed_server.url("/f/atom.xml"), folder="Tech")
    items = await items_of(api, alice, subscription=sub["id"])
    first = items[0]
    updated = await api.ok(alice, "PATCH", f"{F}/items/{first['id']}", {"read": True, "starred": True,
                                                                         "tags": ["energy", "later"]})
    assert updated["read"] and updated["starred"] and updated["tags"] == ["energy", "later"]
    assert [i["id"] for i in await items_of(api, alice, starred="true")] == [first["id"]]
    assert len(await items_of(api, alice, unread="true")) == 4
    assert [i["id"] for i in await items_of(api, alice, tag="energy")] == [first["id"]]
    assert {i["subscription_id"] for i in await items_of(api, alice, folder=other["folder_id"])} == {other["id"]}
    again = await api.ok(alice, "PATCH", f"{F}/items/{first['id']}", {"read": False})
    assert not again["read"] and again["starred"] and again["tags"] == ["energy", "later"]
    subs = {s["id"]: s for s in await api.ok(alice, "GET", F + "/subscriptions")}
    assert subs[sub["id"]]["unread_count"] == 3 and subs[other["id"]]["unread_count"] == 2


async def test_full_text_search_is_language_aware(api, example_user, feed_server):
    alice = await example_user("alice")
    await subscribe(api, alice, feed_server.url("/f/rss2.xml"))
    await subscribe(api, alice, feed_server.url("/f/rss1.xml"))
    # English stemming: "researcher" finds "Researchers", "libraries" finds "library".
    assert [i["title"] for i in await items_of(api, alice, q="researcher")] == ["Solar panels reach record efficiency"]
    assert [i["title"] for i in await items_of(api, alice, q="libraries")] == ["City opens new library"]
    # German stemming on the German feed: "Baum" is not "Bäume", but "wachsen" finds "wächst"-free text.
    assert [i["title"] for i in await items_of(api, alice, q="Wald")] == ["Erster Artikel über Bäume"]
    assert await items_of(api, alice, q='"record efficiency" -solar') == []
    assert await items_of(api, alice, q="nothingmatchesthis") == []


async def test_mark_all_read_keeps_later_arrivals_unread(api, example_user, feed_server):
    alice = await example_user("alice")
    feed_server.documents["n"] = rss([("a", "A"), ("b", "B")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/n"))
    seen = await items_of(api, alice)
    newest_seen = max(item["seq"] for item in seen)
    await api.ok(alice, "PATCH", f"{F}/items/{seen[0]['id']}", {"read": False})
    feed_server.documents["n"] = rss([("c", "C"), ("a", "A"), ("b", "B")])
    await api.ok(alice, "POST", f"{F}/subscriptions/{sub['id']}/refresh", status=200)
    marked = await api.ok(alice, "POST", F + "/items/mark-read", {"subscription_id": sub["id"],
                                                                    "up_to_seq": newest_seen}, status=200)
    assert marked == {"feeds": 1}
    assert [item["title"] for item in await items_of(api, alice, unread="true")] == ["C"]
    await api.ok(alice, "POST", F + "/items/mark-read", {}, status=200)
    assert await items_of(api, alice, unread="true") == []


async def test_cursor_pagination(api, example_user, feed_server):
    alice = await example_user("alice")
    feed_server.documents["many"] = rss([(f"g{n}", f"Item {n}") for n in range(7)])
    await subscribe(api, alice, feed_server.url("/dyn/many"))
    seen, cursor = [], None
    while True:
        page = await api.ok(alice, "GET", f"{F}/items?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Item {n}" for n in range(7)]
    await api.problem(alice, "GET", F + "/items?cursor=bm90LWEtY3Vyc29y", 400, "validation-error")


async def test_folders_rename_delete_and_patch(api, example_user, feed_server, db):
    alice, bob = await example_user("alice"), await example_user("bob")
    folder = await api.ok(alice, "POST", F + "/folders", {"name": "News"})
    await api.problem(alice, "POST", F + "/folders", 409, "folder-exists", {"name": "news"})
    sub = await subscribe(api, alice, feed_server.url("/f/rss2.xml"), folder="news")
    assert sub["folder_id"] == folder["id"]
    listed = await api.ok(alice, "GET", F + "/folders")
    assert listed == [{"id": folder["id"], "name": "News", "workspace_id": None, "unread_count": 3}]
    renamed = await api.ok(alice, "PATCH", f"{F}/folders/{folder['id']}", {"name": "Daily"})
    assert renamed["name"] == "Daily"
    await api.problem(bob, "PATCH", f"{F}/folders/{folder['id']}", 404, "not-found", {"name": "Mine"})
    await api.problem(bob, "DELETE", f"{F}/folders/{folder['id']}", 404, "not-found")
    patched = await api.ok(alice, "PATCH", f"{F}/subscriptions/{sub['id']}", {"title": "My news", "annotate": True,
                                                                               "folder": "Other"})
    assert patched["title"] == "My news" and patched["annotate"] and patched["folder"] == "Other"
    await api.ok(alice, "DELETE", f"{F}/folders/{patched['folder_id']}")
    assert (await api.ok(alice, "GET", f"{F}/subscriptions/{sub['id']}"))["folder_id"] is None
    actions = [row["action"] for row in await db.fetch(
        "SELECT action FROM sygmax_audit WHERE action LIKE 'feeds.%' ORDER BY seq")]
    assert actions == ["feeds.folder.create", "feeds.subscribe", "feeds.folder.rename",
                       "feeds.subscription.update", "feeds.folder.delete"]


async def test_unsubscribe_removes_an_orphan_feed(api, example_user, feed_server, db):
    alice = await example_user("alice")
    sub = await subscribe(api, alice, feed_server.url("/f/rss2.xml"))
    await api.problem(alice, "POST", F + "/subscriptions", 409, "already-subscribed",
                      {"url": feed_server.url("/f/rss2.xml")})
    await api.ok(alice, "DELETE", f"{F}/subscriptions/{sub['id']}")
    assert await feed_rows(db) == [] and await db.fetchval("SELECT count(*) FROM feeds_item") == 0
    await api.problem(alice, "GET", f"{F}/subscriptions/{sub['id']}", 404, "not-found")


async def test_keyword_rules_apply_to_new_items(api, example_user, feed_server):
    alice = await example_user("alice")
    feed_server.documents["r"] = rss([("a", "Intro")])
    sub = await subscribe(api, alice, feed_server.url("/dyn/r"))
    await api.ok(alice, "POST", F + "/rules", {"keyword": "sponsored", "action": "mark_read", "field": "title"})
    await api.ok(alice, "POST", F + "/rules", {"keyword": "rust", "action": "star"})
    tag_rule = await api.ok(alice, "POST", F + "/rules", {"keyword": "release", "action": "tag:releases",
                                                          "subscription_id": sub["id"]})
    assert tag_rule["action"] == "tag:releases"
    for bad in ({"keyword": "x", "action": "tag"}, {"keyword": "x", "action": "tag: "},
                {"keyword": "x", "action": "tag:<b>"}, {"keyword": "x", "action": "delete"},
                {"keyword": " ", "action": "star"}, {"keyword": "x", "action": "star", "tag": "nope"}):
        await api.problem(alice, "POST", F + "/rules", 400, "validation-error", bad)
    await api.problem(alice, "POST", F + "/rules", 404, "not-found",
                      {"keyword": "x", "action": "star", "subscription_id": str(uuid.uuid4())})
    feed_server.documents["r"] = rss([("b", "Sponsored: buy things"), ("c", "Rust release notes"), ("a", "Intro")])
    await api.ok(alice, "POST", f"{F}/subscriptions/{sub['id']}/refresh", status=200)
    by_title = {item["title"]: item for item in await items_of(api, alice)}
    assert by_title["Sponsored: buy things"]["read"] and not by_title["Sponsored: buy things"]["starred"]
    rust = by_title["Rust release notes"]
    assert rust["starred"] and rust["tags"] == ["releases"] and not rust["read"]
    assert not by_title["Intro"]["starred"]
    assert len(await api.ok(alice, "GET", F + "/rules")) == 3
    await api.ok(alice, "DELETE", f"{F}/rules/{tag_rule['id']}")
    bob = await example_user("bob")
    await api.problem(bob, "DELETE", f"{F}/rules/{tag_rule['id']}", 404, "not-found")


@pytest.mark.parametrize("body, field", [
    ({}, None),
    ({"url": ""}, "url"),
    ({"url": 42}, "url"),
    ({"url": "http://x.example/" + "a" * 3000}, "url"),
    ({"url": "https://x.example/feed", "surprise": 1}, None),
    ({"url": "https://x.example/feed", "folder": "<b>"}, "folder"),
    ({"url": "https://x.example/feed", "annotate": "yes"}, "annotate"),
    ({"url": "https://x.example/feed", "workspace_id": "not-a-uuid"}, "workspace_id"),
    ({"url": "file:///etc/passwd"}, "url"),
    ({"url": "https://x.example/a b"}, "url"),
    ({"url": "https://x.example/feed", "title": "\u0000"}, "title"),
])
async def test_bad_subscription_input(api, example_user, db, body, field):
    alice = await example_user("alice")
    problem = await api.problem(alice, "POST", F + "/subscriptions", 400, None, body)
    if field:
        assert problem.get("field") == field, problem
    assert await feed_rows(db) == []


async def test_malformed_json_unknown_ids_and_no_credentials(api, example_user):
    alice = await example_user("alice")
    await api.problem(alice, "POST", F + "/subscriptions", 400, "malformed-body", content=b"{not json")
    await api.problem(alice, "GET", f"{F}/subscriptions/{uuid.uuid4()}", 404, "not-found")
    await api.problem(alice, "GET", f"{F}/items/{uuid.uuid4()}", 404, "not-found")
    await api.problem(alice, "GET", f"{F}/items?subscription={uuid.uuid4()}", 404, "not-found")
    await api.problem(alice, "PATCH", f"{F}/items/{uuid.uuid4()}", 404, "not-found", {"read": True})
    await api.problem(None, "GET", F + "/subscriptions", 401)
    await api.problem(alice, "GET", F + "/items?limit=0", 400)
    await api.problem(alice, "PATCH", f"{F}/items/{uuid.uuid4()}", 400, None, {"read": "yes"})
    await api.problem(alice, "GET", F + "/items?q=%00", 400, "validation-error")


async def test_token_scopes_limit_feeds_access(api, example_user, feed_server, db):
    from sygmax.auth.tokens import issue_token

    alice = await example_user("alice")
    await subscribe(api, alice, feed_server.url("/f/rss2.xml"))
    reader_token = await issue_token(db, alice.id, "reader", scopes=["feeds.read"])
    other_token = await issue_token(db, alice.id, "chat only", scopes=["chats.post"])

    class Token:
        def __init__(self, token):
            self.headers = {"Authorization": f"Bearer {token}"}

    assert len(await api.ok(Token(reader_token), "GET", F + "/subscriptions")) == 1
    await api.problem(Token(reader_token), "POST", F + "/subscriptions", 403, "forbidden",
                      {"url": feed_server.url("/f/atom.xml")})
    assert await api.ok(Token(other_token), "GET", F + "/subscriptions") == []


async def test_workspace_feeds_follow_the_policy(api, example_user, feed_server):
    owner, viewer, stranger = await example_user("owner"), await example_user("viewer"), await example_user("stranger")
    workspace = await api.workspace(owner)
    await api.invite_and_join(owner, workspace, viewer, role="viewer")
    shared = await subscribe(api, owner, feed_server.url("/f/rss2.xml"), workspace_id=workspace, folder="Team")
    assert shared["workspace_id"] == workspace
    seen = await api.ok(viewer, "GET", F + "/subscriptions")
    assert [s["id"] for s in seen] == [shared["id"]] and seen[0]["unread_count"] == 3
    item = (await items_of(api, viewer))[0]
    await api.ok(viewer, "PATCH", f"{F}/items/{item['id']}", {"read": True})  # own reading state
    assert (await api.ok(owner, "GET", f"{F}/items/{item['id']}"))["read"] is False
    await api.problem(viewer, "PATCH", f"{F}/subscriptions/{shared['id']}", 403, "forbidden", {"title": "x"})
    await api.problem(viewer, "POST", F + "/subscriptions", 403, "forbidden",
                      {"url": feed_server.url("/f/atom.xml"), "workspace_id": workspace})
    await api.problem(stranger, "GET", f"{F}/subscriptions/{shared['id']}", 404, "not-found")
    await api.problem(stranger, "POST", F + "/subscriptions", 404, "not-found",
                      {"url": feed_server.url("/f/atom.xml"), "workspace_id": workspace})
    assert await items_of(api, stranger) == []
    # A restricted feed (per-object ACL) disappears for members who are not granted it.
    await api.ok(owner, "PUT", f"/api/v1/workspaces/{workspace}/acl/feeds.subscription/{shared['id']}",
                 {"restricted": True, "grants": [{"principal_kind": "user", "principal": str(owner.id),
                                                  "permissions": ["acl.manage", "feeds.read", "feeds.manage"]}]})
    assert await api.ok(viewer, "GET", F + "/subscriptions") == []
    await api.problem(viewer, "GET", f"{F}/items/{item['id']}", 404, "not-found")


async def test_preferences(api, example_user):
    alice = await example_user("alice")
    assert await api.ok(alice, "GET", F + "/preferences") == {"digest": "off", "digest_sent_at": None,
                                                               "api_password_set": False}
    updated = await api.ok(alice, "PUT", F + "/preferences", {"digest": "weekly", "api_password": "a long api password"})
    assert updated["digest"] == "weekly" and updated["api_password_set"]
    await api.problem(alice, "PUT", F + "/preferences", 400, None, {"digest": "hourly"})
    await api.problem(alice, "PUT", F + "/preferences", 400, None, {"api_password": "short"})
    cleared = await api.ok(alice, "PUT", F + "/preferences", {"clear_api_password": True})
    assert cleared["digest"] == "weekly" and not cleared["api_password_set"]


async def test_images_are_served_through_the_proxy(api, example_user, feed_server, db):
    alice, mallory = await example_user("alice"), await example_user("mallory")
    feed_server.documents["pics"] = rss([("p", "Pictures")]).replace(
        b"<description>Body of Pictures</description>",
        b"<description><![CDATA[<p>a</p><img src='/img/one.png'><img src='/img/two.svg'><img src='/img/three.html'>"
        b"<img src='http://127.0.0.1:1/img/closed.png'>]]></description>")
    sub = await subscribe(api, alice, feed_server.url("/dyn/pics"))
    item = (await items_of(api, alice, subscription=sub["id"]))[0]
    proxied = [f"/api/v1/feeds/items/{item['id']}/images/{n}" for n in range(4)]
    for path in proxied:
        assert f'src="{path}"' in item["content_html"]
    assert "127.0.0.1" not in item["content_html"]  # the reader's page never names the picture's host
    image = await api.call(alice, "GET", proxied[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG") and "nosniff" in image.headers["x-content-type-options"]
    assert "sandbox" in image.headers["content-security-policy"]
    assert feed_server.requests[-1][1].get("referer") is None
    await api.problem(alice, "GET", proxied[1], 404, "image-unavailable")  # SVG can carry script: refused
    await api.problem(alice, "GET", proxied[2], 404, "image-unavailable")  # not an image
    await api.problem(alice, "GET", proxied[3], 404, "image-unavailable")  # the source is down
    await api.problem(alice, "GET", f"/api/v1/feeds/items/{item['id']}/images/4", 404, "not-found")
    await api.problem(mallory, "GET", proxied[0], 404, "not-found")
    # The stored HTML keeps the original sources (for Google Reader clients and digests).
    stored = await db.fetchval("SELECT content_html FROM feeds_item WHERE id = $1", uuid.UUID(item["id"]))
    assert feed_server.url("/img/one.png") in stored


async def test_image_proxy_keeps_the_ssrf_guard(feeds_api, example_user, feed_server, db):
    alice = await example_user("alice")
    async with feeds_api() as open_api:
        feed_server.documents["pics"] = rss([("p", "P")]).replace(
            b"<description>Body of P</description>",
            b"<description><![CDATA[<img src='http://169.254.169.254/latest/meta-data/x.png'>]]></description>")
        await subscribe(open_api, alice, feed_server.url("/dyn/pics", host="localhost"))
        item = (await items_of(open_api, alice))[0]
    async with feeds_api(SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES="false") as guarded:
        body = await guarded.problem(alice, "GET", f"/api/v1/feeds/items/{item['id']}/images/0", 404,
                                     "image-unavailable")
        assert "not allowed" in body["detail"]
