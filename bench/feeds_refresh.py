"""Feed refresh throughput with real worker processes, and parser speed/agreement.

    python bench/feeds_refresh.py [--feeds 2000] [--workers 2] [--skip-refresh] [--no-write]

Part 1, parsers (in this process): generated feeds of mixed sizes (RSS 2.0 ~63 KB, ~20 KB,
~5 KB, Atom, RSS 1.0) plus the test fixtures, parsed by feedparser, by fastfeedparser (raw,
no validation) and by Sygmax's combination (``parse_feed``: fastfeedparser validated by
sanity checks, feedparser fallback, msgspec for JSON Feed). Reports feeds/s of each and the
agreement of the combination with feedparser on item keys, ids, titles, links and dates.

Part 2, refresh: throwaway PostgreSQL and Redis, a local HTTP feed server in its own process
(asyncio, keep-alive; 25 loopback addresses so the per-host limit is exercised as with real
hosts), ``--feeds`` feeds subscribed, and ``--workers`` real ``sygmax run worker``
processes. This process acts as the scheduler: it runs the feeds module's own ``enqueue_due``
job and waits until every feed has been polled. Two rounds:

* cold: first fetch of every feed (200, every item new: parse + insert + events);
* steady: 30% of the feeds answer 304 (conditional GET), the others 200 with one new item.

Each round runs twice: with the default ``events.batch_size`` and with 1 (see main()).

Reports feeds refreshed per minute and worker CPU seconds per 1,000 refreshes (user + system
time of the worker processes, from /proc). Target: >= 6,000 feeds/minute.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import emit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "feeds_refresh.json"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "feeds"
HOSTS = [f"127.0.1.{n}" for n in range(1, 26)]
NOT_MODIFIED_SHARE = 0.3


# ---------------------------------------------------------------------------------------------
# Documents


def rss2(n_items: int, body_bytes: int, seed: str, extra_items: int = 0) -> bytes:
    filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40)[:max(body_bytes, 10)]
    items = []
    for i in range(extra_items + n_items):
        number = n_items + extra_items - i
        items.append(
            f"<item><title>{seed} story {number} &amp; more</title><link>https://{seed}.example.org/{number}</link>"
            f"<guid isPermaLink='false'>{seed}-{number}</guid><pubDate>Mon, 0{1 + number % 9} Jun 2026 10:{number % 60:02d}:00 GMT"
            f"</pubDate><description><![CDATA[<p>{filler}</p><img src='/i/{number}.png'>]]></description></item>")
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>{seed} feed</title>"
            f"<link>https://{seed}.example.org/</link><language>en</language>{''.join(items)}</channel></rss>").encode()


def atom(n_items: int, body_bytes: int, seed: str) -> bytes:
    filler = ("Atom body text with <b>markup</b>. " * 60)[:body_bytes].replace("<", "&lt;").replace(">", "&gt;")
    entries = "".join(
        f"<entry><title>{seed} entry {i}</title><link href='https://{seed}.example.net/{i}'/><id>urn:{seed}:{i}</id>"
        f"<updated>2026-06-0{1 + i % 9}T10:00:00Z</updated><content type='html'>{filler}</content></entry>"
        for i in range(n_items))
    return (f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'><title>{seed}</title>"
            f"<link href='https://{seed}.example.net/'/><id>urn:{seed}</id><updated>2026-06-05T10:00:00Z</updated>"
            f"{entries}</feed>").encode()


def rdf(n_items: int, seed: str) -> bytes:
    items = "".join(
        f"<item rdf:about='https://{seed}.example.com/{i}'><title>{seed} {i}</title>"
        f"<link>https://{seed}.example.com/{i}</link><description>text {i}</description>"
        f"<dc:date>2026-06-0{1 + i % 9}T10:00:00Z</dc:date></item>" for i in range(n_items))
    return (f"<?xml version='1.0'?><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' "
            f"xmlns='http://purl.org/rss/1.0/' xmlns:dc='http://purl.org/dc/elements/1.1/'>"
            f"<channel rdf:about='https://{seed}.example.com/'><title>{seed}</title>"
            f"<link>https://{seed}.example.com/</link><description>d</description></channel>{items}</rdf:RDF>").encode()


def feed_document(index: int, round_number: int) -> bytes:
    """Mixed sizes: 1 in 3 feeds ~63 KB (20 items), 1 in 3 ~20 KB, 1 in 3 ~5 KB."""
    size = (3000, 900, 200)[index % 3]
    return rss2(20, size, f"f{index}", extra_items=round_number)


# ---------------------------------------------------------------------------------------------
# Part 1: parsers


def parser_benchmark() -> dict:
    import fastfeedparser
    import feedparser

    from plugins.feeds import parser

    corpus = {
        "rss2_63k": rss2(20, 3000, "big"), "rss2_20k": rss2(20, 900, "mid"), "rss2_5k": rss2(20, 200, "small"),
        "atom_30k": atom(20, 1400, "atom"), "rss1_3k": rdf(15, "rdf"),
    }
    for name in ("rss2.xml", "rss1.xml", "rss091.xml", "atom.xml", "xss.xml"):
        corpus["fixture_" + name] = (FIXTURES / name).read_bytes()
    base = "https://bench.example.org/feed"

    def parse_and_sanitise(document: bytes):
        # What a first fetch costs: every item sanitised (later polls sanitise new items only).
        feed = parser.parse_feed(document, base)
        for item in feed.items:
            item.content_text
        return feed

    def speed(function, document: bytes, minimum_s: float = 0.6) -> float:
        count, started = 0, time.perf_counter()
        while True:
            function(document)
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= minimum_s and count >= 3:
                return count / elapsed

    per_document = {}
    for name, document in corpus.items():
        per_document[name] = {
            "bytes": len(document),
            "feedparser_per_s": round(speed(lambda d: feedparser.parse(d), document), 1),
            "fastfeedparser_per_s": round(speed(lambda d: fastfeedparser.parse(d), document), 1),
            "sygmax_combined_per_s": round(speed(lambda d: parse_and_sanitise(d), document), 1),
            "sygmax_combined_parse_only_per_s": round(speed(lambda d: parser.parse_feed(d, base), document), 1),
        }
    agreement = {}
    agree_all = True
    for name, document in corpus.items():
        combined = parser.parse_feed(document, base)
        reference = parser.parse_with_feedparser(document, base)

        def keys(feed):
            return [(i.dedupe_key, i.guid, i.url, i.title, i.published_at) for i in feed.items]

        same = keys(combined) == keys(reference) and combined.title == reference.title
        agree_all &= same
        agreement[name] = {"items": len(reference.items), "same_ids_titles_links_dates": same,
                           "parser_used": combined.parser}
    big = per_document["rss2_63k"]
    return {
        "per_document": per_document,
        "agreement_with_feedparser": agreement,
        "all_agree": agree_all,
        "speedup_63k_combined_vs_feedparser": round(big["sygmax_combined_per_s"] / big["feedparser_per_s"], 1),
        "speedup_63k_fastfeedparser_vs_feedparser": round(big["fastfeedparser_per_s"] / big["feedparser_per_s"], 1),
    }


# ---------------------------------------------------------------------------------------------
# Part 2: the feed server (its own process)


def serve(port: int, feeds: int, ready, round_value) -> None:
    asyncio.run(_serve(port, feeds, ready, round_value))


async def _serve(port: int, feeds: int, ready, round_value) -> None:
    cache: dict[tuple[int, int], tuple[bytes, str]] = {}

    def document(index: int) -> tuple[bytes, str]:
        round_number = round_value.value
        # 30% of the feeds never change: with the ETag of the previous round they get a 304.
        effective = 0 if index % 10 < NOT_MODIFIED_SHARE * 10 else round_number
        key = (index, effective)
        if key not in cache:
            body = feed_document(index, effective)
            cache[key] = (body, '"' + hashlib.sha1(body).hexdigest()[:20] + '"')
        return cache[key]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:] if ":" in line}
                index = int(path.rsplit("/", 1)[1])
                body, etag = document(index)
                if headers.get("if-none-match") == etag:
                    writer.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n".encode())
                else:
                    writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: {etag}\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host=HOSTS, port=port, backlog=1024)
    ready.set()
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------------------------
# Part 2: the refresh run


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += process_tree(int(child))
    return found


async def refresh_benchmark(feeds: int, workers: int, extra_env: dict[str, str]) -> dict:
    import asyncpg

    from sygmax.config import load_settings
    from sygmax.db.migrations import migrate, plan
    from sygmax.kernel import Kernel
    from sygmax.plugins import discover_plugins, order_plugins
    from plugins.feeds.settings import FeedsSettings
    from plugins.feeds.workers import enqueue_due
    from tests.servers import PostgresServer, RedisServer, free_port, wait_for_port

    postgres = PostgresServer().start()
    redis = RedisServer().start()
    feed_port = free_port()
    round_value = multiprocessing.Value("i", 0)
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(feed_port, feeds, ready, round_value), daemon=True)
    server.start()
    ready.wait(10)
    processes: list[subprocess.Popen] = []
    work = Path(postgres.directory) / "bench"
    work.mkdir()
    try:
        postgres.psql("postgres", "CREATE DATABASE bench")
        url = postgres.url("bench")
        installed = discover_plugins()
        steps = plan([(plugin.name, plugin.migrations) for plugin in order_plugins(
            {name: installed[name] for name in ("feeds",)})])
        await migrate(url, steps)
        environ = {
            "SYGMAX_DATABASE_URL": url, "SYGMAX_REDIS_URL": redis.url, "SYGMAX_STORAGE_URL": f"file://{work}/objects",
            "SYGMAX_AUTH_KEYS_DIR": str(work / "keys"), "SYGMAX_LOG_ACCESS_LOG": "false", "SYGMAX_LOG_LEVEL": "warning",
            "SYGMAX_PLUGINS_ENABLED": "feeds", "SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES": "true",
            "SYGMAX_FEEDS_RETENTION_DAYS": "36500",
            "SYGMAX_CONFIG": str(work / "absent.toml"), "SYGMAX_DATABASE_POOL_MAX": "30",
            **extra_env,
        }
        connection = await asyncpg.connect(url)
        user_id = uuid.uuid4()
        await connection.execute("INSERT INTO sygmax_user (id, email, display_name) VALUES ($1, 'bench@example.org', 'B')",
                                 user_id)
        feed_ids = [uuid.uuid4() for _ in range(feeds)]
        await connection.executemany(
            "INSERT INTO feeds_feed (id, url, next_poll_at) VALUES ($1, $2, now() + interval '1 day')",
            [(feed_id, f"http://{HOSTS[i % len(HOSTS)]}:{feed_port}/feed/{i}") for i, feed_id in enumerate(feed_ids)])
        await connection.executemany(
            "INSERT INTO feeds_subscription (id, feed_id, user_id) VALUES ($1, $2, $3)",
            [(uuid.uuid4(), feed_id, user_id) for feed_id in feed_ids])

        sygmax = str(Path(sys.executable).parent / "sygmax")
        for number in range(workers):
            port = free_port()
            log = open(work / f"worker-{number}.log", "wb")
            processes.append(subprocess.Popen([sygmax, "run", "worker", "--port", str(port)],
                                              env={**os.environ, **environ}, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            wait_for_port(port, timeout=60)

        settings = load_settings(work / "absent.toml", environ=environ, plugin_sections={"feeds": FeedsSettings})
        kernel = Kernel.build(settings, {"feeds": installed["feeds"]})
        await kernel.start()
        await asyncio.sleep(2)  # consumer groups created, workers idle
        rounds = {}
        try:
            for round_number, name in ((0, "cold"), (1, "steady")):
                round_value.value = round_number
                await connection.execute("UPDATE feeds_feed SET next_poll_at = now() - interval '1 second'")
                pids = [pid for process in processes for pid in process_tree(process.pid)]
                cpu_before = cpu_seconds(pids)
                items_before = await connection.fetchval("SELECT count(*) FROM feeds_item")
                started_at = await connection.fetchval("SELECT now()")
                started = time.perf_counter()
                enqueued = await enqueue_due(kernel)
                while await connection.fetchval("SELECT count(*) FROM feeds_feed WHERE last_polled_at IS NULL "
                                                "OR last_polled_at < $1", started_at) > 0:
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(pids) - cpu_before
                errors = await connection.fetchval("SELECT count(*) FROM feeds_feed WHERE error_count > 0")
                error_texts = [row["last_error"] for row in await connection.fetch(
                    "SELECT DISTINCT last_error FROM feeds_feed WHERE error_count > 0 LIMIT 5")]
                not_modified = sum(1 for i in range(feeds) if i % 10 < NOT_MODIFIED_SHARE * 10) if round_number else 0
                rounds[name] = {
                    "feeds": enqueued,
                    "answered_304": not_modified,
                    "new_items": await connection.fetchval("SELECT count(*) FROM feeds_item") - items_before,
                    "errors": errors,
                    "error_texts": error_texts,
                    "seconds": round(elapsed, 2),
                    "feeds_per_minute": round(enqueued / elapsed * 60),
                    "worker_cpu_s_per_1000_refreshes": round(cpu / enqueued * 1000, 2),
                }
        finally:
            await kernel.stop()
            await connection.close()
        return {"workers": workers, "hosts": len(HOSTS), "settings": extra_env, "rounds": rounds}
    finally:
        for process in processes:
            with_group = os.getpgid(process.pid)
            os.killpg(with_group, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        server.terminate()
        server.join(5)
        redis.cleanup()
        postgres.stop()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--feeds", type=int, default=2000)
    arguments.add_argument("--workers", type=int, default=2)
    arguments.add_argument("--skip-refresh", action="store_true")
    arguments.add_argument("--no-write", action="store_true")
    options = arguments.parse_args()
    # The machine is shared: the load before the run says how much of it this run had.
    report: dict = {"benchmark": "feeds_refresh", "cpus": os.cpu_count(),
                    "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
                    "parsers": parser_benchmark()}
    if not options.skip_refresh:
        # A worker reads up to events.batch_size entries at once and handles them one by one, so
        # with the default (100) the first worker to read may take every queued feed batch;
        # events.batch_size=1 makes the workers share them. Both are measured.
        report["refresh"] = {
            "events_batch_size_default": asyncio.run(refresh_benchmark(options.feeds, options.workers, {})),
            "events_batch_size_1": asyncio.run(refresh_benchmark(options.feeds, options.workers,
                                                                 {"SYGMAX_EVENTS_BATCH_SIZE": "1"})),
        }
        report["target_feeds_per_minute"] = 6000
        report["meets_target"] = {
            name: all(round_["feeds_per_minute"] >= 6000 for round_ in run["rounds"].values())
            for name, run in report["refresh"].items()}
    emit(report, RESULTS, write=not options.no_write)


if __name__ == "__main__":
    main()
