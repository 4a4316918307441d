"""The ai profile as a process: absent (503), crashed mid-job (clear errors, jobs not lost), and
the api/worker processes never loading a model library."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from tests.ai.conftest import LONG_TEXT, async_wait_for, missing_ai, plugins
from tests.conftest import assert_problem
from tests.servers import RedisServer

HEAVY = ("llama_cpp", "faster_whisper", "onnxruntime", "faiss", "spacy", "ctranslate2", "tokenizers")


def test_api_and_worker_processes_never_import_model_libraries(tmp_path):
    script = f"""
import json, sys
from sygmax.app import create_app
from sygmax.config import load_settings
from plugins.ai.settings import AiSettings
from plugins.ai.plugin import plugin as ai
from plugins.system.plugin import plugin as system
import plugins.ai.workers, plugins.ai.actions, plugins.ai.api, cli.commands.ai
settings = load_settings({str(tmp_path / 'absent.toml')!r}, environ={{}}, plugin_sections={{"ai": AiSettings}})
create_app("api,worker,realtime,scheduler", settings=settings, plugins={{"system": system, "ai": ai}})
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "SYGMAX_CONFIG": str(tmp_path / "absent.toml")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.fixture
def lonely_redis():
    server = RedisServer().start()
    yield server
    server.cleanup()


async def test_without_the_ai_profile_ai_endpoints_answer_503(ai_stack, lonely_redis, make_user):
    """A Redis no ai process talks to: the AI profile is not running, as far as this api can tell."""
    from sygmax.app import create_app

    settings = ai_stack.settings()
    alone = type(settings)(**{**settings.__dict__, "redis": settings.redis.model_copy(update={"url": lonely_redis.url})})
    alice = await make_user("alice")
    async with AsyncTestClient(app=create_app("api", settings=alone, plugins=plugins())) as client:
        for url, body in (("/api/v1/ai/summarize", {"text": "hello there"}),
                          ("/api/v1/ai/entities", {"text": "Paris"}),
                          ("/api/v1/ai/search", {"q": "anything"})):
            response = await client.post(url, json=body, headers=alice.headers)
            problem = assert_problem(response, 503, "ai-unavailable")
            assert "AI profile is not running" in problem["detail"] and int(response.headers["retry-after"]) > 0
        response = await client.post("/api/v1/ai/transcribe", files={"file": ("a.wav", b"RIFF....")},
                                     headers=alice.headers)
        assert_problem(response, 503, "ai-unavailable")
        models = (await client.get("/api/v1/ai/models", headers=alice.headers)).json()
        assert models["ai_running"] is False and not any(m["loaded"] for m in models["models"])
        # Bad input is still the caller's mistake first.
        assert_problem(await client.post("/api/v1/ai/summarize", json={"text": ""}, headers=alice.headers),
                       400, "validation-error")


async def test_killing_the_ai_process_mid_job_is_never_silent(ai_running, api_server, make_user, ai_db):
    """SIGKILL while a durable job runs: the waiting caller gets a clear 503; the job runs again
    after a restart; a job whose runs all die (ai.job_attempts = 2) is reported failed."""
    alice = await make_user("alice")
    base = api_server(cache_ttl_s=0, request_timeout_s=300)
    async with httpx.AsyncClient(base_url=base, timeout=400) as client:
        async def submit(text: str, max_tokens: int) -> str:
            response = await client.post("/api/v1/ai/translate", json={
                "text": text, "target_language": "French", "max_tokens": max_tokens, "async": True},
                headers=alice.headers)
            assert response.status_code == 202, response.text
            return response.json()["id"]

        async def status(job_id: str) -> dict:
            return (await client.get(f"/api/v1/ai/jobs/{job_id}", headers=alice.headers)).json()

        async def running(job_id: str, attempts: int):
            job = await status(job_id)
            assert job["status"] in ("queued", "running"), job  # it must not finish before the kill
            return job["status"] == "running" and job["attempts"] == attempts

        doomed = await submit(LONG_TEXT, 512)
        await async_wait_for(lambda: running(doomed, 1), timeout=120)
        after = await submit("Good night.", 32)  # waits behind it, in PostgreSQL
        waiting = asyncio.ensure_future(client.post("/api/v1/ai/correct_text", json={"text": "I has a cat."},
                                                    headers=alice.headers))
        redis = Redis.from_url(ai_running.redis_url)

        async def queued():
            assert not waiting.done(), waiting.result().text
            return await redis.llen("sygmax:ai:q:smollm2-135m-instruct") == 1

        await async_wait_for(queued, timeout=30)
        await redis.aclose()

        await asyncio.to_thread(ai_running.kill)
        response = await waiting  # answered at once, not after the 300 s timeout
        problem = assert_problem(response, 503, "ai-unavailable")
        assert "not running" in problem["detail"]
        job = await status(doomed)
        assert job["status"] == "running" and "no ai process" in job["note"]
        await asyncio.to_thread(ai_running.wait_gone)

        await asyncio.to_thread(ai_running.start)  # the first run died: queued again and started over
        await async_wait_for(lambda: running(doomed, 2), timeout=120)
        await asyncio.to_thread(ai_running.kill)
        await asyncio.to_thread(ai_running.wait_gone)
        await asyncio.to_thread(ai_running.start)  # the second run died too: attempts used up, reported failed

        async def settled(job_id):
            job = await status(job_id)
            return job if job["status"] in ("done", "failed") else None

        failed = await async_wait_for(lambda: settled(doomed), timeout=60)
        assert failed["status"] == "failed" and failed["error"]["slug"] == "ai-process-lost", failed
        assert failed["attempts"] == 2
        completed = await async_wait_for(lambda: settled(after), timeout=180)
        assert completed["status"] == "done" and completed["result"]["text"], completed
    assert await ai_db.fetchval("SELECT count(*) FROM ai_job WHERE status IN ('queued', 'running')") == 0


def test_status_and_metrics_of_the_ai_process_show_models_and_devices(ai_running):
    from appliance.status import ai_health, ai_models

    port = int(next(line for line in reversed(ai_running.log_text().splitlines())
                    if "Listening at" in line).rsplit(":", 1)[1])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "sygmax_ai_queue_depth" in text and "sygmax_ai_model_rss_bytes" in text
    assert {m["kind"] for m in ai_models(port)} == {"llm", "stt", "embedding", "ner"}
    probe = ai_health(port)  # what `sygmax status` shows in the health column, and `doctor` reports
    assert probe.ok and "GPU: no" in probe.detail and "smollm2-135m-instruct (llm, cpu)" in probe.detail


def test_missing_ai_reason_names_what_to_install():
    assert missing_ai() is None or "install" in missing_ai()
