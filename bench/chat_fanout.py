"""Chat fan-out: WebSocket delivery latency of Sygmax chats beside a bare `websockets` peer.

    python bench/chat_fanout.py [--clients 1000,5000] [--duration 20] [--channels 4] [--rate 10]
                                [--users N] [--systems bare,sygmax] [--asgi-server granian|uvicorn]
                                [--profile] [--quick] [--no-write]

Both systems run in the same invocation on throwaway PostgreSQL and Redis (tests/servers.py):

* ``sygmax``: two ``sygmax run realtime`` processes (WebSocket /ws/chats) and one
  ``sygmax run api`` process; senders post through REST (``POST /api/v1/chats/channels/{id}/
  messages``), so every message is committed to PostgreSQL with its channel sequence number,
  rendered and sanitised, then fanned out through Redis pub/sub to both realtime processes.
  Users, tokens and memberships are written straight into the database (thousands of them).
* ``bare``: two processes of a minimal ``websockets`` server (this file, ``--bare-server``):
  one Redis pub/sub connection each, ``websockets.broadcast`` of the raw frame to every socket
  subscribed to the channel. Senders ``PUBLISH`` a frame of the same shape straight to Redis:
  no database, no auth per message, no rendering. The ceiling the library gives.

Load: ``N`` clients live in two client processes (never in a server process, so the servers'
CPU is what is measured), half of each process's clients on each server process. They are a
minimal RFC 6455 client on an asyncio protocol (:class:`RawClient`): a library client would
spend more CPU per frame than the servers and measure itself. Every client subscribes to all
``--channels`` channels, and the senders post ``--rate`` messages per second in total,
round-robin over the channels (one sending user per channel), so every message reaches every
client: ``rate * N`` deliveries per second, the load the issue's targets (p99 <= 25 ms at
1,000 clients, <= 50 ms at 5,000, at 10 messages/s) are stated for. ``--users`` puts N clients
behind fewer Sygmax users (several connections each); by default each client is its own user.

After connecting, the run waits until the servers are idle (``settle_s``: what connecting set
off, such as presence announcements, is done), then sends. Measured, per system and count:

* ``latency_ms``: from the sender's clock just before it sends (the REST request or the
  ``PUBLISH``) to each client's clock when the frame arrives, over every delivery; and
  ``last_recipient_ms``, per message the delivery to its last recipient;
* ``delivered`` / ``expected`` (missing or duplicated frames show up here), ``messages_per_s``
  sent and ``deliveries_per_s``;
* ``server_cpu_us_per_delivery``: CPU time of the fan-out server processes over the sending
  window per delivered frame, which other load on the machine barely moves (latency does:
  ``load_average`` is recorded); for Sygmax also ``post_ms`` (the REST round trip) and
  ``api_cpu_ms_per_post``;
* ``rss_per_connection_kib``: the resident memory the server processes (with their worker
  children) gained between no client and all clients connected and settled, divided by N.

``--profile`` runs Sygmax's realtime processes under cProfile (their ASGI server in process:
uvicorn, or granian's embedded one with ``--asgi-server granian``), for the sending window
only, and adds the top functions by own time to the report.

Prints one JSON object and writes it to bench/results/chat_fanout.json (``--no-write`` not).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
import psutil

from bench.report import emit
from tests.servers import PostgresServer, RedisServer, free_port, wait_for_port

RESULTS = ROOT / "bench" / "results" / "chat_fanout.json"
SYGMAX = str(Path(sys.executable).parent / "sygmax")
BARE_PREFIX = "bench:rt:"
# Every bench message carries "bench:<sent unix time>:<number>" in its text; clients find it
# in the raw frame with one regex, whatever else the frame holds (html, author, seq ...).
MARK = re.compile(rb"bench:(\d+\.\d+):(\d+)")
CONNECT_CONCURRENCY = 64


def raise_nofile() -> int:
    """Thousands of sockets per process: lift the soft open-files limit to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tree_rss(pids: list[int]) -> int:
    """Resident bytes of these processes and all their descendants (granian runs workers)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += member.memory_info().rss
    return total


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their descendants."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = member.cpu_times()
                    total += times.user + times.system
    return total


def percentiles(samples: array, scale: float = 1000.0) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale, 2)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(ordered[-1] * scale, 2),
            "n": len(ordered)}


# --- the bare peer: websockets + Redis pub/sub ----------------------------------------------------


def bare_server_main(port: int, redis_url: str) -> None:
    """One bare broadcast server process; the protocol subset the bench uses: subscribe frames."""
    import uvloop

    uvloop.run(_bare_server(port, redis_url))


async def _bare_server(port: int, redis_url: str) -> None:
    import msgspec
    from redis.asyncio import Redis
    from websockets.asyncio.server import broadcast, serve
    from websockets.exceptions import ConnectionClosed

    raise_nofile()
    rooms: dict[str, set] = {}
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.connect()
    decode = msgspec.json.decode

    async def handler(websocket) -> None:
        joined: list[str] = []
        try:
            async for frame in websocket:
                request = decode(frame)
                if request.get("type") == "subscribe":
                    channel = BARE_PREFIX + str(request["channel_id"])
                    room = rooms.get(channel)
                    if room is None:
                        room = rooms[channel] = set()
                        await pubsub.subscribe(channel)
                    room.add(websocket)
                    joined.append(channel)
                    await websocket.send(b'{"type":"subscribed","channel_id":"%s"}' % request["channel_id"].encode())
        except ConnectionClosed:
            pass  # the bench's clients hang up without ceremony at the end
        finally:
            for channel in joined:
                rooms[channel].discard(websocket)

    async def pump() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                room = rooms.get(message["channel"].decode())
                if room:
                    broadcast(room, message["data"].decode())

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=64):
        task = asyncio.create_task(pump())
        await stop.wait()
        task.cancel()
    await redis.aclose()


class BareSystem:
    name = "bare"

    def __init__(self, redis: RedisServer, channels: int) -> None:
        self.redis = redis
        self.channel_ids = [uuid.uuid4().hex for _ in range(channels)]
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self._client: Any = None
        self._number = 0

    def _spawn(self) -> None:
        for _ in range(2):
            port = free_port()
            self.processes.append(subprocess.Popen(
                [sys.executable, __file__, "--bare-server", str(port), self.redis.url], start_new_session=True))
            self.ports.append(port)
        for port in self.ports:
            wait_for_port(port)

    async def start(self, clients: int) -> None:
        await asyncio.to_thread(self._spawn)
        from redis.asyncio import Redis

        self._client = Redis.from_url(self.redis.url)

    async def warm_up(self) -> None:
        for channel_id in self.channel_ids:
            await self._client.publish(BARE_PREFIX + channel_id, '{"type":"warm-up"}')

    def client_specs(self, count: int) -> list[tuple[str, dict[str, str]]]:
        return [(f"ws://127.0.0.1:{self.ports[i % 2]}/", {}) for i in range(count)]

    async def send(self, channel_index: int, number: int) -> None:
        channel_id = self.channel_ids[channel_index]
        sent = time.time()
        # The frame Sygmax sends, give or take fields: type, channel and a message object.
        frame = (f'{{"type":"message","channel_id":"{channel_id}","message":{{"channel_id":"{channel_id}",'
                 f'"seq":{number},"text":"bench:{sent:.6f}:{number}","html":"<p>bench:{sent:.6f}:{number}</p>"}}}}')
        await self._client.publish(BARE_PREFIX + channel_id, frame)

    def server_pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        stop_processes(self.processes)


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def profiled_realtime_main(port: int, output: str) -> None:
    """One realtime process under cProfile (``--profile``): the ASGI server the realtime profile
    would get (uvicorn, or granian's embedded server with ``--asgi-server granian``) run in this
    very process, since ``sygmax run`` may run the app in worker processes a profiler here would
    not see. Stats are written to ``output`` on SIGUSR1."""
    import cProfile

    import uvloop

    os.environ["SYGMAX_PROFILES"] = "realtime"
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="sygmax-metrics-"))
    raise_nofile()
    from sygmax.app import create_app

    if os.environ.get("SYGMAX_SERVER_ASGI_SERVER") == "granian":
        from granian.constants import Interfaces
        from granian.server.embed import Server

        server = Server(create_app("realtime"), address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                        websockets=True, log_access=False)
    else:
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(create_app("realtime"), host="127.0.0.1", port=port,
                                               http="httptools", access_log=False, lifespan="on",
                                               log_level="warning"))
    profiler: list[cProfile.Profile] = []

    def start(*_: Any) -> None:
        # Only the measured window (the bench signals its start), not connecting and settling.
        profiler.append(cProfile.Profile())
        profiler[-1].enable()

    def dump(*_: Any) -> None:
        # On request, not at exit: a graceful shutdown may outlast the bench's patience.
        if profiler:
            profiler[-1].disable()
            profiler[-1].dump_stats(output)

    signal.signal(signal.SIGUSR2, start)
    signal.signal(signal.SIGUSR1, dump)
    uvloop.run(server.serve())


def profile_summary(paths: list[Path], top: int = 30) -> list[str]:
    import io
    import pstats

    stream = io.StringIO()
    stats = pstats.Stats(*[str(path) for path in paths if path.exists()], stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    return [line for line in stream.getvalue().splitlines() if line.strip()]


# --- Sygmax: sygmax run realtime x2 + sygmax run api ----------------------------------------------


class SygmaxSystem:
    name = "sygmax"

    def __init__(self, postgres: PostgresServer, redis: RedisServer, channels: int, workdir: Path,
                 profile: bool = False, users: int = 0, asgi_server: str = "") -> None:
        self.users = users
        self.asgi_server = asgi_server
        self.profile = profile
        self.profiles: list[Path] = []
        self.postgres = postgres
        self.redis = redis
        self.channels = channels
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.realtime_ports: list[int] = []
        self.realtime_pids: list[int] = []
        self.api_pid = 0
        self.api = ""
        self.channel_ids: list[str] = []
        self.tokens: list[str] = []
        self.sender_tokens: list[str] = []
        self._http: httpx.AsyncClient | None = None
        self.database = ""
        self.post_durations = array("d")  # REST round trips: commit and publish happen inside them

    def _environment(self, database_url: str) -> dict[str, str]:
        from tests.conftest import service_environ

        return {**os.environ, **service_environ(database_url, self.redis.url, self.workdir / "objects"),
                "SYGMAX_CONFIG": str(self.workdir / "absent.toml"), "SYGMAX_LOG_LEVEL": "warning",
                # The senders post far above a person's typing speed, on purpose.
                "SYGMAX_CHATS_MESSAGES_PER_MINUTE": "1000000",
                **({"SYGMAX_SERVER_ASGI_SERVER": self.asgi_server} if self.asgi_server else {})}

    def _spawn(self, profiles: str, port: int, env: dict[str, str]) -> int:
        command = [SYGMAX, "run", profiles, "--port", str(port)]
        if self.profile and profiles == "realtime":
            self.profiles.append(self.workdir / f"realtime-{port}.prof")
            command = [sys.executable, __file__, "--profiled-realtime", str(port), str(self.profiles[-1])]
        with open(self.workdir / f"{profiles.replace(',', '-')}-{port}.log", "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process.pid

    async def start(self, clients: int) -> None:
        """A fresh database, users with tokens, one workspace, the channels with every user in them."""
        import asyncpg

        from sygmax.db.migrations import migrate, plan
        from sygmax.plugins import discover_plugins, order_plugins

        self.database = f"bench_{uuid.uuid4().hex[:8]}"
        self.postgres.psql("postgres", f"CREATE DATABASE {self.database}")
        database_url = self.postgres.url(self.database)
        plugins = order_plugins(discover_plugins())
        await migrate(database_url, plan([(plugin.name, plugin.migrations) for plugin in plugins]))
        env = self._environment(database_url)
        api_port = free_port()
        self.api_pid = self._spawn("api", api_port, env)
        for _ in range(2):
            port = free_port()
            self.realtime_pids.append(self._spawn("realtime", port, env))
            self.realtime_ports.append(port)
        self.api = f"http://127.0.0.1:{api_port}"
        for port in [api_port, *self.realtime_ports]:
            try:
                wait_for_port(port, timeout=60)
            except TimeoutError:
                logs = "\n".join(path.read_text(errors="replace")[-2000:] for path in self.workdir.glob("*.log"))
                raise RuntimeError(f"a server did not start:\n{logs}") from None

        connection = await asyncpg.connect(database_url)
        try:
            people = min(clients, self.users) if self.users else clients
            users = await self._make_users(connection, people + self.channels)
        finally:
            await connection.close()
        owner_token = users[0][1]
        self.sender_tokens = [token for _, token in users[people:]]
        # With fewer people than clients, each person has several connections (tabs, devices).
        self.tokens = [users[index % people][1] for index in range(clients)]
        self._http = httpx.AsyncClient(base_url=self.api, timeout=30,
                                       limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        owner = {"Authorization": f"Bearer {owner_token}"}
        workspace = await self._ok("POST", "/api/v1/workspaces", owner, {"name": "Bench"})
        await self._join_workspace(database_url, workspace["id"], [user for user, _ in users[1:]])
        for index in range(self.channels):
            channel = await self._ok("POST", "/api/v1/chats/channels", owner,
                                     {"workspace_id": workspace["id"], "name": f"bench-{index}", "private": False})
            self.channel_ids.append(channel["id"])
            await self._add_members(database_url, channel["id"], workspace["id"], [user for user, _ in users[1:]])

    async def _make_users(self, connection, count: int) -> list[tuple[uuid.UUID, str]]:
        from sygmax.auth.tokens import hash_token, new_token

        rows, users = [], []
        for index in range(count):
            user_id, token = uuid.uuid4(), new_token()
            rows.append((user_id, f"bench{index}@example.org", f"Bench {index}"))
            users.append((user_id, token))
        await connection.executemany("INSERT INTO sygmax_user (id, email, display_name) VALUES ($1, $2, $3)", rows)
        await connection.executemany(
            "INSERT INTO sygmax_api_token (id, user_id, name, token_hash, scopes) VALUES ($1, $2, 'bench', $3, $4)",
            [(uuid.uuid4(), user_id, hash_token(token), ["*"]) for user_id, token in users])
        return users

    async def _join_workspace(self, database_url: str, workspace_id: str, user_ids: list[uuid.UUID]) -> None:
        """Thousands of members: straight into the membership table (the invite flow is
        tested elsewhere and would take minutes here)."""
        import asyncpg

        connection = await asyncpg.connect(database_url)
        try:
            await connection.executemany(
                "INSERT INTO sygmax_membership (workspace_id, user_id, role) VALUES ($1, $2, 'editor')",
                [(uuid.UUID(workspace_id), user_id) for user_id in user_ids])
        finally:
            await connection.close()

    async def _add_members(self, database_url: str, channel_id: str, workspace_id: str,
                           user_ids: list[uuid.UUID]) -> None:
        """Thousands of channel members: straight into chats_member, as for the workspace."""
        import asyncpg

        connection = await asyncpg.connect(database_url)
        try:
            await connection.executemany(
                "INSERT INTO chats_member (channel_id, workspace_id, user_id) VALUES ($1, $2, $3)",
                [(uuid.UUID(channel_id), uuid.UUID(workspace_id), user_id) for user_id in user_ids])
        finally:
            await connection.close()

    async def _ok(self, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
        assert self._http is not None
        response = await self._http.request(method, url, headers=headers, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def client_specs(self, count: int) -> list[tuple[str, dict[str, str]]]:
        return [(f"ws://127.0.0.1:{self.realtime_ports[i % 2]}/ws/chats",
                 {"Authorization": f"Bearer {self.tokens[i]}"}) for i in range(count)]

    async def warm_up(self) -> None:
        """A few posts before any client connects: first-use costs (imports, pools) are not measured."""
        for index in range(self.channels):
            for _ in range(3):
                await self._post(index, "warming up")

    async def _post(self, channel_index: int, text: str) -> None:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.sender_tokens[channel_index]}"}
        response = await self._http.post(f"/api/v1/chats/channels/{self.channel_ids[channel_index]}/messages",
                                         headers=headers, json={"text": text})
        if response.status_code != 201:
            raise RuntimeError(f"post: {response.status_code} {response.text[:300]}")

    async def send(self, channel_index: int, number: int) -> None:
        sent = time.time()
        await self._post(channel_index, f"bench:{sent:.6f}:{number}")
        self.post_durations.append(time.time() - sent)

    def server_pids(self) -> list[int]:
        return list(self.realtime_pids)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self.profile:
            for pid in self.realtime_pids:
                os.kill(pid, signal.SIGUSR1)
            for path in self.profiles:
                for _ in range(100):
                    if path.exists() and path.stat().st_size:
                        break
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        stop_processes(self.processes)
        if self.database:
            self.postgres.psql("postgres", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


# --- client processes -----------------------------------------------------------------------------


def client_process(specs: list[tuple[str, dict[str, str]]], channel_ids: list[str], control: Any) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_clients(specs, channel_ids, control))


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455) on an asyncio protocol: handshake, unmasked
    server frames parsed from one buffer, masked client frames, pongs, close.

    Why not the ``websockets`` client: two client processes on this 2-core machine must read
    up to 50,000 frames per second, and a library client's per-frame cost (a task wake-up,
    a frame object, a queue) would make the load generator the bottleneck and the servers'
    figures meaningless. Here one ``data_received`` call handles every frame that arrived in
    the same read, stamped with one clock reading.
    """

    def __init__(self, host: str, path: str, headers: dict[str, str], sink: Any) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n").encode()
        self.sink = sink
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        length = len(payload)
        header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE]) + length.to_bytes(2, "big")
        self._write_masked(header, payload)

    def _write_masked(self, header: bytes, payload: bytes) -> None:
        key = os.urandom(4)
        repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
        self.transport.write(header + key + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write_masked(bytes([0x88, 0x82]), (1000).to_bytes(2, "big"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(f"handshake refused: {bytes(buffer[:end])[:300]!r}"))
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded.set_result(None)
        arrived = time.time()
        position, size = 0, len(buffer)
        while size - position >= 2:
            opcode, length = buffer[position] & 0x0F, buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                length, start = int.from_bytes(buffer[start:start + 2], "big"), start + 2
            elif length == 127:
                if size - start < 8:
                    break
                length, start = int.from_bytes(buffer[start:start + 8], "big"), start + 8
            if size - start < length:
                break
            payload = buffer[start:start + length]
            position = start + length
            if opcode in (0x1, 0x2, 0x0):
                self.sink(payload, arrived)
            elif opcode == 0x9:  # ping: answer with a pong carrying the same payload
                self._write_masked(bytes([0x8A, 0x80 | len(payload)]), bytes(payload))
            elif opcode == 0x8:
                self.sink(b"close:" + bytes(payload[2:]), arrived)
                self.transport.close()
        del buffer[:position]


async def _clients(specs: list[tuple[str, dict[str, str]]], channel_ids: list[str], control: Any) -> None:
    """Connect and subscribe every client, report, then record latencies until told to stop.

    Latencies go into one flat array per process (8 bytes a delivery) rather than Python lists,
    and the per-message arrival maximum is kept in a dict keyed by message number.
    """
    loop = asyncio.get_running_loop()
    latencies = array("d")
    last: dict[int, float] = {}
    counts: dict[int, int] = {}
    errors: list[str] = []
    clients: list[RawClient] = []
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    subscribe_frames = [f'{{"type":"subscribe","channel_id":"{channel_id}"}}' for channel_id in channel_ids]
    search = MARK.search

    def sink(payload: bytearray, arrived: float) -> None:
        match = search(payload)
        if match is None:
            if payload.startswith(b"close:") or b'"error"' in payload:
                errors.append(bytes(payload[:200]).decode(errors="replace"))
            return  # subscription acks, presence, typing ...
        delay = arrived - float(match.group(1))
        latencies.append(delay)
        number = int(match.group(2))
        counts[number] = counts.get(number, 0) + 1
        if delay > last.get(number, 0.0):
            last[number] = delay

    async def open_one(url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        async with semaphore:
            for attempt in range(5):
                try:
                    _, client = await loop.create_connection(
                        lambda: RawClient(parts.netloc, parts.path or "/", headers, sink), parts.hostname, parts.port)
                    await asyncio.wait_for(client.upgraded, 60)
                    break
                except (OSError, TimeoutError) as exc:
                    if attempt == 4:
                        errors.append(f"connect: {exc!r}")
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
            for frame in subscribe_frames:
                client.send_text(frame)
            clients.append(client)

    await asyncio.gather(*(open_one(url, headers) for url, headers in specs))
    await asyncio.sleep(1.0)  # subscriptions confirmed before the servers' memory is read
    control.send(("connected", len(clients), errors[:5]))
    await loop.run_in_executor(None, control.recv)  # "stop", after the senders and a drain
    dropped = sum(1 for client in clients if client.closed.done())
    for client in clients:
        client.close()
    control.send(("done", latencies.tobytes(), last, counts, errors[:20], len(errors) + dropped))


# --- one measured run -----------------------------------------------------------------------------


async def settle(pids: list[int], quiet: float = 0.05, limit_s: float = 300.0) -> float:
    """Wait until the servers are idle (under ``quiet`` of a CPU over a second): the work that
    connecting set off (authentication, subscriptions, presence announcements to everyone
    already connected) is done, so what follows measures steady-state fan-out. Returns how long
    that took after the last client connected (reported: it is a cost of its own)."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        before = tree_cpu(pids)
        await asyncio.sleep(1.0)
        if tree_cpu(pids) - before < quiet:
            break
    return time.monotonic() - began



async def measure(system: Any, clients: int, channels: int, rate: float, duration: float) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    await system.start(clients)
    try:
        await system.warm_up()
        await asyncio.sleep(1.0)
        rss_before = tree_rss(system.server_pids())
        specs = system.client_specs(clients)
        pipes, workers = [], []
        for part in range(2):
            parent_end, child_end = spawn.Pipe()
            worker = spawn.Process(target=client_process, args=(specs[part::2], system.channel_ids, child_end))
            worker.start()
            pipes.append(parent_end)
            workers.append(worker)
        connected, connect_errors = 0, []
        started = time.monotonic()
        for pipe in pipes:
            _, count, errors = await asyncio.to_thread(pipe.recv)
            connected += count
            connect_errors += errors
        connect_s = time.monotonic() - started
        settle_s = await settle(system.server_pids())
        rss_after = tree_rss(system.server_pids())

        total = max(1, int(rate * duration))
        sends: list[asyncio.Task] = []
        send_errors: list[str] = []

        async def send(number: int) -> None:
            try:
                await system.send(number % channels, number)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                send_errors.append(repr(exc))

        if getattr(system, "profile", False):
            for pid in system.server_pids():
                os.kill(pid, signal.SIGUSR2)
        cpu_before = tree_cpu(system.server_pids())
        api_pids = [system.api_pid] if getattr(system, "api_pid", 0) else []
        api_cpu_before = tree_cpu(api_pids)
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        for number in range(total):
            delay = began + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(send(number)))
        await asyncio.gather(*sends)
        sent_s = time.monotonic() - began
        await asyncio.sleep(2.0)  # drain: in-flight deliveries arrive
        server_cpu = tree_cpu(system.server_pids()) - cpu_before
        api_cpu = tree_cpu(api_pids) - api_cpu_before
        for pipe in pipes:
            pipe.send("stop")
        latencies, last, counts, client_errors, error_count = array("d"), {}, {}, [], 0
        for pipe in pipes:
            _, raw, part_last, part_counts, errors, errors_n = await asyncio.to_thread(pipe.recv)
            part = array("d")
            part.frombytes(raw)
            latencies.extend(part)
            for number, value in part_last.items():
                last[number] = max(last.get(number, 0.0), value)
            for number, value in part_counts.items():
                counts[number] = counts.get(number, 0) + value
            client_errors += errors
            error_count += errors_n
        for worker in workers:
            worker.join(30)
        delivered = len(latencies)
        expected = (total - len(send_errors)) * connected
        return {
            "clients": clients, "connected": connected, "channels": channels, "rate": rate,
            # Other work on the machine (these cores may be shared): the 1-minute load average.
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "duration_s": round(sent_s, 2), "connect_s": round(connect_s, 2), "settle_s": round(settle_s, 1),
            "messages_sent": total - len(send_errors), "messages_per_s": round((total - len(send_errors)) / sent_s, 2),
            "deliveries_per_s": round(delivered / sent_s, 1),
            "delivered": delivered, "expected": expected,
            "messages_short_of_all_recipients": sum(1 for value in counts.values() if value < connected)
            + (total - len(send_errors) - len(counts)),
            "latency_ms": percentiles(latencies),
            "last_recipient_ms": percentiles(array("d", last.values())),
            # CPU the fan-out servers spent per frame delivered: unlike latency, barely moved by
            # other load on the machine.
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_us_per_delivery": round(server_cpu / max(1, delivered) * 1e6, 1),
            **({"post_ms": percentiles(system.post_durations),
                "api_cpu_ms_per_post": round(api_cpu / max(1, total) * 1000, 2)} if api_pids else {}),
            "rss_per_connection_kib": round((rss_after - rss_before) / max(1, connected) / 1024, 1),
            "server_rss_mib": {"before": round(rss_before / 2**20, 1), "after": round(rss_after / 2**20, 1)},
            "errors": {"connect": connect_errors[:3], "send": send_errors[:3], "client": client_errors[:3],
                       "client_count": error_count, "send_count": len(send_errors)},
        }
    finally:
        await system.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    hard = raise_nofile()
    counts = [int(value) for value in args.clients.split(",")]
    systems = [value.strip() for value in args.systems.split(",")]
    postgres = PostgresServer().start() if "sygmax" in systems else None
    redis = RedisServer().start()
    report: dict[str, Any] = {
        "benchmark": "chat_fanout",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "nofile": hard},
        "method": {"server_processes": 2, "users": args.users or "one per client",
                   "sygmax_asgi_server": args.asgi_server or "configured default (auto: uvicorn for the realtime profile)", "client_processes": 2, "channels": args.channels,
                   "rate_msgs_per_s": args.rate, "duration_s": args.duration,
                   "every_client_subscribes_every_channel": True},
        "targets_p99_ms": {"1000": 25, "5000": 50},
        "results": {},
    }
    try:
        for clients in counts:
            for name in systems:
                with tempfile.TemporaryDirectory(prefix="sygmax-bench-") as directory:
                    if name == "bare":
                        system: Any = BareSystem(redis, args.channels)
                    else:
                        assert postgres is not None
                        system = SygmaxSystem(postgres, redis, args.channels, Path(directory), args.profile,
                                              args.users, args.asgi_server)
                    result = await measure(system, clients, args.channels, args.rate, args.duration)
                    if args.profile and name == "sygmax":
                        result["profile_tottime"] = profile_summary(system.profiles)
                report["results"].setdefault(str(clients), {})[name] = result
                print(f"# {name} {clients}: p99 {result['latency_ms']['p99']} ms", file=sys.stderr)
    finally:
        redis.cleanup()
        if postgres is not None:
            postgres.stop()
    return report


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1000,5000", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of sending per run")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second, all channels together")
    parser.add_argument("--systems", default="bare,sygmax")
    parser.add_argument("--asgi-server", choices=["granian", "uvicorn"], default="",
                        help="server.asgi_server of the Sygmax processes (default: the configured one)")
    parser.add_argument("--users", type=int, default=0,
                        help="distinct Sygmax users behind the clients (default: one per client); fewer "
                             "means several connections per user, and fewer presence transitions")
    parser.add_argument("--quick", action="store_true", help="200 clients, 5 s: checks the harness")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="run Sygmax's realtime processes under cProfile (uvicorn in-process) and "
                             "add the top functions by own time to the report; slows them down")
    parser.add_argument("--profiled-realtime", nargs=2, metavar=("PORT", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.duration = "200", 5.0
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.profiled_realtime:
        profiled_realtime_main(int(arguments.profiled_realtime[0]), arguments.profiled_realtime[1])
    elif arguments.bare_server:
        bare_server_main(int(arguments.bare_server[0]), arguments.bare_server[1])
    else:
        emit(asyncio.run(main(arguments)), RESULTS, write=not arguments.no_write)
