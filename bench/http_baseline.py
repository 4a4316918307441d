"""HTTP baseline: Sygmax vs a bare Litestar app, on granian and on uvicorn, measured with wrk.

    python bench/http_baseline.py [--duration 10] [--workers 2] [--connections 64]
                                  [--servers granian,uvicorn] [--no-write]

For each ASGI server it measures, with ``wrk -t1 -c<connections> -d<duration>s --latency``
in its own process against 127.0.0.1:

* ``bare_healthz``    GET /healthz on a bare Litestar app (bench/bare_app.py), same server
                      options and worker count as ``sygmax run``;
* ``sygmax_healthz``  GET /healthz on ``sygmax run api`` with every middleware on (request
                      ids, metrics, JSON access log to stdout -> /dev/null, Redis rate limit
                      with a per-IP limit too high to trigger);
* ``sygmax_users_me`` GET /api/v1/users/me with a bearer token: the authenticated
                      DB-backed read (one token lookup + one user read in PostgreSQL).

PostgreSQL and Redis are throwaway servers (tests/servers.py) on free ports, migrated with
every installed plugin. Prints one JSON object and writes it to bench/results/http_baseline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import emit
from tests.servers import PostgresServer, RedisServer, free_port

RESULTS = ROOT / "bench" / "results" / "http_baseline.json"
HEALTHZ_RATIO_TARGET = 0.8
USERS_ME_RPS_TARGET = 8000.0
USERS_ME_P99_TARGET_MS = 30.0
WARMUP_S = 2


# --------------------------------------------------------------------------- wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """requests/s, p50/p90/p99 (ms), request count, non-2xx/3xx and socket errors from ``wrk --latency``."""
    result: dict = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not match:
        raise ValueError(f"wrk printed no Requests/sec:\n{output}")
    result["requests_per_s"] = round(float(match.group(1)), 1)
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)\s*$", output, re.MULTILINE)
        if match:
            result[f"p{pct}_ms"] = round(_to_ms(match.group(1)), 3)
    match = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if match:
        result["requests"] = int(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = (
        {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), match.groups())} if match else {}
    )
    return result


def run_wrk(url: str, duration: int, connections: int, headers: dict[str, str] | None = None) -> tuple[dict, str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout), done.stdout


def redis_script_calls(redis_url: str | None) -> int | None:
    """EVAL/EVALSHA calls Redis has served so far (the rate limiter's token-bucket script)."""
    if not redis_url:
        return None
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


def measure(url: str, duration: int, connections: int, headers: dict[str, str] | None = None,
            redis_url: str | None = None) -> dict:
    run_wrk(url, WARMUP_S, connections, headers)  # warm-up: pools, caches, rate-limit leases
    before = redis_script_calls(redis_url)
    result, _ = run_wrk(url, duration, connections, headers)
    after = redis_script_calls(redis_url)
    if before is not None and after is not None and result.get("requests"):
        # Designed: 1/lease (1/20 here); more means concurrent requests refill the lease at once.
        result["ratelimit_redis_calls_per_request"] = round((after - before) / result["requests"], 4)
    return result


# --------------------------------------------------------------------------- processes


class Served:
    """One server process group started by us; stopped by its own process-group id."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.stderr = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True,
        )

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{url} not ready after {timeout}s ({last}): {self.tail()}")

    def tail(self) -> str:
        self.stderr.flush()
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        else:
            # The supervisor is gone; make sure no worker of its group lingers.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.stderr.close()


def unlimited_rate_limits(per_minute: int = 100_000_000) -> dict[str, str]:
    """Rate limits stay on, but every per-minute bucket of [rate_limit] is set too high to trigger."""
    from sygmax.config import RateLimitSettings

    return {f"SYGMAX_RATE_LIMIT_{name.upper()}": str(per_minute) for name in RateLimitSettings.model_fields
            if name.startswith("per_") and name.endswith("_per_minute")}


def tree_state() -> dict:
    """Which code was measured: HEAD and how many files differ from it (read-only git)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain")
    return {"head": git("rev-parse", "HEAD") or None,
            "changed_files": len(status.splitlines()) if status else 0}


def sygmax_env(base: dict[str, str], server: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SYGMAX_") and key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(base)
    env["SYGMAX_SERVER_ASGI_SERVER"] = server
    return env


# --------------------------------------------------------------------------- database


async def seed_user(dsn: str) -> str:
    import asyncpg

    from sygmax.auth.tokens import create_user, issue_token

    connection = await asyncpg.connect(dsn)
    try:
        user_id = await create_user(connection, "bench@example.org", "Bench")
        return await issue_token(connection, user_id, "bench")
    finally:
        await connection.close()


def prepare_database(postgres: PostgresServer) -> str:
    from sygmax.db.migrations import migrate, plan
    from sygmax.plugins import discover_plugins, order_plugins

    plugins = order_plugins(discover_plugins())
    steps = plan([(plugin.name, plugin.migrations) for plugin in plugins])
    asyncio.run(migrate(postgres.url(), steps))
    return asyncio.run(seed_user(postgres.url()))


# --------------------------------------------------------------------------- facts


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in
                     ("granian", "uvicorn", "uvloop", "httptools", "litestar", "asyncpg", "redis",
                      "structlog", "prometheus_client", "msgspec")},
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else None,
    }


# --------------------------------------------------------------------------- main


def bench_server(server: str, args, base_env: dict[str, str], token: str, logs: Path) -> dict:
    results: dict = {}
    py_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py_env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    port = free_port()
    bare = Served([sys.executable, "-m", "bench.bare_app", server, str(port), str(args.workers)],
                  py_env, logs / f"bare-{server}.log")
    try:
        bare.wait_ready(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1)  # let every worker finish booting
        results["bare_healthz"] = measure(f"http://127.0.0.1:{port}/healthz", args.duration, args.connections)
    finally:
        bare.stop()

    port = free_port()
    sygmax_bin = shutil.which("sygmax", path=str(Path(sys.executable).parent)) or "sygmax"
    app = Served([sygmax_bin, "run", "api", "--host", "127.0.0.1", "--port", str(port),
                  "--workers", str(args.workers)],
                 sygmax_env(base_env, server), logs / f"sygmax-{server}.log")
    try:
        app.wait_ready(f"http://127.0.0.1:{port}/readyz")
        time.sleep(1)
        redis_url = base_env["SYGMAX_REDIS_URL"]
        results["sygmax_healthz"] = measure(f"http://127.0.0.1:{port}/healthz", args.duration, args.connections,
                                            redis_url=redis_url)
        results["sygmax_users_me"] = measure(
            f"http://127.0.0.1:{port}/api/v1/users/me", args.duration, args.connections,
            {"Authorization": f"Bearer {token}"}, redis_url=redis_url,
        )
    finally:
        app.stop()
    return results


def summarise(results: dict) -> tuple[dict, dict]:
    ratios, users_me = {}, {}
    for server, runs in results.items():
        bare, syg = runs.get("bare_healthz"), runs.get("sygmax_healthz")
        if bare and syg and bare["requests_per_s"]:
            ratio = syg["requests_per_s"] / bare["requests_per_s"]
            ratios[server] = {"sygmax_healthz_over_bare": round(ratio, 3),
                              "meets_target": ratio >= HEALTHZ_RATIO_TARGET}
        me = runs.get("sygmax_users_me")
        if me:
            users_me[server] = {
                "requests_per_s": me["requests_per_s"], "p99_ms": me.get("p99_ms"),
                "meets_rps": me["requests_per_s"] >= USERS_ME_RPS_TARGET,
                "meets_p99": (me.get("p99_ms") or 1e9) <= USERS_ME_P99_TARGET_MS,
                "meets_target": me["requests_per_s"] >= USERS_ME_RPS_TARGET
                and (me.get("p99_ms") or 1e9) <= USERS_ME_P99_TARGET_MS
                and me["non_2xx"] == 0,
            }
    return ratios, users_me


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--servers", default="granian,uvicorn", help="comma-separated: granian,uvicorn")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in servers if name not in ("granian", "uvicorn")]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed")

    postgres = redis = None
    scratch = Path(tempfile.mkdtemp(prefix="sygmax-bench-"))
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        postgres = PostgresServer().start()
        redis = RedisServer().start()
        token = prepare_database(postgres)
        storage = scratch / "objects"
        storage.mkdir()
        base_env = {
            "SYGMAX_CONFIG": str(scratch / "absent.toml"),
            "SYGMAX_DATABASE_URL": postgres.url(),
            "SYGMAX_REDIS_URL": redis.url,
            "SYGMAX_STORAGE_URL": f"file://{storage}",
            "SYGMAX_STORAGE_PRESIGN_SECRET": "bench-presign-secret",
            "SYGMAX_LOG_ACCESS_LOG": "true",
            "SYGMAX_RATE_LIMIT_ENABLED": "true",
            **unlimited_rate_limits(),
        }
        results = {server: bench_server(server, args, base_env, token, scratch) for server in servers}
    finally:
        if redis is not None:
            redis.cleanup()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    ratios, users_me = summarise(results)
    report = {
        "benchmark": "http_baseline",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "config": {
            "duration_s": args.duration, "warmup_s": WARMUP_S, "workers": args.workers,
            "connections": args.connections, "wrk_threads": 1, "servers": servers, "host": "127.0.0.1",
            "sygmax_middleware": {"request_id": True, "metrics": True, "access_log": "stdout->/dev/null",
                                  "rate_limit_enabled": True, "rate_limits": unlimited_rate_limits()},
        },
        "machine": {**machine_facts(), "loadavg_at_start": load_at_start},
        "tree": tree_state(),
        "results": results,
        "healthz_ratio": ratios,
        "users_me_target": {"rps": USERS_ME_RPS_TARGET, "p99_ms": USERS_ME_P99_TARGET_MS, "by_server": users_me},
        "healthz_ratio_target": HEALTHZ_RATIO_TARGET,
    }
    emit(report, RESULTS, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
