"""Semantic search over chat messages and feed items, filtered by the kernel's ACL policy.

The chats and feeds modules are not enabled here: the test publishes their events itself and
makes the private channel's ACL directly in the kernel's policy tables, as the chats module
would, which proves the AI module needs nothing but the event contracts and the policy.
"""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from sygmax.events.bus import EventBus
from sygmax.events.contracts import (
    ChatMessageDeleted,
    ChatMessageEdited,
    ChatMessagePosted,
    FeedItemAdded,
    FeedItemRemoved,
)
from tests.ai.conftest import async_wait_for
from tests.conftest import assert_problem


@pytest.fixture
def api(api_worker):
    return api_worker  # these tests need the worker's event consumers


@pytest.fixture
async def bus(ai_running):
    client = Redis.from_url(ai_running.redis_url)
    yield EventBus(client, ai_running.settings().events)
    await client.aclose()


async def make_workspace(db, owner_id, members=()) -> uuid.UUID:
    workspace_id = uuid.uuid4()
    await db.execute("INSERT INTO sygmax_workspace (id, name, created_by) VALUES ($1, 'Acme', $2)",
                     workspace_id, owner_id)
    await db.execute("INSERT INTO sygmax_membership (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
                     workspace_id, owner_id)
    for member in members:
        await db.execute("INSERT INTO sygmax_membership (workspace_id, user_id, role) VALUES ($1, $2, 'editor')",
                         workspace_id, member)
    return workspace_id


async def restrict(db, workspace_id, channel_id, *granted_user_ids) -> None:
    """A private channel: restricted, readable only by the users granted access (kernel ACL tables)."""
    await db.execute("INSERT INTO sygmax_acl_object (workspace_id, object_type, object_id, restricted) "
                     "VALUES ($1, 'chats.channel', $2, true)", workspace_id, str(channel_id))
    for user_id in granted_user_ids:
        await db.execute("INSERT INTO sygmax_acl_grant (workspace_id, object_type, object_id, principal_kind, "
                         "user_id, permissions) VALUES ($1, 'chats.channel', $2, 'user', $3, '{chats.read}')",
                         workspace_id, str(channel_id), user_id)


def posted(workspace_id, channel_id, author_id, text, message_id=None) -> ChatMessagePosted:
    return ChatMessagePosted(message_id=message_id or uuid.uuid4(), channel_id=channel_id, workspace_id=workspace_id,
                             author_id=author_id, seq=1, text=text)


async def embedded(db, *source_ids) -> None:
    """Until the worker recorded them and the ai process embedded them (or removed them)."""
    async def done():
        rows = await db.fetch("SELECT source_id, vector IS NOT NULL OR deleted AS ready FROM ai_vector "
                              "WHERE source_id = ANY($1::uuid[])", list(source_ids))
        return len(rows) == len(source_ids) and all(row["ready"] for row in rows)
    await async_wait_for(done, timeout=120)


async def search(api, user, q, **options):
    response = await api.post("/api/v1/ai/search", json={"q": q, **options}, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["hits"]


DISTRACTORS = [
    "Lunch is at noon in the cafeteria today, pizza and salad.",
    "Please review the pull request for the login page before Friday.",
    "The printer on the third floor is out of toner again.",
    "Happy birthday Sam! Cake in the kitchen at 3pm.",
    "The quarterly sales numbers look strong in the northern region.",
]


async def test_relevant_message_ranks_first_and_private_channels_stay_private(api, bus, ai_db, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    workspace_id = await make_workspace(ai_db, alice.id, members=[bob.id])
    general, secret = uuid.uuid4(), uuid.uuid4()
    await restrict(ai_db, workspace_id, secret, alice.id)  # bob is a member of the workspace, not of #secret
    relevant = posted(workspace_id, general, alice.id, "The server room air conditioning broke and the "
                                                       "machines are overheating.")
    hidden = posted(workspace_id, secret, alice.id, "Merger talks: the air conditioning company will be "
                                                    "acquired next month, keep it quiet.")
    events = [relevant, hidden, *(posted(workspace_id, general, alice.id, text) for text in DISTRACTORS)]
    await bus.publish_many(events)
    await embedded(ai_db, *(event.message_id for event in events))

    hits = await search(api, alice, "cooling failure in the data center")
    assert hits[0]["source_id"] == str(relevant.message_id), hits
    assert hits[0]["object_id"] == str(general) and hits[0]["source_type"] == "chats.message"
    assert str(hidden.message_id) in {hit["source_id"] for hit in await search(api, alice, "air conditioning")}

    for query in ("air conditioning company acquired", "merger talks", "keep it quiet"):
        bob_hits = await search(api, bob, query, limit=50)
        assert str(hidden.message_id) not in {hit["source_id"] for hit in bob_hits}, query
        assert all(hit["object_id"] != str(secret) for hit in bob_hits)
    # Someone outside the workspace sees none of it.
    carol = await make_user("carol")
    assert await search(api, carol, "air conditioning overheating", limit=50) == []


async def test_edits_reembed_and_deletes_remove(api, bus, ai_db, make_user):
    alice = await make_user("alice")
    workspace_id = await make_workspace(ai_db, alice.id)
    channel = uuid.uuid4()
    message = posted(workspace_id, channel, alice.id, "Our team picnic will be at the lake on Saturday.")
    others = [posted(workspace_id, channel, alice.id, text) for text in DISTRACTORS]
    await bus.publish_many([message, *others])
    await embedded(ai_db, message.message_id, *(o.message_id for o in others))
    assert (await search(api, alice, "picnic by the lake", workspace_id=str(workspace_id)))[0]["source_id"] == \
        str(message.message_id)

    await bus.publish(ChatMessageEdited(message_id=message.message_id, channel_id=channel, workspace_id=workspace_id,
                                        editor_id=alice.id, text="The database migration is scheduled for midnight."))
    await async_wait_for(lambda: ai_db.fetchval("SELECT vector IS NOT NULL AND text LIKE 'The database%' "
                                                "FROM ai_vector WHERE source_id = $1", message.message_id))
    top = (await search(api, alice, "database migration schedule", workspace_id=str(workspace_id)))[0]
    assert top["source_id"] == str(message.message_id) and "migration" in top["text"]

    await bus.publish(ChatMessageDeleted(message_id=message.message_id, channel_id=channel, workspace_id=workspace_id))
    await async_wait_for(lambda: ai_db.fetchval("SELECT deleted FROM ai_vector WHERE source_id = $1",
                                                message.message_id))
    hits = await search(api, alice, "database migration schedule", workspace_id=str(workspace_id), limit=50)
    assert str(message.message_id) not in {hit["source_id"] for hit in hits}


async def test_personal_feed_items_only_reach_their_subscriber(api, bus, ai_db, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    workspace_id = await make_workspace(ai_db, alice.id, members=[bob.id])
    personal = FeedItemAdded(item_id=uuid.uuid4(), subscription_id=uuid.uuid4(), user_id=alice.id, workspace_id=None,
                             title="Volcano erupts in Iceland", url=None,
                             text="Lava flows reached the village of Grindavik overnight.")
    shared = FeedItemAdded(item_id=uuid.uuid4(), subscription_id=uuid.uuid4(), user_id=None,
                           workspace_id=workspace_id, title="Volcanic ash grounds flights",
                           url="https://news.example/ash", text="Airlines cancelled flights across Europe.")
    await bus.publish_many([personal, shared])
    await embedded(ai_db, personal.item_id, shared.item_id)

    alice_hits = {hit["source_id"] for hit in await search(api, alice, "volcano eruption lava", scope="feeds")}
    assert {str(personal.item_id), str(shared.item_id)} <= alice_hits
    bob_hits = {hit["source_id"] for hit in await search(api, bob, "volcano eruption lava", scope="feeds", limit=50)}
    assert str(shared.item_id) in bob_hits and str(personal.item_id) not in bob_hits
    # Scope filters by source: no chat message answers a feeds-only search.
    assert all(hit["source_type"] == "feeds.item" for hit in await search(api, alice, "volcano", scope="feeds"))

    await bus.publish(FeedItemRemoved(item_id=shared.item_id, subscription_id=shared.subscription_id))
    await async_wait_for(lambda: ai_db.fetchval("SELECT deleted FROM ai_vector WHERE source_id = $1", shared.item_id))
    assert str(shared.item_id) not in {h["source_id"] for h in await search(api, bob, "volcanic ash", limit=50)}


async def test_search_of_an_unknown_workspace_finds_nothing(api, make_user):
    alice = await make_user("alice")
    assert await search(api, alice, "anything at all", workspace_id=str(uuid.uuid4())) == []
    response = await api.post("/api/v1/ai/search", json={"q": "x", "workspace_id": "not-a-uuid"},
                              headers=alice.headers)
    assert_problem(response, 400, "validation-error")
