"""OPML 1.0/2.0 import and export (the subscription list format every reader speaks).

Import parses with defusedxml (no entity expansion, no external entities, no DTD tricks),
refuses documents over ``opml_max_bytes`` and more than ``MAX_OUTLINES`` feeds, and keeps
one level of folders (outline elements without ``xmlUrl`` that contain feeds; deeper
nesting is flattened into the nearest folder, as Miniflux and FreshRSS do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from xml.etree.ElementTree import Element, SubElement, tostring

import msgspec
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sygmax.auth.audit import Source
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

from plugins.feeds import access
from plugins.feeds.actions import check_subscribe, list_subscriptions
from plugins.feeds.settings import feeds_settings

MAX_OUTLINES = 5000


@dataclass
class OpmlFeed:
    url: str
    title: str | None
    folder: str | None


class ImportResult(msgspec.Struct):
    imported: int
    already_subscribed: int
    failed: list[dict]


def parse_opml(raw: bytes, max_bytes: int) -> list[OpmlFeed]:
    if len(raw) > max_bytes:
        raise Problem(413, "payload-too-large", f"The OPML file is larger than {max_bytes:,} bytes")
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError) as exc:
        raise Problem(400, "invalid-opml", f"Not a readable OPML document: {str(exc)[:200]}") from None
    if root.tag != "opml" or root.find("body") is None:
        raise Problem(400, "invalid-opml", "Not an OPML document (no <opml><body>)")
    feeds: list[OpmlFeed] = []

    def walk(element, folder: str | None) -> None:
        for outline in element.findall("outline"):
            url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
            title = (outline.get("title") or outline.get("text") or "").strip() or None
            if url:
                feeds.append(OpmlFeed(url, title, folder))
                if len(feeds) > MAX_OUTLINES:
                    raise Problem(413, "payload-too-large", f"The OPML file lists more than {MAX_OUTLINES} feeds")
            else:
                walk(outline, folder or title)

    walk(root.find("body"), None)
    return feeds


async def do_import_opml(actor: Actor, kernel, raw: bytes, source: Source | None = None) -> ImportResult:
    """Subscribe to every feed of the file (folders created as needed); report what failed.

    Feeds are not fetched here (a list of hundreds would take minutes): each new one is due at
    once, and the scheduler's next tick fetches it; errors then show on the subscription.
    """
    access.require_scope(actor, access.MANAGE)
    feeds = parse_opml(raw, feeds_settings(kernel).opml_max_bytes)
    imported, already, failed = 0, 0, []
    for feed in feeds:
        title = feed.title[:100] if feed.title else None
        try:
            try:
                await check_subscribe(actor, kernel, feed.url, folder=feed.folder, title=title, source=source,
                                      fetch=False)
            except Problem as exc:
                if exc.field not in ("title", "folder"):
                    raise
                # A title or folder name we cannot keep is no reason to drop the feed.
                await check_subscribe(actor, kernel, feed.url, source=source, fetch=False)
            imported += 1
        except Problem as exc:
            if exc.slug == "already-subscribed":
                already += 1
            else:
                failed.append({"url": feed.url[:2048], "error": exc.detail})
    return ImportResult(imported, already, failed)


async def export_opml(actor: Actor, kernel) -> bytes:
    """The actor's subscriptions (personal and workspace) as OPML 2.0, grouped by folder."""
    subscriptions = await list_subscriptions(actor, kernel)
    root = Element("opml", version="2.0")
    head = SubElement(root, "head")
    SubElement(head, "title").text = "Sygmax subscriptions"
    SubElement(head, "dateCreated").text = format_datetime(datetime.now(timezone.utc))
    body = SubElement(root, "body")
    folders: dict[str, Element] = {}
    for sub in subscriptions:
        parent = body
        if sub.folder:
            parent = folders.get(sub.folder)
            if parent is None:
                parent = folders[sub.folder] = SubElement(body, "outline", text=sub.folder, title=sub.folder)
        attributes = {"type": "rss", "text": sub.title, "title": sub.title, "xmlUrl": sub.url}
        if sub.site_url:
            attributes["htmlUrl"] = sub.site_url
        SubElement(parent, "outline", attributes)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="utf-8", xml_declaration=False)


__all__ = ["parse_opml", "do_import_opml", "export_opml", "ImportResult"]
