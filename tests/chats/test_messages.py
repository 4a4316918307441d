"""Chats over REST against real PostgreSQL and Redis: channels, messages, edits, deletes,
reactions, pins, threads, read markers, search, direct conversations, and every refusal."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import pytest

from tests.chats.conftest import channel, make_team, post

C = "/api/v1/chats/channels"
M = "/api/v1/chats/messages"


async def _last_seq(db, channel_id: str) -> int:
    return await db.fetchval("SELECT last_seq FROM chats_channel WHERE id = $1::uuid", channel_id)


async def test_history_pages_by_seq_in_both_directions(api, team):
    ch = await channel(api, team.alice, team)
    for number in range(1, 8):
        message = await post(api, team.alice, ch["id"], f"message {number}")
        assert message["seq"] == number and message["text"] == f"message {number}"

    def seqs(page):
        return [message["seq"] for message in page]

    assert seqs(await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages")) == [1, 2, 3, 4, 5, 6, 7]
    assert seqs(await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?limit=3")) == [5, 6, 7]
    assert seqs(await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?before=5&limit=3")) == [2, 3, 4]
    assert seqs(await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?after=4&limit=2")) == [5, 6]
    assert await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?before=1") == []
    assert seqs(await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?after=1&before=5&limit=2")) == [2, 3]
    assert await api.ok(team.bob, "GET", f"{C}/{ch['id']}/messages?after=3&before=4") == []
    await api.problem(team.bob, "GET", f"{C}/{ch['id']}/messages?limit=0", 400)
    await api.problem(team.bob, "GET", f"{C}/{ch['id']}/messages?after=x", 400)


async def test_concurrent_posts_get_consecutive_sequence_numbers(api, team, db):
    ch = await channel(api, team.alice, team)
    senders = [team.alice, team.bob, team.carol] * 10
    posted = await asyncio.gather(*(post(api, user, ch["id"], f"n{index}") for index, user in enumerate(senders)))
    assert sorted(message["seq"] for message in posted) == list(range(1, 31))
    history = await api.ok(team.alice, "GET", f"{C}/{ch['id']}/messages?limit=200")
    assert [message["seq"] for message in history] == list(range(1, 31))
    assert {message["text"] for message in history} == {f"n{index}" for index in range(30)}
    assert await _last_seq(db, ch["id"]) == 30


async def test_markdown_is_rendered_with_mentions_and_safe_links(api, team):
    ch = await channel(api, team.alice, team)
    message = await post(api, team.alice, ch["id"],
                         "**hi** @bob and @carol@example.org, see https://example.org `@victor` @nobody @channel")
    html = message["html"]
    assert "<strong>hi</strong>" in html
    assert f'<span class="mention" data-user-id="{team.bob.id}">@bob</span>' in html
    assert f'data-user-id="{team.carol.id}"' in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">' in html
    assert "<code>@victor</code>" in html and "@nobody" in html and 'data-mention="channel"' in html
    assert sorted(message["mentions"]) == sorted([str(team.bob.id), str(team.carol.id)])
    assert message["mention_channel"] is True
    # Every read carries both the source and the HTML.
    fetched = await api.ok(team.bob, "GET", f"{M}/{message['id']}")
    assert (fetched["text"], fetched["html"]) == (message["text"], html)


XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "![x](javascript:alert(1))",
    "<svg/onload=alert(1)>",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<iframe src=//evil.example></iframe>",
    '[x](https://example.org "title\\" onmouseover=\\"alert(1)")',
    "<details open ontoggle=alert(1)>",
    "`<script>` and ```\n<script>alert(1)</script>\n```",
    "[a](vbscript:msgbox(1))",
]


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


SAFE_TAGS = {"p", "br", "strong", "em", "code", "pre", "a", "span", "del", "s", "blockquote", "ul", "ol", "li"}


def assert_inert(html: str) -> None:
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.found:
        assert tag in SAFE_TAGS, (tag, html)
        assert not any(name.startswith("on") or name in ("style", "src") for name in attrs), (tag, attrs)
        if tag == "a":
            assert attrs["href"].startswith(("http://", "https://", "mailto:")), attrs
            assert attrs["rel"] == "noopener noreferrer nofollow", attrs


@pytest.mark.parametrize("payload", XSS)
async def test_xss_payloads_come_out_inert(api, team, payload):
    ch = await channel(api, team.alice, team)
    message = await post(api, team.alice, ch["id"], payload)
    assert message["text"] == payload  # the source is kept as written
    assert_inert(message["html"])
    assert "<script" not in message["html"]


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "a\x00b", "  ", "x" * 81, "trailing\n"])
async def test_channel_names_must_be_plain_text(api, team, db, name):
    await api.problem(team.alice, "POST", C, 400, "validation-error",
                      json={"workspace_id": team.workspace_id, "name": name})
    assert await db.fetchval("SELECT count(*) FROM chats_channel") == 0


async def test_channel_lifecycle_and_managers(api, team, db):
    ch = await channel(api, team.alice, team, "General")
    assert ch["kind"] == "channel" and ch["member"] and not ch["private"]
    await api.problem(team.bob, "POST", C, 409, "channel-exists",
                      json={"workspace_id": team.workspace_id, "name": "general"})
    await api.problem(team.victor, "POST", C, 403, "forbidden",
                      json={"workspace_id": team.workspace_id, "name": "viewers"})
    await api.problem(team.mallory, "POST", C, 404, "not-found",
                      json={"workspace_id": team.workspace_id, "name": "outside"})
    renamed = await api.ok(team.alice, "PATCH", f"{C}/{ch['id']}", {"topic": "All hands"})
    assert renamed["topic"] == "All hands" and renamed["name"] == "General"
    await api.problem(team.bob, "PATCH", f"{C}/{ch['id']}", 403, "forbidden", json={"name": "mine"})
    listed = await api.ok(team.bob, "GET", f"{C}?workspace_id={team.workspace_id}")
    assert [(item["name"], item["member"]) for item in listed] == [("General", False)]
    await api.ok(team.bob, "POST", f"{C}/{ch['id']}/members", {"user_id": str(team.bob.id)}, status=204)
    await api.problem(team.bob, "POST", f"{C}/{ch['id']}/members", 403, "forbidden",
                      json={"user_id": str(team.carol.id)})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/members", 404, "not-found",
                      json={"user_id": str(team.mallory.id)})
    members = await api.ok(team.carol, "GET", f"{C}/{ch['id']}/members")
    assert {member["user_id"] for member in members} == {str(team.alice.id), str(team.bob.id)}
    await api.ok(team.bob, "DELETE", f"{C}/{ch['id']}/members/{team.bob.id}")
    await api.problem(team.bob, "DELETE", f"{C}/{ch['id']}/members/{team.bob.id}", 404, "not-found")
    await api.problem(team.bob, "DELETE", f"{C}/{ch['id']}", 403, "forbidden")
    await post(api, team.alice, ch["id"], "bye")
    await api.ok(team.alice, "DELETE", f"{C}/{ch['id']}")
    await api.problem(team.alice, "GET", f"{C}/{ch['id']}", 404, "not-found")
    assert await db.fetchval("SELECT count(*) FROM chats_message") == 0
    actions = [row["action"] for row in await db.fetch("SELECT action FROM sygmax_audit WHERE action LIKE 'chats.%' "
                                                       "ORDER BY seq")]
    assert actions == ["chats.channel.create", "chats.channel.update", "chats.member.add", "chats.member.remove",
                       "chats.channel.delete"]


async def test_private_channel_is_invisible_to_non_members(api, team, db):
    secret = await channel(api, team.alice, team, "secret", private=True)
    message = await post(api, team.alice, secret["id"], "the launch code is swordfish")
    missing = "00000000-0000-4000-8000-000000000000"
    for outsider in (team.bob, team.victor, team.mallory):
        for url in (f"{C}/{secret['id']}", f"{C}/{secret['id']}/messages", f"{C}/{secret['id']}/members",
                    f"{C}/{secret['id']}/pins", f"{M}/{message['id']}", f"{M}/{message['id']}/thread",
                    f"{M}/{message['id']}/history"):
            body = await api.problem(outsider, "GET", url, 404, "not-found")
            twin = await api.problem(outsider, "GET", url.replace(secret["id"], missing).replace(message["id"],
                                                                                                 missing), 404)
            assert body["detail"] == twin["detail"]  # indistinguishable from an id that does not exist
        await api.problem(outsider, "POST", f"{C}/{secret['id']}/messages", 404, "not-found", json={"text": "hi"})
        await api.problem(outsider, "POST", f"{C}/{secret['id']}/members", 404, "not-found",
                          json={"user_id": str(outsider.id)})
        await api.problem(outsider, "POST", f"{M}/{message['id']}/reactions", 404, "not-found", json={"emoji": "x"})
        await api.problem(outsider, "POST", f"{C}/{secret['id']}/read", 404, "not-found", json={"seq": 1})
    for outsider in (team.bob, team.victor):
        assert await api.ok(outsider, "GET", f"/api/v1/chats/search?q=swordfish&workspace_id={team.workspace_id}") == []
        await api.problem(outsider, "GET", f"/api/v1/chats/search?q=swordfish&workspace_id={team.workspace_id}"
                                           f"&channel_id={secret['id']}", 404, "not-found")
        listed = await api.ok(outsider, "GET", f"{C}?workspace_id={team.workspace_id}")
        assert secret["id"] not in {item["id"] for item in listed}
    # The workspace owner gets no implicit access to someone else's private channel either.
    hidden = await channel(api, team.bob, team, "bobs-room", private=True)
    await api.problem(team.alice, "GET", f"{C}/{hidden['id']}/messages", 404, "not-found")
    # Added, bob reads and posts; removed, it is gone again.
    await api.ok(team.alice, "POST", f"{C}/{secret['id']}/members", {"user_id": str(team.bob.id)}, status=204)
    assert [item["text"] for item in await api.ok(team.bob, "GET", f"{C}/{secret['id']}/messages")] == [
        "the launch code is swordfish"]
    await post(api, team.bob, secret["id"], "got it")
    hits = await api.ok(team.bob, "GET", f"/api/v1/chats/search?q=swordfish&workspace_id={team.workspace_id}")
    assert [hit["message"]["id"] for hit in hits] == [message["id"]]
    await api.ok(team.alice, "DELETE", f"{C}/{secret['id']}/members/{team.bob.id}")
    await api.problem(team.bob, "GET", f"{C}/{secret['id']}/messages", 404, "not-found")
    # Its last manager cannot leave it unmanageable.
    await api.problem(team.alice, "DELETE", f"{C}/{secret['id']}/members/{team.alice.id}", 409, "last-manager")
    assert await _last_seq(db, secret["id"]) == 2


async def test_viewers_read_but_do_not_post(api, team):
    ch = await channel(api, team.alice, team)
    await post(api, team.alice, ch["id"], "hello")
    assert len(await api.ok(team.victor, "GET", f"{C}/{ch['id']}/messages")) == 1
    await api.problem(team.victor, "POST", f"{C}/{ch['id']}/messages", 403, "forbidden", json={"text": "hi"})


async def test_edits_keep_history_and_only_the_author_edits(api, team):
    ch = await channel(api, team.alice, team)
    message = await post(api, team.alice, ch["id"], "first")
    edited = await api.ok(team.alice, "PATCH", f"{M}/{message['id']}", {"text": "second **bold**"})
    assert edited["text"] == "second **bold**" and "<strong>bold</strong>" in edited["html"]
    assert edited["edited_at"] and edited["version"] == 2 and edited["seq"] == message["seq"]
    again = await api.ok(team.alice, "PATCH", f"{M}/{message['id']}", {"text": "third"})
    assert again["version"] == 3
    history = await api.ok(team.bob, "GET", f"{M}/{message['id']}/history")
    assert [item["text"] for item in history] == ["first", "second **bold**"]
    assert history[1]["html"] == edited["html"]
    await api.problem(team.bob, "PATCH", f"{M}/{message['id']}", 403, "forbidden", json={"text": "hijack"})
    await api.problem(team.alice, "PATCH", f"{M}/{message['id']}", 400, "validation-error", json={"text": "  "})
    await api.problem(team.alice, "PATCH", f"{M}/{message['id']}", 400, "validation-error", json={"text": 5})
    assert (await api.ok(team.bob, "GET", f"{M}/{message['id']}"))["text"] == "third"


async def test_delete_removes_content_and_moderation_is_audited(api, team, db):
    ch = await channel(api, team.alice, team)
    own = await post(api, team.bob, ch["id"], "oops")
    await api.ok(team.bob, "PATCH", f"{M}/{own['id']}", {"text": "oops, edited"})
    await api.ok(team.carol, "POST", f"{M}/{own['id']}/reactions", {"emoji": "👍"}, status=200)
    await api.ok(team.carol, "POST", f"{M}/{own['id']}/pin", status=204)
    await api.problem(team.carol, "DELETE", f"{M}/{own['id']}", 403, "forbidden")
    await api.ok(team.bob, "DELETE", f"{M}/{own['id']}")
    gone = await api.ok(team.alice, "GET", f"{M}/{own['id']}")
    assert gone["deleted_at"] and gone["text"] == "" and gone["html"] == "" and gone["seq"] == 1
    assert gone["reactions"] == [] and not gone["pinned"]
    assert await api.ok(team.alice, "GET", f"{M}/{own['id']}/history") == []
    assert await db.fetchval("SELECT count(*) FROM chats_message_edit") == 0
    await api.problem(team.bob, "DELETE", f"{M}/{own['id']}", 404, "not-found")
    await api.problem(team.bob, "PATCH", f"{M}/{own['id']}", 409, "message-deleted", json={"text": "back"})
    # The owner moderates: deleting someone else's message is audited.
    other = await post(api, team.carol, ch["id"], "spam")
    await api.ok(team.alice, "DELETE", f"{M}/{other['id']}")
    row = await db.fetchrow("SELECT actor_id, details FROM sygmax_audit WHERE action = 'chats.message.delete'")
    assert row["actor_id"] == team.alice.id and str(team.carol.id) in row["details"]


async def test_reactions(api, team):
    ch = await channel(api, team.alice, team)
    message = await post(api, team.alice, ch["id"], "react to me")
    url = f"{M}/{message['id']}/reactions"
    await api.ok(team.bob, "POST", url, {"emoji": "👍"}, status=200)
    await api.ok(team.bob, "POST", url, {"emoji": "👍"}, status=200)  # twice is once
    await api.ok(team.carol, "POST", url, {"emoji": ":tada:"}, status=200)
    reactions = await api.ok(team.carol, "POST", url, {"emoji": "👍"}, status=200)
    assert reactions == [{"emoji": "👍", "count": 2, "user_ids": [str(team.bob.id), str(team.carol.id)]},
                         {"emoji": ":tada:", "count": 1, "user_ids": [str(team.carol.id)]}]
    after = await api.ok(team.bob, "DELETE", f"{url}/👍", status=200)
    assert after == [{"emoji": ":tada:", "count": 1, "user_ids": [str(team.carol.id)]},
                     {"emoji": "👍", "count": 1, "user_ids": [str(team.carol.id)]}]  # by each emoji's first use
    await api.problem(team.bob, "DELETE", f"{url}/👍", 404, "not-found")
    await api.problem(team.bob, "POST", url, 400, "validation-error", json={"emoji": "<b>"})
    await api.problem(team.bob, "DELETE", f"{url}/a%20b", 400, "validation-error")
    await api.problem(team.victor, "POST", url, 403, "forbidden", json={"emoji": "👍"})
    assert (await api.ok(team.alice, "GET", f"{M}/{message['id']}"))["version"] == 5


async def test_pins(api, team):
    ch = await channel(api, team.alice, team)
    first = await post(api, team.alice, ch["id"], "pin me")
    second = await post(api, team.alice, ch["id"], "and me")
    await api.ok(team.bob, "POST", f"{M}/{first['id']}/pin", status=204)
    await api.ok(team.bob, "POST", f"{M}/{second['id']}/pin", status=204)
    pinned = await api.ok(team.carol, "GET", f"{C}/{ch['id']}/pins")
    assert [item["id"] for item in pinned] == [second["id"], first["id"]] and pinned[0]["pinned"]
    await api.ok(team.bob, "DELETE", f"{M}/{second['id']}/pin")
    await api.problem(team.bob, "DELETE", f"{M}/{second['id']}/pin", 404, "not-found")
    assert [item["id"] for item in await api.ok(team.carol, "GET", f"{C}/{ch['id']}/pins")] == [first["id"]]


async def test_threads(api, team):
    ch = await channel(api, team.alice, team)
    other = await channel(api, team.alice, team, "other")
    root = await post(api, team.alice, ch["id"], "root")
    reply = await post(api, team.bob, ch["id"], "reply", thread_root_id=root["id"])
    nested = await post(api, team.carol, ch["id"], "reply to reply", thread_root_id=reply["id"])
    await post(api, team.alice, ch["id"], "not in the thread")
    assert nested["thread_root_id"] == root["id"]  # replies to a reply join the root's thread
    thread = await api.ok(team.carol, "GET", f"{M}/{reply['id']}/thread")
    assert [item["text"] for item in thread] == ["root", "reply", "reply to reply"]
    assert thread[0]["reply_count"] == 2
    await api.problem(team.alice, "POST", f"{C}/{other['id']}/messages", 404, "not-found",
                      json={"text": "x", "thread_root_id": root["id"]})


async def test_read_markers_and_unread_counts(api, team, db):
    ch = await channel(api, team.alice, team)
    for text in ("one", "two @bob", "three"):
        await post(api, team.alice, ch["id"], text)
    await api.problem(team.bob, "POST", f"{C}/{ch['id']}/read", 409, "not-a-member", json={"seq": 1})
    await api.ok(team.bob, "POST", f"{C}/{ch['id']}/members", {"user_id": str(team.bob.id)}, status=204)
    unread = await api.ok(team.bob, "GET", f"/api/v1/chats/unread?workspace_id={team.workspace_id}")
    assert unread == [{"channel_id": ch["id"], "unread": 3, "mentions": 1, "last_seq": 3, "last_read_seq": 0}]
    marked = await api.ok(team.bob, "POST", f"{C}/{ch['id']}/read", {"seq": 2}, status=200)
    assert marked == {"channel_id": ch["id"], "last_read_seq": 2, "unread": 1}
    backwards = await api.ok(team.bob, "POST", f"{C}/{ch['id']}/read", {"seq": 1}, status=200)
    assert backwards["last_read_seq"] == 2  # markers never move back
    await api.problem(team.bob, "POST", f"{C}/{ch['id']}/read", 422, "seq-out-of-range", json={"seq": 4})
    await api.problem(team.bob, "POST", f"{C}/{ch['id']}/read", 400, "validation-error", json={"seq": -1})
    await post(api, team.bob, ch["id"], "my own message is read")
    listed = await api.ok(team.bob, "GET", f"{C}?workspace_id={team.workspace_id}")
    assert (listed[0]["unread"], listed[0]["last_read_seq"]) == (0, 4)
    receipts = await api.ok(team.alice, "GET", f"{C}/{ch['id']}/members")
    assert {item["user_id"]: item["last_read_seq"] for item in receipts} == {str(team.alice.id): 3,
                                                                            str(team.bob.id): 4}


async def test_search_is_language_aware_and_escapes_excerpts(api, team):
    ch = await channel(api, team.alice, team)
    running = await post(api, team.alice, ch["id"], "The deployment is running smoothly, x < y & z")
    cats = await post(api, team.bob, ch["id"], "Our cats were sleeping")
    deleted = await post(api, team.bob, ch["id"], "runs away, then deleted")
    await api.ok(team.bob, "DELETE", f"{M}/{deleted['id']}")
    url = f"/api/v1/chats/search?workspace_id={team.workspace_id}&q="
    hits = await api.ok(team.carol, "GET", url + "runs")
    assert [hit["message"]["id"] for hit in hits] == [running["id"]]  # stemmed: runs ~ running
    assert "<mark>running</mark>" in hits[0]["headline"] and "x &lt; y &amp; z" in hits[0]["headline"]
    assert [hit["message"]["id"] for hit in await api.ok(team.carol, "GET", url + "cat sleep")] == [cats["id"]]
    assert [hit["message"]["id"] for hit in await api.ok(team.carol, "GET", url + "deploy")] == [running["id"]]
    assert await api.ok(team.carol, "GET", url + "%22cats%20sleeping%22%20-our") == []
    assert await api.ok(team.carol, "GET", url + "%3C%3E%27%5C") == []  # punctuation only: no error
    await api.problem(team.mallory, "GET", url + "runs", 404, "not-found")
    await api.problem(team.carol, "GET", f"/api/v1/chats/search?workspace_id={team.workspace_id}&q=", 400)


async def test_direct_and_group_conversations(api, team):
    base = {"workspace_id": team.workspace_id}
    direct = await api.ok(team.alice, "POST", "/api/v1/chats/direct", {**base, "user_ids": [str(team.bob.id)]})
    assert direct["kind"] == "direct" and direct["private"]
    assert sorted(direct["member_ids"]) == sorted([str(team.alice.id), str(team.bob.id)])
    again = await api.ok(team.bob, "POST", "/api/v1/chats/direct", {**base, "user_ids": [str(team.alice.id)]},
                         status=200)
    assert again["id"] == direct["id"]
    await post(api, team.bob, direct["id"], "psst")
    await api.problem(team.carol, "GET", f"{C}/{direct['id']}/messages", 404, "not-found")
    await api.problem(team.alice, "POST", f"{C}/{direct['id']}/members", 409, "direct-conversation",
                      json={"user_id": str(team.carol.id)})
    group = await api.ok(team.alice, "POST", "/api/v1/chats/direct",
                         {**base, "user_ids": [str(team.bob.id), str(team.carol.id)]})
    assert group["kind"] == "group" and group["id"] != direct["id"]
    await api.problem(team.alice, "POST", "/api/v1/chats/direct", 404, "not-found",
                      json={**base, "user_ids": [str(team.mallory.id)]})
    await api.problem(team.alice, "POST", "/api/v1/chats/direct", 400, "validation-error",
                      json={**base, "user_ids": []})
    listed = await api.ok(team.carol, "GET", f"{C}?workspace_id={team.workspace_id}")
    assert [item["id"] for item in listed] == [group["id"]]


async def test_idempotency_key_returns_the_first_message(api, team, db):
    ch = await channel(api, team.alice, team)
    headers = {**team.alice.headers, "Idempotency-Key": "client-42"}
    first = await api.client.post(f"{C}/{ch['id']}/messages", json={"text": "once"}, headers=headers)
    second = await api.client.post(f"{C}/{ch['id']}/messages", json={"text": "once"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert await _last_seq(db, ch["id"]) == 1


async def test_oversized_messages_and_bad_input_change_nothing(api, team, db):
    ch = await channel(api, team.alice, team)
    body = await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 413, "message-too-large",
                             json={"text": "x" * 10_001})
    assert body["limit"] == 10_000 and body["field"] == "text"
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "malformed-body", content=b'{"text": ')
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error", json={"text": 7})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error",
                      json={"text": "hi", "colour": "red"})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error", json={"text": " "})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error", json={})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error",
                      json={"text": "nul\x00byte"})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 400, "validation-error",
                      json={"text": "hi", "thread_root_id": "not-a-uuid"})
    await api.problem(team.alice, "POST", f"{C}/00000000-0000-4000-8000-000000000000/messages", 404, "not-found",
                      json={"text": "hi"})
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 404, "not-found",
                      json={"text": "hi", "attachment_ids": ["00000000-0000-4000-8000-000000000000"]})
    await api.problem(None, "POST", f"{C}/{ch['id']}/messages", 401, json={"text": "hi"})
    assert await _last_seq(db, ch["id"]) == 0
    assert await db.fetchval("SELECT count(*) FROM chats_message") == 0


async def test_message_flood_is_rate_limited_per_user(chat_api, example_user, db):
    async with chat_api(SYGMAX_CHATS_MESSAGES_PER_MINUTE="3") as limited:
        team = await make_team(limited, example_user)
        ch = await channel(limited, team.alice, team)
        for number in range(3):
            await post(limited, team.alice, ch["id"], f"ok {number}")
        response = await limited.call(team.alice, "POST", f"{C}/{ch['id']}/messages", {"text": "too many"})
        assert response.status_code == 429, response.text
        assert response.json()["type"].endswith("/rate-limited") and int(response.headers["retry-after"]) >= 1
        await post(limited, team.bob, ch["id"], "bob has his own budget")
        assert await _last_seq(db, ch["id"]) == 4
