"""Speech to text: speech synthesised by espeak-ng, in the containers people upload, through the API."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sygmax.storage.base import open_store
from tests.ai.conftest import async_wait_for
from tests.conftest import assert_problem

SENTENCE = "The meeting starts at ten o'clock in the morning."
CODECS = {"wav": ["-c:a", "pcm_s16le"], "ogg": ["-c:a", "libopus"], "mp3": ["-c:a", "libmp3lame"],
          "m4a": ["-c:a", "aac"]}


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, bytes]:
    if not shutil.which("espeak-ng") or not shutil.which("ffmpeg"):
        pytest.skip("espeak-ng and ffmpeg are needed (apt-get install espeak-ng ffmpeg)")
    directory = tmp_path_factory.mktemp("speech")
    source = directory / "espeak.wav"
    subprocess.run(["espeak-ng", "-s", "130", "-w", str(source), SENTENCE], check=True, capture_output=True)
    files = {}
    for suffix, codec in CODECS.items():
        target = directory / f"speech.{suffix}"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *codec, str(target)],
                       check=True, capture_output=True)
        files[suffix] = target.read_bytes()
    # Other bytes with the same words, for the job test (the files above are in the result cache by then).
    slower = directory / "slower.wav"
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(slower), SENTENCE], check=True, capture_output=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(slower), "-c:a", "libopus",
                    str(directory / "slower.ogg")], check=True, capture_output=True)
    files["job"] = (directory / "slower.ogg").read_bytes()
    return files


def words(text: str) -> set[str]:
    return {word.strip(".,!?").lower() for word in text.split()}


@pytest.mark.parametrize("suffix", list(CODECS))
async def test_transcript_contains_the_spoken_words(api, make_user, speech, suffix):
    alice = await make_user("alice")
    response = await api.post("/api/v1/ai/transcribe", files={"file": (f"voice.{suffix}", speech[suffix])},
                              headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    # Stems, not exact words: lossy codecs turn "meeting starts" into "meetings start" at times.
    assert all(stem in body["text"].lower() for stem in ("meeting", "start", "clock", "morning")), body["text"]
    assert body["segments"] and body["segments"][0]["start"] >= 0
    assert all(s["end"] >= s["start"] for s in body["segments"])
    assert 3 < body["duration"] < 10 and body["model"] == "whisper-tiny-en"


async def test_corrupt_audio_is_a_clear_400_and_the_ai_process_survives(api, make_user, speech, ai_running):
    alice = await make_user("alice")
    pid_before = {i["name"] for i in ai_running.instances()}
    for name, data in (("voice.ogg", b"OggS" + b"\x00garbage" * 200), ("voice.mp3", speech["wav"][:60])):
        response = await api.post("/api/v1/ai/transcribe", files={"file": (name, data)}, headers=alice.headers)
        assert_problem(response, 400, "unreadable-audio")
    assert {i["name"] for i in ai_running.instances()} == pid_before  # the same process, still serving
    response = await api.post("/api/v1/ai/transcribe", files={"file": ("voice.wav", speech["wav"])},
                              headers=alice.headers)
    assert response.status_code == 200 and "meeting" in words(response.json()["text"])


async def test_empty_missing_and_oversized_uploads_are_refused(api, make_user, ai_running):
    alice = await make_user("alice")
    assert_problem(await api.post("/api/v1/ai/transcribe", files={"file": ("a.ogg", b"")}, headers=alice.headers),
                   400, "empty-file")
    response = await api.post("/api/v1/ai/transcribe", files={"other": ("a.ogg", b"x")}, headers=alice.headers)
    assert response.status_code == 400, response.text
    from litestar.testing import AsyncTestClient

    from tests.ai.conftest import app_for

    async with AsyncTestClient(app=app_for(ai_running, "api", max_audio_bytes=2048)) as small:
        response = await small.post("/api/v1/ai/transcribe", files={"file": ("a.wav", b"\x00" * 4096)},
                                    headers=alice.headers)
        assert_problem(response, 413, "audio-too-large")


async def test_async_transcription_is_a_job_to_poll(api, make_user, speech, ai_db, ai_running):
    alice, bob = await make_user("alice"), await make_user("bob")
    response = await api.post("/api/v1/ai/transcribe?async=true", files={"file": ("voice.ogg", speech["job"])},
                              headers=alice.headers)
    assert response.status_code == 202, response.text
    job_url = response.json()["url"]
    assert response.headers["location"] == job_url

    async def finished():
        job = (await api.get(job_url, headers=alice.headers)).json()
        return job if job["status"] in ("done", "failed") else None

    job = await async_wait_for(finished, timeout=120)
    assert job["status"] == "done", job
    assert "morning" in words(job["result"]["text"]) and job["result"]["segments"]
    # Someone else's job does not exist for them; the uploaded audio was removed after the job.
    assert_problem(await api.get(job_url, headers=bob.headers), 404, "not-found")
    key = await ai_db.fetchval("SELECT input_key FROM ai_job WHERE id = $1::uuid", job["id"])
    assert key.startswith("ai/uploads/")
    settings = ai_running.settings()
    store = open_store(settings.storage, public_base_url=settings.server.public_url)
    assert not await store.exists(key)
    await store.close()
