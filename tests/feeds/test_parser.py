"""Parsing every format, the fast parser validated against feedparser, sanitising, discovery."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from plugins.feeds import parser
from plugins.feeds.parser import FeedParseError, discover_feed_links, parse_feed, sanitize_html
from tests.feeds.support import FIXTURES

BASE = "https://feeds.example.org/feed"
WELL_FORMED_XML = ["rss2.xml", "rss1.xml", "rss091.xml", "atom.xml", "xss.xml"]


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name, title, language, expected", [
    ("rss2.xml", "Example News & Views", "en-us", [
        ("news-1001", "https://news.example.org/2024/solar", "Solar panels reach record efficiency",
         datetime(2024, 6, 3, 9, 30, tzinfo=timezone.utc)),
        (None, "https://news.example.org/2024/library", "City opens new library",
         datetime(2024, 6, 2, 12, 0, tzinfo=timezone.utc)),
        (None, "https://news.example.org/2024/gardening", "Quarterly gardening tips",
         datetime(2024, 6, 1, 8, 0, tzinfo=timezone.utc)),
    ]),
    ("rss1.xml", "RDF Site Summary Example", "de", [
        (None, "https://rdf.example.org/one", "Erster Artikel über Bäume", datetime(2024, 5, 20, 10, tzinfo=timezone.utc)),
        (None, "https://rdf.example.org/two", "Zweiter Artikel", datetime(2024, 5, 21, 8, tzinfo=timezone.utc)),
    ]),
    ("rss091.xml", "Old School Weblog", "en", [
        (None, "http://oldschool.example.com/cafe", "Café opening", None),
        (None, "http://oldschool.example.com/second", "Second post", None),
    ]),
    ("atom.xml", "Atom Example Blog", "en", [
        ("urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a", "https://atom.example.net/compilers", "Compilers <3 & you",
         datetime(2024, 6, 5, 18, 30, 2, tzinfo=timezone.utc)),
        ("tag:atom.example.net,2024:moths", "https://atom.example.net/moths", "Debugging moths",
         datetime(2024, 6, 4, 11, 0, tzinfo=timezone.utc)),
    ]),
    ("feed.json", "JSON Feed Example", "fr", [
        ("2", "https://json.example.com/second", "Deuxième article", datetime(2024, 6, 2, 8, tzinfo=timezone.utc)),
        ("1", "https://json.example.com/first", "Premier article", datetime(2024, 6, 1, 10, tzinfo=timezone.utc)),
    ]),
])
def test_every_format_parses_to_the_same_shape(name, title, language, expected):
    feed = parse_feed(load(name), BASE)
    assert feed.title == title
    assert feed.language == language
    assert [(item.guid, item.url, item.title, item.published_at) for item in feed.items] == expected


@pytest.mark.parametrize("name", WELL_FORMED_XML)
def test_fast_path_agrees_with_feedparser_on_well_formed_feeds(name):
    raw = load(name)
    fast = parser.parse_with_fastfeedparser(raw, BASE)
    assert fast is not None, "the fast parser's answer should pass validation on a well-formed feed"
    slow = parser.parse_with_feedparser(raw, BASE)
    assert (fast.title, fast.site_url, fast.language) == (slow.title, slow.site_url, slow.language)
    assert [(i.dedupe_key, i.guid, i.url, i.title, i.published_at, i.content_text) for i in fast.items] == \
           [(i.dedupe_key, i.guid, i.url, i.title, i.published_at, i.content_text) for i in slow.items]


def test_contents_agree_after_sanitising():
    raw = load("rss2.xml")
    fast = parser.parse_with_fastfeedparser(raw, BASE)
    slow = parser.parse_with_feedparser(raw, BASE)
    # Relative URLs in content resolve against the document, under both parsers.
    assert 'src="https://feeds.example.org/img/solar.png"' in fast.items[0].content_html
    assert fast.items[0].content_text == slow.items[0].content_text


def test_ill_formed_xml_falls_back_to_feedparser_and_fails_readably():
    before = dict(parser.PARSE_CALLS)
    with pytest.raises(FeedParseError) as caught:
        parse_feed(load("malformed.xml"), BASE)
    assert "not a valid RSS/Atom feed" in str(caught.value) and "mismatched tag" in str(caught.value)
    assert parser.PARSE_CALLS["fallback"] == before["fallback"] + 1


def test_a_fast_answer_that_drops_items_is_replaced_by_feedparsers():
    # An <item> that is a child of a foreign namespace element still counts as an item tag; if
    # the fast parser returned fewer entries than the document has, the result is not trusted.
    raw = load("rss2.xml")
    assert parser._looks_right({"feed": {"title": "x"}, "entries": [{"id": "a"}]}, raw) is False
    before = parser.PARSE_CALLS["fallback"]
    feed = parse_feed(raw, BASE)
    assert parser.PARSE_CALLS["fallback"] == before and feed.parser == "fastfeedparser"


@pytest.mark.parametrize("document, message", [
    (b"", "empty document"),
    (b"   \n", "empty document"),
    (b"<html><body>hello</body></html>", "not"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": "nope"}', "not a valid JSON Feed"),
    (b'{"version": "1.0", "items": []}', "not a JSON Feed"),
    (b"{not json", "not a valid JSON Feed"),
    (b"just some text", "not"),
])
def test_non_feeds_are_readable_errors(document, message):
    with pytest.raises(FeedParseError) as caught:
        parse_feed(document, BASE)
    assert message in str(caught.value)


def test_hostile_html_is_sanitised():
    feed = parse_feed(load("xss.xml"), BASE)
    assert feed.title == "Hostile alert(1) Feed"
    first, second = feed.items
    assert first.title == "Click me"
    html = first.content_html + second.content_html
    for forbidden in ("<script", "onclick", "onerror", "onload", "javascript:", "<iframe", "<style", "<svg",
                      "data:", "<form", "<input", "<object", "style="):
        assert forbidden not in html, forbidden
    assert '<img src="https://evil.example.org/pixel.gif"' in first.content_html
    assert 'loading="lazy"' in first.content_html and 'referrerpolicy="no-referrer"' in first.content_html
    assert 'href="https://ok.example.org/"' in first.content_html
    assert "noopener" in first.content_html
    assert second.url is None  # a javascript: link is no link


def test_sanitize_keeps_ordinary_markup():
    clean = sanitize_html('<h2>T</h2><p>a <a href="/x" title="t">b</a></p><ul><li>1</li></ul><pre>c</pre>',
                          "https://s.example/")
    assert clean.startswith("<h2>T</h2><p>a <a href=\"https://s.example/x\" title=\"t\"")
    assert "<ul><li>1</li></ul><pre>c</pre>" in clean


def test_discovery_finds_alternate_links_in_order():
    links = discover_feed_links(load("site.html"), "https://atom.example.net/blog/index.html")
    assert links == ["https://atom.example.net/blog/atom.xml", "https://atom.example.net/blog/rss2.xml"]
    assert discover_feed_links(load("nofeed.html"), "https://x.example/") == []


def test_malformed_links_are_no_links():
    raw = (b"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title><link>http://[bad/</link>"
           b"<item><title>A</title><link>https://x[y/a</link><guid>g1</guid></item></channel></rss>")
    feed = parse_feed(raw, BASE)
    assert feed.site_url is None and feed.items[0].url is None and feed.items[0].guid == "g1"


def test_far_future_dates_are_ignored_and_duplicates_keep_one_key():
    raw = (b"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>"
           b"<item><title>Future</title><link>https://x.example/a</link><pubDate>Mon, 01 Jan 2120 00:00:00 GMT"
           b"</pubDate></item><item><title>No link</title><description>same</description></item>"
           b"</channel></rss>")
    feed = parse_feed(raw, BASE)
    assert feed.items[0].published_at is None
    assert feed.items[0].dedupe_key == "l:https://x.example/a"
    assert feed.items[1].dedupe_key.startswith("h:")
