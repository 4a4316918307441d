"""The feeds page in a real browser against a real server process and a local feed server:
subscribe, unread counts, reading with the keyboard (j/k/m/s), hostile feed content that
must never run, and the OPML import dialog."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import csrf_headers, page_problems, sign_up_api
from tests.feeds.support import FeedServer

FEEDS_ENV = {"SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES": "true", "SYGMAX_FEEDS_RETENTION_DAYS": "36500"}


async def test_reading_feeds_with_the_keyboard(servers, new_context, tmp_path):
    feeds = FeedServer().start()
    try:
        server = await servers.one(**FEEDS_ENV)
        context = await new_context(server)
        await sign_up_api(context, "reader@example.org", "Reader")
        page = await context.new_page()
        problems = page_problems(page)
        dialogs: list[str] = []

        async def record(dialog) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", record)
        await page.goto("/feeds")
        await expect(page.get_by_role("heading", level=1, name="Feeds")).to_be_visible()

        # Subscribe through the dialog, into a new folder.
        await page.get_by_role("button", name="Add feed").click()
        await page.get_by_label("Feed or site address").fill(feeds.url("/f/rss2.xml"))
        await page.get_by_label("Folder (optional)").fill("News")
        await page.get_by_role("button", name="Subscribe").click()
        nav = page.get_by_role("navigation", name="Feeds and folders")
        feed_entry = nav.get_by_role("button", name=re.compile("Example News & Views"))
        await expect(feed_entry).to_contain_text("3")
        await expect(nav.get_by_role("button", name=re.compile("^News"))).to_be_visible()

        # Keyboard: j opens the first article (and marks it read), s stars it, m marks it unread.
        articles = page.get_by_role("list", name="Article list")
        await expect(articles.get_by_role("button")).to_have_count(3)
        await page.keyboard.press("j")
        reader = page.get_by_role("article", name="Reader")
        await expect(reader.get_by_role("heading", level=2)).to_have_text("Solar panels reach record efficiency")
        await expect(reader.locator(".feeds-content b")).to_have_text("perovskite")
        # The picture comes through the server's image proxy (same origin: the CSP allows it).
        picture = reader.locator(".feeds-content img")
        await expect(picture).to_have_attribute("src", re.compile(r"^/api/v1/feeds/items/.+/images/0$"))
        await expect(picture).to_have_js_property("naturalWidth", 1)
        await expect(feed_entry).to_contain_text("2")
        await page.keyboard.press("s")
        await expect(reader.get_by_role("button", name="Unstar (s)")).to_be_visible()
        await page.keyboard.press("m")
        await expect(reader.get_by_role("button", name="Mark read (m)")).to_be_visible()
        await expect(feed_entry).to_contain_text("3")
        await page.keyboard.press("j")
        await expect(reader.get_by_role("heading", level=2)).to_have_text("City opens new library")
        await page.keyboard.press("k")
        await expect(reader.get_by_role("heading", level=2)).to_have_text("Solar panels reach record efficiency")
        await nav.get_by_role("button", name="Starred").click()
        await expect(articles.get_by_role("button")).to_have_count(1)

        # Hostile content: shown as text, never run.
        response = await context.request.post("/api/v1/feeds/subscriptions", data={"url": feeds.url("/f/xss.xml")},
                                              headers=await csrf_headers(context))
        assert response.status == 201, await response.text()
        await page.keyboard.press("r")
        hostile = nav.get_by_role("button", name=re.compile("Hostile"))
        await hostile.click()
        await expect(articles).to_contain_text("Click me")
        await expect(articles.get_by_role("button")).to_have_count(2)
        for _ in range(2):
            await page.keyboard.press("j")
        await expect(reader.get_by_role("heading", level=2)).to_have_text(re.compile("Click me|Data URL"))
        await page.keyboard.press("k")
        assert await page.evaluate("window.__xss") is None
        assert await reader.locator("script, iframe, form, [onerror], [onclick]").count() == 0
        assert dialogs == []

        # OPML import dialog.
        opml = tmp_path / "feeds.opml"
        opml.write_text(f"""<?xml version="1.0"?><opml version="2.0"><body>
            <outline text="Tech"><outline type="rss" text="Atom" xmlUrl="{feeds.url('/f/atom.xml')}"/></outline>
            <outline type="rss" text="JSON" xmlUrl="{feeds.url('/f/feed.json')}"/></body></opml>""")
        await page.get_by_role("button", name="Import OPML").click()
        await page.get_by_label("OPML file from another reader").set_input_files(str(opml))
        await page.get_by_role("button", name="Import", exact=True).click()
        await expect(page.get_by_role("status").filter(has_text="imported")).to_contain_text("2 feeds imported")
        await page.keyboard.press("Escape")
        await expect(nav.get_by_role("button", name=re.compile("^Tech"))).to_be_visible()

        # No script ran, no policy was violated (images load from our own origin).
        assert problems == []
    finally:
        feeds.stop()
