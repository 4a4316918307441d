"""Markdown rendering and mention parsing (plugins/chats/render.py), without servers."""

from __future__ import annotations

import pytest

from plugins.chats import render


@pytest.mark.parametrize(("text", "names", "channel"), [
    ("hi @alice and @Bob", {"alice", "bob"}, False),
    ("write to alice@example.org", set(), False),  # an address in running text is not a mention
    ("@alice@example.org, look", {"alice@example.org"}, False),
    ("`@alice` and\n\n```\n@bob\n```", set(), False),  # code stays code
    ("@here and @ALL", set(), True),
    ("trailing dot @carol.", {"carol"}, False),
    ("@", set(), False),
])
def test_mentions_are_found_outside_code(text, names, channel):
    parsed = render.parse(text)
    assert (parsed.names, parsed.channel) == (names, channel)


def test_resolved_mentions_render_as_spans_and_unknown_ones_as_text():
    html = render.render(render.parse("@alice @nobody <b>"), {"alice": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"})
    assert html == ('<p><span class="mention" data-user-id="1b4e28ba-2fa1-11d2-883f-0016d3cca427">@alice</span> '
                    "@nobody &lt;b&gt;</p>\n")


def test_links_are_recognised_and_marked():
    html = render.render_plain("see www.example.org and [docs](https://example.org/docs \"Docs\")")
    assert '<a href="http://www.example.org" rel="noopener noreferrer nofollow">www.example.org</a>' in html
    assert '<a href="https://example.org/docs" title="Docs" rel="noopener noreferrer nofollow">docs</a>' in html


def test_sanitiser_drops_what_markdown_would_never_produce():
    dirty = '<p onclick="x()">a</p><img src=x><span class="evil mention" style="x">b</span><a href="javascript:x">c</a>'
    assert render.sanitise(dirty) == '<p>a</p><span class="mention">b</span><a rel="noopener noreferrer nofollow">c</a>'
