"""Feed parsing: RSS 0.9x/1.0/2.0 and Atom (XML), and JSON Feed, into one normalised shape.

Speed and correctness, combined (measured in bench/feeds_refresh.py):

* ``feedparser`` is the reference: it handles every RSS/Atom dialect and the odd corners of
  real feeds, but costs ~30 ms per 63 KB feed here.
* ``fastfeedparser`` (lxml underneath) is ~90x faster and agrees on common feeds, but
  mis-parses some valid ones (drops items, misses titles or ids).

So XML goes to fastfeedparser first and its result is *validated* against cheap facts about
the document: the number of ``<item>``/``<entry>`` start tags in the raw bytes must equal the
number of entries it returned, every entry must carry an id, a link or a title, no title may
still hold escaped markup, and when the document has a channel title the result must too.
Anything that fails a check, and any exception, falls back to feedparser, whose answer is
used as is. A feedparser "bozo" result with no entries is a malformed feed: a readable
:class:`FeedParseError`.

JSON Feed (1.0/1.1) is not understood by feedparser at all; it is decoded with msgspec into
the spec's typed fields (a wrong type is a readable error, never a half-read feed).

Item HTML is sanitised here with nh3 (ammonia): an allow-list of tags and attributes, no
scripts, styles or event handlers, only http/https/mailto URLs (relative ones resolved
against the item), and images get ``loading="lazy"`` and ``referrerpolicy="no-referrer"`` so
reading an article neither loads every picture at once nor tells image hosts who reads.
"""

from __future__ import annotations

import calendar
import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit

import fastfeedparser
import feedparser
import msgspec
import nh3
from lxml import etree

MAX_TITLE = 1000
MAX_CONTENT = 500_000
MAX_ITEMS = 2000

# Counters the tests read to prove a 304 costs no parsing and to see which parser ran.
PARSE_CALLS = {"fast": 0, "feedparser": 0, "json": 0, "fallback": 0}


class FeedParseError(Exception):
    """The document is not a feed we can read; the message is shown on the subscription."""


@dataclass
class ParsedItem:
    guid: str | None
    url: str | None
    title: str
    author: str
    raw_html: str  # as the feed sent it: never shown; sanitised into content_html on first use
    base: str | None
    published_at: datetime | None

    @property
    def dedupe_key(self) -> str:
        if self.guid:
            return "g:" + self.guid[:2000]
        if self.url:
            return "l:" + self.url[:2000]
        return "h:" + self.content_hash.hex()

    @cached_property
    def content_hash(self) -> bytes:
        # Over the raw content, so it is known before sanitising: items already stored are
        # recognised (and skipped) without paying for nh3 again on every poll.
        return hashlib.sha256("\x00".join((self.title, self.url or "", self.raw_html)).encode()).digest()

    @cached_property
    def content_html(self) -> str:
        return sanitize_html(self.raw_html, self.base)

    @cached_property
    def content_text(self) -> str:
        return html_to_text(self.content_html)


@dataclass
class ParsedFeed:
    title: str
    site_url: str | None
    language: str | None
    ttl_minutes: int | None
    items: list[ParsedItem] = field(default_factory=list)
    parser: str = ""


# ---------------------------------------------------------------------------------------------
# HTML


_ALLOWED_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"}, "acronym": {"title"},
    "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
    "time": {"datetime"}, "q": {"cite"}, "blockquote": {"cite"}, "del": {"cite"}, "ins": {"cite"},
    "ol": {"start", "reversed"}, "li": {"value"},
}
_TAGS_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


@lru_cache(maxsize=512)
def _cleaner(base: str | None) -> nh3.Cleaner:
    """A prebuilt sanitiser per base URL: building nh3's options per call costs 4x the cleaning."""
    return nh3.Cleaner(
        tags=_ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        url_relative=("rewrite_with_base", base) if base else "deny",
        set_tag_attribute_values={"img": {"loading": "lazy", "referrerpolicy": "no-referrer"},
                                  "a": {"target": "_blank"}},
        link_rel="noopener noreferrer nofollow",
    )


def sanitize_html(fragment: str, base_url: str | None) -> str:
    """Allow-listed HTML safe to put into the reader's page as is."""
    if not fragment:
        return ""
    base = base_url if base_url and urlsplit(base_url).scheme in ("http", "https") else None
    return _cleaner(base).clean(fragment[:MAX_CONTENT])


def html_to_text(fragment: str) -> str:
    """Plain text of (already sanitised) HTML: for search, digests and AI annotation."""
    return " ".join(html.unescape(_TAGS_RE.sub(" ", fragment)).split())


def plain_title(value: str | None) -> str:
    """Titles are text: feeds sometimes put markup in them; strip it and never render it."""
    if not value:
        return ""
    return _SPACE_RE.sub(" ", html.unescape(_TAGS_RE.sub("", value))).strip()[:MAX_TITLE]


def _absolute(url: str | None, base: str | None) -> str | None:
    if not url or not isinstance(url, str):
        return None
    url = url.strip()
    if url.startswith(("https://", "http://")) and " " not in url and "[" not in url and url.isprintable():
        return url  # already absolute (the common case): urljoin costs more than the parse
    try:
        joined = urljoin(base, url) if base else url
        return joined if urlsplit(joined).scheme in ("http", "https") else None
    except ValueError:  # e.g. an unbalanced "[" in the host: not a usable link
        return None


# ---------------------------------------------------------------------------------------------
# Dates


def _from_struct(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _from_iso(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)  # RFC 822, as RSS writes dates
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _sane_date(value: datetime | None) -> datetime | None:
    """Dates in the far future (clock errors, typos) would pin an item to the top forever."""
    if value is None:
        return None
    now = datetime.now(timezone.utc)
    if value.year < 1990 or (value - now).days > 2:
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Normalisation of both XML parsers' dict shapes


def _content_of(entry: Any) -> str:
    content = entry.get("content")
    if content:
        values = [part.get("value") or "" for part in content if isinstance(part, dict)]
        best = max(values, key=len, default="")
        if best:
            return best
    return entry.get("summary") or entry.get("description") or ""


def _item(entry: Any, base: str | None, iso_dates: bool) -> ParsedItem:
    url = _absolute(entry.get("link"), base)
    guid = entry.get("id") or entry.get("guid")
    guid = guid.strip() if isinstance(guid, str) and guid.strip() else None
    raw_link = entry.get("link")
    if guid is not None and (guid == url or (isinstance(raw_link, str) and guid == raw_link.strip())):
        # A guid equal to the link says nothing more than the link (and fastfeedparser fills
        # a missing id with the link): key such items by link under both parsers alike.
        guid = None
    if iso_dates:
        published = _from_iso(entry.get("published")) or _from_iso(entry.get("updated"))
    else:
        published = _from_struct(entry.get("published_parsed")) or _from_struct(entry.get("updated_parsed"))
    author = entry.get("author") or ""
    return ParsedItem(
        guid=guid,
        url=url,
        title=plain_title(entry.get("title")),
        author=plain_title(author if isinstance(author, str) else ""),
        raw_html=(_content_of(entry) or "")[:MAX_CONTENT],
        base=base,
        published_at=_sane_date(published),
    )


def _feed(meta: Any, entries: list, base: str, language: str | None, ttl: int | None, parser: str,
          iso_dates: bool) -> ParsedFeed:
    site_url = _absolute(meta.get("link"), base)
    # Relative links resolve against the document's own URL (XML base rules, as feedparser does).
    items = [_item(entry, base, iso_dates) for entry in entries[:MAX_ITEMS]]
    return ParsedFeed(plain_title(meta.get("title")), site_url, language, ttl, items, parser)


# ---------------------------------------------------------------------------------------------
# Sanity checks on fastfeedparser's answer

_ENTRY_TAG = re.compile(rb"<(?:[A-Za-z0-9_-]+:)?(?:item|entry)[\s>/]")
_CHANNEL_TITLE = re.compile(rb"<(?:[A-Za-z0-9_-]+:)?title[\s>]")
_LANGUAGE = re.compile(rb"<(?:[A-Za-z0-9_-]+:)?language>\s*([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*)\s*<")
_XML_LANG = re.compile(rb"<(?:feed|rss|rdf:RDF|channel)[^>]*\sxml:lang=[\"']([A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)")
_TTL = re.compile(rb"<ttl>\s*(\d{1,6})\s*</ttl>")
_CDATA_OR_COMMENT = re.compile(rb"<!\[CDATA\[.*?\]\]>|<!--.*?-->", re.S)


def _looks_right(result: Any, raw: bytes) -> bool:
    entries = result.get("entries") or []
    expected = len(_ENTRY_TAG.findall(raw))
    if expected != len(entries):
        # Item tags inside CDATA or comments are not items: count again outside them (rarely needed).
        expected = len(_ENTRY_TAG.findall(_CDATA_OR_COMMENT.sub(b"", raw)))
    if expected != len(entries) or expected > MAX_ITEMS:
        return False
    feed = result.get("feed") or {}
    if _CHANNEL_TITLE.search(raw[:raw.find(b"<item") if b"<item" in raw else 4096]) and not feed.get("title"):
        return False
    for entry in entries:
        if not (entry.get("id") or entry.get("link") or entry.get("title")):
            return False
        if "<![CDATA[" in (entry.get("title") or ""):
            return False
    return True


_STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False, huge_tree=False)


def _well_formed(raw: bytes) -> bool:
    """fastfeedparser recovers from broken XML silently (and may invent items from the debris);
    a document that is not well-formed goes to feedparser, which says what is wrong."""
    try:
        etree.fromstring(raw, _STRICT)
    except (etree.XMLSyntaxError, ValueError):
        return False
    return True


def _language(raw: bytes) -> str | None:
    match = _LANGUAGE.search(raw[:8192]) or _XML_LANG.search(raw[:4096])
    return match.group(1).decode().lower().replace("_", "-") if match else None


def _ttl(raw: bytes) -> int | None:
    match = _TTL.search(raw[:16384])
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# JSON Feed (https://www.jsonfeed.org/version/1.1/)


class _JsonAuthor(msgspec.Struct):
    name: str | None = None


class _JsonItem(msgspec.Struct):
    id: str | int | None = None
    url: str | None = None
    external_url: str | None = None
    title: str | None = None
    content_html: str | None = None
    content_text: str | None = None
    summary: str | None = None
    date_published: str | None = None
    date_modified: str | None = None
    author: _JsonAuthor | None = None
    authors: list[_JsonAuthor] | None = None


class _JsonFeed(msgspec.Struct):
    version: str
    title: str = ""
    home_page_url: str | None = None
    language: str | None = None
    items: list[_JsonItem] = []


_json_decoder = msgspec.json.Decoder(_JsonFeed)


def _parse_json(raw: bytes, base: str) -> ParsedFeed:
    PARSE_CALLS["json"] += 1
    try:
        document = _json_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise FeedParseError(f"not a valid JSON Feed: {exc}") from None
    if "jsonfeed.org/version/" not in document.version:
        raise FeedParseError("JSON document is not a JSON Feed (no jsonfeed.org version)")
    site = _absolute(document.home_page_url, base)
    items = []
    for entry in document.items[:MAX_ITEMS]:
        url = _absolute(entry.url or entry.external_url, site or base)
        raw_html = entry.content_html or (html.escape(entry.content_text) if entry.content_text else "") \
            or html.escape(entry.summary or "")
        author = entry.author or (entry.authors[0] if entry.authors else None)
        items.append(ParsedItem(
            guid=str(entry.id) if entry.id not in (None, "") else None,
            url=url,
            title=plain_title(entry.title),
            author=plain_title(author.name if author else ""),
            raw_html=raw_html[:MAX_CONTENT],
            base=base,
            published_at=_sane_date(_from_iso(entry.date_published) or _from_iso(entry.date_modified)),
        ))
    return ParsedFeed(plain_title(document.title), site, (document.language or "").lower() or None, None, items,
                      "json")


# ---------------------------------------------------------------------------------------------
# Entry points


def parse_with_feedparser(raw: bytes, base: str) -> ParsedFeed:
    PARSE_CALLS["feedparser"] += 1
    result = feedparser.parse(raw, response_headers={"content-location": base})
    if result.get("bozo") and not result.entries:
        error = result.get("bozo_exception")
        raise FeedParseError(f"not a valid RSS/Atom feed: {error}" if error else "not a valid RSS/Atom feed")
    if not result.get("version") and not result.entries:
        raise FeedParseError("the document is not RSS, Atom or JSON Feed")
    ttl = result.feed.get("ttl")
    ttl_minutes = int(ttl) if isinstance(ttl, str) and ttl.strip().isdigit() else None
    language = (result.feed.get("language") or "").lower() or _language(raw)
    return _feed(result.feed, result.entries, base, language, ttl_minutes, "feedparser", iso_dates=False)


def parse_with_fastfeedparser(raw: bytes, base: str) -> ParsedFeed | None:
    """fastfeedparser's answer, or None when it raised or its answer fails the sanity checks."""
    PARSE_CALLS["fast"] += 1
    if not _well_formed(raw):
        return None
    try:
        result = fastfeedparser.parse(raw)
    except Exception:  # any failure of the fast path means "ask feedparser", never an error
        return None
    if not _looks_right(result, raw):
        return None
    return _feed(result.get("feed") or {}, result.get("entries") or [], base, _language(raw), _ttl(raw),
                 "fastfeedparser", iso_dates=True)


def _is_json(raw: bytes) -> bool:
    return raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def parse_feed(raw: bytes, base: str) -> ParsedFeed:
    """Parse a fetched document (``base`` is its final URL, for relative links)."""
    if not raw.strip():
        raise FeedParseError("the server sent an empty document")
    if _is_json(raw):
        return _parse_json(raw, base)
    fast = parse_with_fastfeedparser(raw, base)
    if fast is not None:
        return fast
    PARSE_CALLS["fallback"] += 1
    return parse_with_feedparser(raw, base)


# ---------------------------------------------------------------------------------------------
# Discovery: a site's HTML page names its feeds in <link rel="alternate" type="...">

_LINK_TAG = re.compile(rb"<link\b[^>]*>", re.I)
_ATTR = re.compile(rb"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
FEED_TYPES = {"application/rss+xml", "application/atom+xml", "application/feed+json", "application/json",
              "application/rdf+xml", "text/xml", "application/xml"}


def looks_like_html(raw: bytes, content_type: str) -> bool:
    head = raw[:1024].lstrip().lower()
    return "html" in content_type.lower() or head.startswith(b"<!doctype html") or head.startswith(b"<html")


def discover_feed_links(raw: bytes, base: str) -> list[str]:
    """Feed URLs a page advertises, in document order, absolute."""
    found: list[str] = []
    for tag in _LINK_TAG.findall(raw[:500_000]):
        attrs = {m.group(1).lower(): html.unescape((m.group(2) or m.group(3) or m.group(4) or b"").decode(
            "utf-8", "replace")) for m in _ATTR.finditer(tag)}
        rel = {part.strip().lower() for part in attrs.get(b"rel", "").split()}
        if "alternate" in rel and attrs.get(b"type", "").lower().split(";")[0].strip() in FEED_TYPES:
            url = _absolute(attrs.get(b"href"), base)
            if url and url not in found:
                found.append(url)
    return found
