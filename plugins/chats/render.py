"""Message text: Markdown (markdown-it-py, raw HTML off, links recognised) made safe by nh3.

Rendering happens once, when a message is posted or edited; the sanitised HTML is stored
beside the source so reads and fan-out never render. Mentions are a markdown-it inline rule,
so ``@alice`` inside a code span or block stays code and is not a mention.

Mention syntax: ``@name`` where name is the local part of a member's e-mail address
(``@alice`` for alice@example.org), or the whole address (``@alice@example.org``);
``@channel``, ``@here`` and ``@all`` mention everyone in the channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline

CHANNEL_MENTIONS = frozenset({"channel", "here", "all"})
_MENTION = re.compile(r"@([A-Za-z0-9][A-Za-z0-9._+-]{0,63}(?:@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)?)")

# What survives sanitising: what the Markdown renderer itself produces, nothing more.
_TAGS = {"p", "br", "hr", "strong", "em", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
         "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "span"}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"},
               "span": {"data-user-id", "data-mention"}}
_CLASSES = {"span": {"mention"}}


def _mention_rule(state: StateInline, silent: bool) -> bool:
    if state.src[state.pos] != "@":
        return False
    # Only at a word boundary: "mail@example.org" in running text is not a mention.
    if state.pos > 0 and (state.src[state.pos - 1].isalnum() or state.src[state.pos - 1] in "._+-@"):
        return False
    match = _MENTION.match(state.src, state.pos)
    if match is None:
        return False
    name = match.group(1).rstrip(".")
    if not silent:
        token = state.push("mention", "", 0)
        token.meta = {"name": name}
        token.content = "@" + name
    state.pos += 1 + len(name)
    return True


def _render_mention(self, tokens, idx, options, env) -> str:
    name = tokens[idx].meta["name"]
    lowered = name.lower()
    if lowered in CHANNEL_MENTIONS:
        return f'<span class="mention" data-mention="{escape(lowered)}">@{escape(name)}</span>'
    user_id = env.get("resolved", {}).get(lowered)
    if user_id is None:
        return escape("@" + name)
    return f'<span class="mention" data-user-id="{user_id}">@{escape(name)}</span>'


def _build() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False, "breaks": True})
    md.enable(["linkify", "strikethrough", "table"])
    md.inline.ruler.before("emphasis", "mention", _mention_rule)
    md.add_render_rule("mention", _render_mention)
    md.validateLink = _safe_link
    return md


def _safe_link(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://", "mailto:", "/", "#")) or ":" not in lowered.split("/")[0]


_MD = _build()


@dataclass
class Parsed:
    """A parsed message: its tokens, and the mention names found outside code."""

    tokens: list
    names: set[str] = field(default_factory=set)
    channel: bool = False


def parse(text: str) -> Parsed:
    env: dict = {}
    tokens = _MD.parse(text, env)
    parsed = Parsed(tokens)
    for token in tokens:
        for child in token.children or ():
            if child.type == "mention":
                name = child.meta["name"].lower()
                if name in CHANNEL_MENTIONS:
                    parsed.channel = True
                else:
                    parsed.names.add(name)
    return parsed


def render(parsed: Parsed, resolved: dict[str, str]) -> str:
    """Sanitised HTML; ``resolved`` maps lower-cased mention names to user ids."""
    html = _MD.renderer.render(parsed.tokens, _MD.options, {"resolved": resolved})
    return sanitise(html)


def sanitise(html: str) -> str:
    return nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, allowed_classes=_CLASSES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     strip_comments=True)


def render_plain(text: str) -> str:
    """Render without mention resolution (names stay plain text)."""
    return render(parse(text), {})


__all__ = ["CHANNEL_MENTIONS", "Parsed", "parse", "render", "render_plain", "sanitise"]
