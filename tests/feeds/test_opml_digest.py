"""OPML import/export round trip and hostile OPML; the email digest received by a real SMTP
server (aiosmtpd)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from defusedxml import ElementTree

from plugins.feeds.digest import send_due_digests
from tests.auth_helpers import smtp_server  # noqa: F401 (fixture)
from tests.conftest import assert_problem
from tests.feeds.support import FIXTURES, rss

F = "/api/v1/feeds"
OPML = {"content-type": "text/x-opml"}


def opml_for(feed_server) -> bytes:
    return (FIXTURES / "opml.xml").read_text().replace("{base}", feed_server.url("/f")).encode()


async def test_opml_round_trip(api, example_user, feed_server, db):
    alice = await example_user("alice")
    response = await api.client.post(F + "/opml", content=opml_for(feed_server), headers={**alice.headers, **OPML})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imported"] == 3 and result["already_subscribed"] == 0
    assert [failure["url"] for failure in result["failed"]] == ["file:///etc/passwd"]
    subs = {sub["url"]: sub for sub in await api.ok(alice, "GET", F + "/subscriptions")}
    assert subs[feed_server.url("/f/rss2.xml")]["folder"] == "News"
    assert subs[feed_server.url("/f/rss1.xml")]["folder"] == "News"  # nested folders flatten into the nearest
    assert subs[feed_server.url("/f/atom.xml")]["folder"] is None
    assert subs[feed_server.url("/f/rss2.xml")]["title"] == "Example News"
    assert feed_server.requests == []  # fetched by the next poll, not during the import

    again = await api.client.post(F + "/opml", content=opml_for(feed_server), headers={**alice.headers, **OPML})
    assert again.json()["imported"] == 0 and again.json()["already_subscribed"] == 3

    exported = await api.client.get(F + "/opml", headers=alice.headers)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/x-opml")
    root = ElementTree.fromstring(exported.content)
    body = root.find("body")
    folders = {outline.get("text"): [child.get("xmlUrl") for child in outline] for outline in body
               if outline.get("xmlUrl") is None}
    assert sorted(folders["News"]) == sorted([feed_server.url("/f/rss2.xml"), feed_server.url("/f/rss1.xml")])
    assert [outline.get("xmlUrl") for outline in body if outline.get("xmlUrl")] == [feed_server.url("/f/atom.xml")]

    # Import the export as someone else: the same subscriptions and folders.
    bob = await example_user("bob")
    imported = await api.client.post(F + "/opml", content=exported.content, headers={**bob.headers, **OPML})
    assert imported.json()["imported"] == 3
    bobs = {(sub["url"], sub["folder"]) for sub in await api.ok(bob, "GET", F + "/subscriptions")}
    alices = {(sub["url"], sub["folder"]) for sub in await api.ok(alice, "GET", F + "/subscriptions")}
    assert bobs == alices


async def test_hostile_and_broken_opml(api, example_user, db):
    alice = await example_user("alice")
    laughs = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<opml version="2.0"><body><outline xmlUrl="https://x.example/&lol2;"/></body></opml>"""
    external = b"""<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<opml version="2.0"><body><outline xmlUrl="&xxe;"/></body></opml>"""
    for document, status, slug in [(laughs, 400, "invalid-opml"), (external, 400, "invalid-opml"),
                                   (b"<opml><body>", 400, "invalid-opml"), (b"<html/>", 400, "invalid-opml"),
                                   (b"\xff\xfe garbage", 400, "invalid-opml")]:
        response = await api.client.post(F + "/opml", content=document, headers={**alice.headers, **OPML})
        assert_problem(response, status, slug)
    big = b"<opml version='2.0'><body>" + b"<outline text='x'/>" * 200_000 + b"</body></opml>"
    assert_problem(await api.client.post(F + "/opml", content=big, headers={**alice.headers, **OPML}), 413,
                   "payload-too-large")
    assert await db.fetchval("SELECT count(*) FROM feeds_subscription") == 0


async def test_daily_digest_is_mailed(feeds_api, example_user, feed_server, smtp_server, db, kernel):  # noqa: F811
    overrides = {"SYGMAX_SMTP_HOST": "127.0.0.1", "SYGMAX_SMTP_PORT": str(smtp_server.port),
                 "SYGMAX_SMTP_SENDER": "Sygmax <noreply@example.org>"}
    alice, bob = await example_user("alice"), await example_user("bob")
    async with feeds_api(**overrides) as api:
        feed_server.documents["d"] = rss([("1", "Morning &amp; news"), ("2", "Evening news")])
        await api.ok(alice, "POST", F + "/subscriptions", {"url": feed_server.url("/dyn/d")})
        await api.ok(bob, "POST", F + "/subscriptions", {"url": feed_server.url("/dyn/d")})
        await api.ok(alice, "PUT", F + "/preferences", {"digest": "daily"})
        read = (await api.ok(alice, "GET", F + "/items?q=evening"))["items"][0]
        await api.ok(alice, "PATCH", f"{F}/items/{read['id']}", {"read": True})
    k = await kernel(**overrides)
    assert await send_due_digests(k) == 1
    messages = await smtp_server.wait(1)
    assert len(messages) == 1 and messages[0]["To"] == "alice@example.org"
    assert "daily feeds digest: 1 new item" in messages[0]["Subject"]
    text = messages[0].get_body(("plain",)).get_content()
    assert "Morning & news" in text and "Evening" not in text and "https://dyn.example.org/1" in text
    html = messages[0].get_body(("html",)).get_content()
    assert "Morning &amp; news" in html and 'href="https://dyn.example.org/1"' in html
    assert await send_due_digests(k) == 0  # not due again until tomorrow
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1, minutes=1)
    assert await send_due_digests(k, now=tomorrow) == 0  # due, but nothing new: no mail
    assert len(smtp_server.messages) == 1
    sent_at = await db.fetchval("SELECT digest_sent_at FROM feeds_preference WHERE user_id = $1", alice.id)
    assert sent_at == tomorrow
