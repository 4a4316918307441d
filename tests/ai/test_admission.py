"""Admission control against a real api server: bounded queues, Retry-After, quotas, cancellation."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.ai.conftest import async_wait_for
from tests.conftest import assert_problem

LONG = " ".join(f"Paragraph {i}: the committee discussed budgets, hiring plans, office moves and the new "
                f"coffee machine at great length without reaching any decision." for i in range(12))
QUEUE = "sygmax:ai:q:smollm2-135m-instruct"


async def first_token(response: httpx.Response) -> bool:
    async for line in response.aiter_lines():
        if line.startswith("event: token"):
            return True
    return False


async def test_full_queue_answers_429_with_retry_after_and_leavers_free_their_slot(api_server, ai_running, make_user):
    base = api_server(queue_size=1, cache_ttl_s=0)
    alice = await make_user("alice")
    redis = ai_running.redis()
    async with httpx.AsyncClient(base_url=base, headers=alice.headers, timeout=120) as client:
        # Eight long requests at once against a queue of one: one runs, one waits, the rest are
        # refused at once with a Retry-After instead of piling up (admission takes milliseconds,
        # a translation of this text takes seconds).
        requests = [client.build_request("POST", "/api/v1/ai/translate",
                                         json={"text": f"{i}. {LONG}", "target_language": "French", "stream": True,
                                               "max_tokens": 500}) for i in range(8)]
        responses = await asyncio.gather(*(client.send(request, stream=True) for request in requests))
        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(admitted) + len(refused) == 8 and len(admitted) >= 2 and len(refused) >= 1, \
            [r.status_code for r in responses]
        for response in refused:
            await response.aread()
            body = assert_problem(response, 429, "ai-queue-full")
            assert int(response.headers["retry-after"]) >= 1 and "smollm2" in body["detail"]
        # Wait until the model writes for one of them (a tiny model may answer some with nothing).
        for response in admitted:
            if await first_token(response):
                break
        else:
            raise AssertionError("no admitted request got a token")
        # The clients give up: the waiting one leaves the queue, the running one stops generating.
        for response in responses:
            await response.aclose()
    await async_wait_for(lambda: asyncio.to_thread(lambda: redis.llen(QUEUE) == 0), timeout=30)
    cancelled = await async_wait_for(lambda: asyncio.to_thread(_cancelled_outputs, redis), timeout=60)
    assert cancelled
    metrics = httpx.get(base + "/metrics").text
    assert 'sygmax_ai_rejections_total{model="smollm2-135m-instruct",reason="queue_full"}' in metrics
    redis.close()


async def test_cancelling_a_queued_job_takes_it_off_the_queue(ai_running):
    from redis.asyncio import Redis

    from plugins.ai.protocol import AiClient, JobRequest, queue_key

    client = Redis.from_url(ai_running.redis_url)
    ai = AiClient(client, ai_running.settings().section("ai"))
    # A job for a model nobody serves stays queued: pushed as the admission script would.
    job = JobRequest(id="cancel-test", op="summarize", model="nobody-serves-this", text="x", deadline=1.0)
    from plugins.ai.protocol import encode_job

    await client.rpush(queue_key(job.model), encode_job(job))
    await ai.cancel(job)
    assert await client.llen(queue_key(job.model)) == 0
    assert await client.exists("sygmax:ai:cancelled:cancel-test")
    await client.aclose()


def _cancelled_outputs(redis) -> list[str]:
    found = []
    for key in redis.scan_iter("sygmax:ai:out:*"):
        entries = redis.xrevrange(key, count=1)
        if entries and entries[0][1].get(b"k") == b"error" and b'"cancelled"' in entries[0][1][b"v"]:
            found.append(key.decode())
    return found


async def test_per_user_quota(api_server, make_user):
    base = api_server(quota_per_minute=2, cache_ttl_s=0)
    alice, bob = await make_user("alice"), await make_user("bob")
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for _ in range(2):
            ok = await client.post("/api/v1/ai/entities", json={"text": "Berlin is in Germany."}, headers=alice.headers)
            assert ok.status_code == 200, ok.text
        refused = await client.post("/api/v1/ai/entities", json={"text": "Rome is in Italy."}, headers=alice.headers)
        assert_problem(refused, 429, "ai-quota-exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Quotas are per user: bob is not affected.
        assert (await client.post("/api/v1/ai/entities", json={"text": "Oslo is in Norway."},
                                  headers=bob.headers)).status_code == 200


async def test_prefer_respond_async_gives_a_job(api_server, make_user):
    base = api_server()
    alice = await make_user("alice")
    async with httpx.AsyncClient(base_url=base, headers=alice.headers, timeout=120) as client:
        response = await client.post("/api/v1/ai/generate_tags", json={"text": "Cats, dogs and hamsters as pets."},
                                     headers={"Prefer": "respond-async"})
        assert response.status_code == 202, response.text

        async def done():
            job = (await client.get(response.json()["url"])).json()
            return job if job["status"] in ("done", "failed") else None

        job = await async_wait_for(done, timeout=120)
        assert job["status"] == "done" and isinstance(job["result"]["tags"], list), json.dumps(job)
