"""The Google Reader API with the requests real clients send (NetNewsWire, Reeder, FeedMe):
form-encoded POSTs, ``Authorization: GoogleLogin auth=...``, item ids in long (hex) and
decimal forms, streams by feed, label and state, continuation, and the refusals."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.conftest import assert_problem
from tests.feeds.support import rss

G = "/api/v1/feeds/greader"
R = G + "/reader/api/0"
FORM = {"content-type": "application/x-www-form-urlencoded"}
READING_LIST = "user/-/state/com.google/reading-list"


async def login(client, email: str, password: str, output: str | None = None):
    body = f"Email={quote(email)}&Passwd={quote(password)}&service=reader&accountType=HOSTED_OR_GOOGLE&client=NetNewsWire"
    if output:
        body += f"&output={output}"
    return await client.post(G + "/accounts/ClientLogin", content=body, headers=FORM)


@pytest.fixture
async def reader(api, example_user, feed_server):
    """alice, with an API password, two subscriptions (one in a folder) and a logged-in client."""
    alice = await example_user("alice")
    await api.ok(alice, "PUT", "/api/v1/feeds/preferences", {"api_password": "reader api password"})
    feed_server.documents["tech"] = rss([("t3", "Third"), ("t2", "Second"), ("t1", "First")], title="Tech news")
    tech = await api.ok(alice, "POST", "/api/v1/feeds/subscriptions", {"url": feed_server.url("/dyn/tech"),
                                                                      "folder": "Tech"})
    misc = await api.ok(alice, "POST", "/api/v1/feeds/subscriptions", {"url": feed_server.url("/f/atom.xml")})
    response = await login(api.client, "alice@example.org", "reader api password")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    lines = dict(line.split("=", 1) for line in response.text.strip().splitlines())
    assert set(lines) == {"SID", "LSID", "Auth"}
    headers = {"Authorization": f"GoogleLogin auth={lines['Auth']}"}
    return api.client, headers, alice, tech, misc


async def test_client_flow(reader):
    client, auth, alice, tech, misc = reader
    token = await client.get(R + "/token", headers=auth)
    assert token.status_code == 200 and len(token.text) == 57
    info = (await client.get(R + "/user-info?output=json", headers=auth)).json()
    assert info["userEmail"] == "alice@example.org" and info["userId"] == str(alice.id)

    tags = (await client.get(R + "/tag/list?output=json", headers=auth)).json()["tags"]
    assert {"id": "user/-/state/com.google/starred"} in tags
    assert {"id": "user/-/label/Tech", "type": "folder"} in tags

    subs = (await client.get(R + "/subscription/list?output=json", headers=auth)).json()["subscriptions"]
    by_id = {sub["id"]: sub for sub in subs}
    assert by_id[f"feed/{tech['id']}"]["categories"] == [{"id": "user/-/label/Tech", "label": "Tech"}]
    assert by_id[f"feed/{tech['id']}"]["title"] == "Tech news" and by_id[f"feed/{misc['id']}"]["categories"] == []

    # Sync: unread ids first (decimal), then their contents by long id.
    ids = (await client.get(R + f"/stream/items/ids?s={READING_LIST}&n=1000&output=json"
                                f"&xt=user/-/state/com.google/read", headers=auth)).json()["itemRefs"]
    assert len(ids) == 5 and all(ref["id"].isdigit() for ref in ids)
    long_ids = [f"tag:google.com,2005:reader/item/{int(ref['id']):016x}" for ref in ids[:3]]
    body = "&".join(f"i={quote(value)}" for value in long_ids) + "&T=" + token.text
    contents = await client.post(R + "/stream/items/contents?output=json", content=body, headers={**auth, **FORM})
    assert contents.status_code == 200, contents.text
    items = contents.json()["items"]
    assert sorted(item["id"] for item in items) == sorted(long_ids)
    first = items[0]
    assert READING_LIST in first["categories"] and first["origin"]["streamId"].startswith("feed/")
    assert first["alternate"][0]["href"].startswith("https://") and "content" in first["summary"]

    # Mark one read (long id) and star another (decimal id), as edit-tag does.
    read_one, star_one = long_ids[0], ids[1]["id"]
    for form in (f"i={quote(read_one)}&a=user/-/state/com.google/read&T={token.text}",
                 f"i={star_one}&a=user/-/state/com.google/starred"):
        edited = await client.post(R + "/edit-tag?output=json", content=form, headers={**auth, **FORM})
        assert edited.status_code == 200 and edited.text == "OK"
    unread = (await client.get(R + f"/stream/items/ids?s={READING_LIST}&n=100&xt=user/-/state/com.google/read",
                               headers=auth)).json()["itemRefs"]
    assert len(unread) == 4
    starred = (await client.get(R + "/stream/items/ids?s=user/-/state/com.google/starred&n=100",
                                headers=auth)).json()["itemRefs"]
    assert [ref["id"] for ref in starred] == [star_one]

    counts = (await client.get(R + "/unread-count?output=json", headers=auth)).json()["unreadcounts"]
    by_stream = {entry["id"]: entry["count"] for entry in counts}
    assert by_stream[READING_LIST] == 4 and by_stream["user/-/label/Tech"] == sum(
        by_stream[f"feed/{sub}"] for sub in (tech["id"],))

    # Stream contents of a label, oldest first, paged with the continuation.
    page = (await client.get(R + "/stream/contents/user/-/label/Tech?n=2&r=o", headers=auth)).json()
    assert [item["title"] for item in page["items"]] == ["First", "Second"] and page["continuation"]
    rest = (await client.get(R + f"/stream/contents/user/-/label/Tech?n=2&r=o&c={page['continuation']}",
                             headers=auth)).json()
    assert [item["title"] for item in rest["items"]] == ["Third"] and "continuation" not in rest

    # Mark a whole feed read.
    done = await client.post(R + "/mark-all-as-read", content=f"s=feed/{tech['id']}&ts=9999999999000000",
                             headers={**auth, **FORM})
    assert done.status_code == 200 and done.text == "OK"
    feed_items = (await client.get(R + f"/stream/contents/feed/{tech['id']}?xt=user/-/state/com.google/read",
                                   headers=auth)).json()["items"]
    assert feed_items == []


async def test_subscription_management(reader, feed_server):
    client, auth, alice, tech, misc = reader
    added = await client.post(R + "/subscription/quickadd?output=json",
                              content=f"quickadd={quote(feed_server.url('/f/rss1.xml'))}", headers={**auth, **FORM})
    assert added.status_code == 200, added.text
    stream = added.json()["streamId"]
    assert added.json()["numResults"] == 1 and stream.startswith("feed/")
    moved = await client.post(R + "/subscription/edit",
                              content=f"ac=edit&s={stream}&a=user/-/label/Deutsch&t={quote('Meine Bäume')}",
                              headers={**auth, **FORM})
    assert moved.status_code == 200 and moved.text == "OK"
    subs = (await client.get(R + "/subscription/list?output=json", headers=auth)).json()["subscriptions"]
    entry = next(sub for sub in subs if sub["id"] == stream)
    assert entry["title"] == "Meine Bäume" and entry["categories"][0]["label"] == "Deutsch"
    subscribed = await client.post(R + "/subscription/edit",
                                   content=f"ac=subscribe&s=feed/{quote(feed_server.url('/f/feed.json'))}",
                                   headers={**auth, **FORM})
    assert subscribed.status_code == 200
    gone = await client.post(R + "/subscription/edit", content=f"ac=unsubscribe&s={stream}", headers={**auth, **FORM})
    assert gone.status_code == 200
    titles = {sub["title"] for sub in (await client.get(R + "/subscription/list", headers=auth)).json()["subscriptions"]}
    assert titles == {"Tech news", "Atom Example Blog", "JSON Feed Example"}


async def test_login_refusals_and_other_credentials(api, example_user, db):
    alice = await example_user("alice")
    client = api.client
    assert_problem(await login(client, "alice@example.org", "no password set yet"), 401, "invalid-credentials")
    await api.ok(alice, "PUT", "/api/v1/feeds/preferences", {"api_password": "reader api password"})
    assert_problem(await login(client, "alice@example.org", "wrong password!"), 401, "invalid-credentials")
    assert_problem(await login(client, "nobody@example.org", "reader api password"), 401, "invalid-credentials")
    # A personal API token of the same user works as the password; someone else's does not.
    bob = await example_user("bob")
    assert_problem(await login(client, "alice@example.org", bob.token), 401, "invalid-credentials")
    ok = await login(client, "alice@example.org", alice.token, output="json")
    assert ok.status_code == 200 and set(ok.json()) == {"SID", "LSID", "Auth"}
    session = ok.json()["Auth"]
    assert (await client.get(R + "/user-info", headers={"Authorization": f"GoogleLogin auth={session}"})).status_code == 200
    # The token itself, straight in the header, too.
    assert (await client.get(R + "/user-info", headers={"Authorization": f"GoogleLogin auth={alice.token}"})).status_code == 200
    for header in ({}, {"Authorization": "GoogleLogin auth=sgr_forged"}, {"Authorization": "GoogleLogin auth="},
                   {"Authorization": "GoogleLogin auth=" + "x" * 500}):
        assert (await client.get(R + "/subscription/list", headers=header)).status_code == 401
    # A new API password ends existing client logins.
    await api.ok(alice, "PUT", "/api/v1/feeds/preferences", {"api_password": "another api password"})
    assert (await client.get(R + "/user-info", headers={"Authorization": f"GoogleLogin auth={session}"})).status_code == 401
    assert_problem(await client.post(G + "/accounts/ClientLogin", content="Email=alice%40example.org",
                                     headers=FORM), 400, "validation-error")


async def test_items_of_other_users_are_invisible(reader, api, example_user, feed_server):
    client, auth, alice, tech, misc = reader
    mallory = await example_user("mallory")
    await api.ok(mallory, "PUT", "/api/v1/feeds/preferences", {"api_password": "mallory api password"})
    await api.ok(mallory, "POST", "/api/v1/feeds/subscriptions", {"url": feed_server.url("/f/rss2.xml")})
    response = await login(client, "mallory@example.org", "mallory api password")
    mallory_auth = {"Authorization": "GoogleLogin auth=" + response.text.split("Auth=")[1].strip()}
    alice_ids = (await client.get(R + f"/stream/items/ids?s={READING_LIST}&n=100", headers=auth)).json()["itemRefs"]
    body = "&".join(f"i={ref['id']}" for ref in alice_ids)
    seen = await client.post(R + "/stream/items/contents", content=body, headers={**mallory_auth, **FORM})
    assert seen.json()["items"] == []
    await client.post(R + "/edit-tag", content=body + "&a=user/-/state/com.google/read",
                      headers={**mallory_auth, **FORM})
    still = (await client.get(R + f"/stream/items/ids?s={READING_LIST}&n=100&xt=user/-/state/com.google/read",
                              headers=auth)).json()["itemRefs"]
    assert len(still) == 5
    assert (await client.get(R + f"/stream/contents/feed/{tech['id']}", headers=mallory_auth)).status_code == 404


@pytest.mark.parametrize("ids", ["not-an-id", "tag:google.com,2005:reader/item/zzzz", "99999999999999999999999",
                                 "-0", "0"])
async def test_malformed_item_ids_select_nothing(reader, ids):
    client, auth, *_ = reader
    edited = await client.post(R + "/edit-tag", content=f"i={quote(ids)}&a=user/-/state/com.google/read",
                               headers={**auth, **FORM})
    assert edited.status_code == 200 and edited.text == "OK"
    unread = (await client.get(R + f"/stream/items/ids?s={READING_LIST}&n=100&xt=user/-/state/com.google/read",
                               headers=auth)).json()["itemRefs"]
    assert len(unread) == 5
    contents = await client.post(R + "/stream/items/contents", content=f"i={quote(ids)}", headers={**auth, **FORM})
    assert contents.json()["items"] == []


async def test_bad_forms(reader):
    client, auth, *_ = reader
    for path, body in [("/subscription/edit", "ac=delete&s=feed/x"), ("/mark-all-as-read", "ts=1"),
                       ("/mark-all-as-read", "s=feed/x&ts=yesterday")]:
        assert_problem(await client.post(R + path, content=body, headers={**auth, **FORM}), 400, "validation-error")
    assert_problem(await client.post(R + "/subscription/edit", content="ac=edit", headers={**auth, **FORM}), 404,
                   "not-found")
    nothing = await client.post(R + "/edit-tag", content="a=user/-/state/com.google/read", headers={**auth, **FORM})
    assert nothing.status_code == 200 and nothing.text == "OK"


async def test_unknown_streams(reader):
    client, auth, *_ = reader
    for stream in ("feed/not-a-uuid", "feed/00000000-0000-0000-0000-000000000000", "splice/whatever"):
        response = await client.get(R + f"/stream/contents/{stream}", headers=auth)
        assert response.status_code == 404, (stream, response.text)
    assert (await client.get(R + "/stream/contents/user/-/label/Nothing", headers=auth)).json()["items"] == []
