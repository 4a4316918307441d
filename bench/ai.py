"""Local AI: the ai profile through the API against the model libraries called directly.

    python bench/ai.py [--threads 2] [--tokens 128] [--rounds 3] [--no-write]

Starts its own PostgreSQL, Redis, one `sygmax run ai` process (the packaged small models) and
one `sygmax run api` process, then measures in the same run:

* generation tokens/s: the same prompt and token budget, streamed through POST
  /api/v1/ai/translate (server-sent events, timed at the client from the first token to the
  result) vs llama-cpp-python called directly in this process with the same threads; rounds
  alternate so background load hits both alike; medians and their ratio (target >= 0.9);
* summarize latency p50/p99 with 1, 4 and 16 concurrent users (result cache off);
* Whisper real-time factor (processing time / audio duration) directly and through the API;
* sentence embeddings per second (ONNX MiniLM, batches of 32);
* FAISS query latency p50/p99 over 100,000 vectors of 384 dimensions (exact inner product,
  the index the ai process uses);
* resident memory of the ai process: in total, and what each model added when it loaded.

No GPU on the machine that produced bench/results/ai.json: every figure is CPU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from bench.report import emit
from plugins.ai import tasks
from plugins.ai.packaged import packaged_models
from tests.servers import PostgresServer, RedisServer, free_port

SYGMAX = str(Path(sys.executable).parent / "sygmax")
TEXT = ("The city council met on Tuesday to discuss the new tram line. Residents asked for more stops near "
        "the hospital and the university, while shop owners worried about two years of construction work. "
        "The mayor promised a public consultation in the spring and a final vote before the summer.")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([SYGMAX, *args], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def setup_database(url: str) -> str:
    import asyncpg

    from sygmax.auth.tokens import create_user, issue_token
    from sygmax.db.migrations import migrate, plan
    from sygmax.plugins import discover_plugins, order_plugins

    plugins = [p for p in order_plugins(discover_plugins()) if p.name in ("system", "ai")]
    await migrate(url, plan([(p.name, p.migrations) for p in plugins]))
    connection = await asyncpg.connect(url)
    try:
        user = await create_user(connection, "bench@example.org", "Bench")
        return await issue_token(connection, user, "bench")
    finally:
        await connection.close()


def direct_generation(model, messages: list[dict], tokens: int) -> tuple[int, float]:
    first = last = None
    count = 0
    for chunk in model.create_chat_completion(messages=messages, max_tokens=tokens, temperature=0.0, top_p=0.9,
                                              repeat_penalty=1.1, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    return count, (last - first) if first and last else 0.0


async def api_generation(client: httpx.AsyncClient, text: str, tokens: int) -> tuple[int, float]:
    first = None
    async with client.stream("POST", "/api/v1/ai/translate", json={
            "text": text, "target_language": "French", "stream": True, "max_tokens": tokens}) as response:
        assert response.status_code == 200, await response.aread()
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "token" and first is None:
                    first = time.perf_counter()
            elif line.startswith("data: ") and event == "done":
                done = time.perf_counter()
                return json.loads(line[6:])["tokens"], done - first
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(line)
    raise RuntimeError("stream ended without a result")


async def summarize_latency(base: str, headers: dict, users: int, per_user: int, tokens: int) -> dict:
    latencies: list[float] = []
    errors = 0

    async def user(number: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
            for i in range(per_user):
                started = time.perf_counter()
                response = await client.post("/api/v1/ai/summarize", json={
                    "text": f"Report {users}-{number}-{i}. {TEXT}", "sentences": 1, "max_tokens": tokens})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(user(n) for n in range(users)))
    wall = time.perf_counter() - started
    return {"users": users, "requests": len(latencies), "errors": errors, "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)), "requests_per_s": round(len(latencies) / wall, 2)}


async def main() -> dict:
    parser = argparse.ArgumentParser()
    # One thread per model by default: on a small shared host llama.cpp's threads wait for one
    # another at every step, and with other processes on the cores that collapses throughput.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    models = packaged_models()
    missing = {"llm", "stt", "embedding"} - set(models)
    if missing:
        raise SystemExit(f"packaged models missing ({', '.join(sorted(missing))}): ./install.sh --extras ai")

    directory = Path(tempfile.mkdtemp(prefix="sygmax-bench-ai-"))
    postgres, redis = PostgresServer().start(), RedisServer().start()
    processes: list[subprocess.Popen] = []
    try:
        token = await setup_database(postgres.url())
        env = {**os.environ, "SYGMAX_CONFIG": str(directory / "absent.toml"), "SYGMAX_DATABASE_URL": postgres.url(),
               "SYGMAX_REDIS_URL": redis.url, "SYGMAX_STORAGE_URL": f"file://{directory / 'objects'}",
               "SYGMAX_STORAGE_PRESIGN_SECRET": "bench", "SYGMAX_AUTH_KEYS_DIR": str(directory / "keys"),
               "SYGMAX_LOG_ACCESS_LOG": "false", "SYGMAX_RATE_LIMIT_ENABLED": "false",
               "SYGMAX_PLUGINS_ENABLED": "system,ai", "SYGMAX_AI_THREADS": str(options.threads),
               "SYGMAX_AI_CACHE_TTL_S": "0", "SYGMAX_AI_QUEUE_SIZE": "64", "SYGMAX_AI_REQUEST_TIMEOUT_S": "600",
               "SYGMAX_AI_QUOTA_PER_MINUTE": "100000", "SYGMAX_AI_MAX_NEW_TOKENS": str(max(512, options.tokens))}
        processes.append(start(["run", "ai", "--port", str(free_port())], env, directory / "ai.log"))
        api_port = free_port()
        processes.append(start(["run", "api", "--port", str(api_port)], env, directory / "api.log"))
        base = f"http://127.0.0.1:{api_port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    listing = (await client.get("/api/v1/ai/models")).json()
                    if sum(m["loaded"] for m in listing["models"]) >= 4:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"ai process not ready: {(directory / 'ai.log').read_text()[-2000:]}")
                await asyncio.sleep(0.5)

            # -- generation: API vs direct ---------------------------------------------------
            import llama_cpp

            direct_model = llama_cpp.Llama(model_path=models["llm"]["path"], n_ctx=2048, n_threads=options.threads,
                                           n_threads_batch=options.threads, verbose=False, seed=0)
            long_text = " ".join([TEXT] * 3)
            messages, _ = tasks.build("translate", long_text, {"target_language": "French"})
            await api_generation(client, long_text, 16)  # warm both paths
            direct_generation(direct_model, messages, 16)
            direct_rates, api_rates, token_counts = [], [], []
            for _ in range(options.rounds):
                count, seconds = await asyncio.to_thread(direct_generation, direct_model, messages, options.tokens)
                direct_rates.append((count - 1) / seconds)
                count_api, seconds_api = await api_generation(client, long_text, options.tokens)
                api_rates.append((count_api - 1) / seconds_api)
                token_counts.append((count, count_api))
            direct_model.close()
            del direct_model
            generation = {"threads": options.threads, "max_tokens": options.tokens, "rounds": options.rounds,
                          "tokens_generated": token_counts,
                          "direct_tokens_per_s": round(statistics.median(direct_rates), 1),
                          "api_tokens_per_s": round(statistics.median(api_rates), 1),
                          "ratio_api_to_direct": round(statistics.median(api_rates) / statistics.median(direct_rates), 3),
                          "target_ratio": 0.9}

            # -- summarize latency under concurrency -------------------------------------------
            summarize = [await summarize_latency(base, headers, users, per_user, 32)
                         for users, per_user in ((1, 6), (4, 3), (16, 1))]

            # -- whisper real-time factor ------------------------------------------------------
            wav = directory / "speech.wav"
            subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), TEXT], check=True, capture_output=True)
            from faster_whisper import WhisperModel

            from plugins.ai.engines import SAMPLE_RATE, decode_audio

            samples = decode_audio(wav.read_bytes(), 600)
            duration = len(samples) / SAMPLE_RATE
            whisper = WhisperModel(models["stt"]["path"], device="cpu", compute_type="default",
                                   cpu_threads=options.threads)
            direct_times = []
            for _ in range(options.rounds):
                started = time.perf_counter()
                segments, _ = whisper.transcribe(samples, beam_size=1)
                list(segments)
                direct_times.append(time.perf_counter() - started)
            del whisper
            api_times = []
            for _ in range(options.rounds):
                started = time.perf_counter()
                response = await client.post("/api/v1/ai/transcribe", files={"file": ("speech.wav", wav.read_bytes())})
                assert response.status_code == 200, response.text
                api_times.append(time.perf_counter() - started)
            stt = {"audio_seconds": round(duration, 2),
                   "direct_real_time_factor": round(statistics.median(direct_times) / duration, 3),
                   "api_real_time_factor": round(statistics.median(api_times) / duration, 3)}

            # -- embeddings ----------------------------------------------------------------------
            from plugins.ai.engines import EmbeddingEngine

            embedder = EmbeddingEngine("bench", "1", models["embedding"]["path"], threads=options.threads,
                                       tokenizer=models["embedding"]["options"]["tokenizer"])
            sentences = [f"Message {i}: {TEXT.split('. ')[i % 3]}" for i in range(512)]
            embedder.embed(sentences[:32])
            started = time.perf_counter()
            embedder.embed(sentences)
            embeddings = {"sentences": len(sentences), "batch": 32,
                          "per_s": round(len(sentences) / (time.perf_counter() - started), 1)}

            # -- FAISS at 100k -------------------------------------------------------------------
            from plugins.ai.vectors import VectorIndex

            rng = np.random.default_rng(0)
            vectors = rng.standard_normal((100_000, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index = VectorIndex(384, "bench")
            index.apply(list(range(1, 100_001)), [row.astype("<f4").tobytes() for row in vectors])
            queries = rng.standard_normal((500, 384)).astype(np.float32)
            times = []
            for query in queries:
                started = time.perf_counter()
                index.search(query / np.linalg.norm(query), 50)
                times.append(time.perf_counter() - started)
            faiss_figures = {"vectors": index.size, "dimension": 384, "k": 50, "queries": len(times),
                             "p50_ms": round(percentile(times, 50) * 1000, 2),
                             "p99_ms": round(percentile(times, 99) * 1000, 2)}

            # -- memory of the ai process ----------------------------------------------------------
            import psutil

            from plugins.ai.protocol import AiClient
            from redis.asyncio import Redis

            from plugins.ai.settings import AiSettings

            redis_client = Redis.from_url(redis.url)
            instances = await AiClient(redis_client, AiSettings()).instances()
            await redis_client.aclose()
            instance = instances[0]
            memory = {"process_rss_mb": round(psutil.Process(instance["pid"]).memory_info().rss / 2**20, 1),
                      "per_model_rss_mb": {name: round(info["rss_bytes"] / 2**20, 1)
                                           for name, info in instance["models"].items()},
                      "gpu": instance["gpu"]}
        return {"benchmark": "ai", "device": "cpu", "cpu_count": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "generation": generation, "summarize": summarize, "whisper": stt, "embeddings": embeddings,
                "faiss": faiss_figures, "memory": memory,
                "models": {kind: models[kind]["name"] for kind in models}}, options
    finally:
        for process in processes:
            stop(process)
        redis.cleanup()
        postgres.stop()


if __name__ == "__main__":
    report, parsed = asyncio.run(main())
    emit(report, Path(__file__).parent / "results" / "ai.json", write=not parsed.no_write)
