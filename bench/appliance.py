"""Appliance benchmark: install time, idle memory per profile, Caddy's cost per request.

    sudo .venv/bin/python bench/appliance.py [--duration 10] [--connections 32] [--no-write]

Runs ``sygmax install`` into a fresh prefix on free ports (root, no systemd), then measures:

* ``install_wall_s``      fresh prefix -> working platform (the install ends only when the api
                          answers /readyz and Caddy answers over HTTPS);
* ``reinstall_wall_s``    a second ``sygmax install`` (converges, no changes);
* ``idle_rss_mib``        resident memory of each profile's processes (each process with its
                          server worker) and of PostgreSQL, Redis, Caddy and supervisord, after
                          10 s idle;
* ``rps``                 ``wrk -t1 -c<connections> --latency`` on GET /healthz, with one api
                          process: directly to it on loopback, then through Caddy over HTTPS;
                          ``caddy_over_direct`` is their ratio. Then through Caddy with two api
                          processes. The rate limiter is switched off in the node's config for
                          the measurement (every request through Caddy comes from 127.0.0.1).

Uninstalls at the end. Prints one JSON object and writes bench/results/appliance.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_baseline import run_wrk  # noqa: E402
from tests.servers import free_block, free_port  # noqa: E402

SYGMAX = str(Path(sys.executable).parent / "sygmax")


def sygmax(prefix: Path, *args: str) -> tuple[float, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
    started = time.monotonic()
    done = subprocess.run(
        [SYGMAX, *args, "--prefix", str(prefix)], capture_output=True, text=True, env=env, timeout=900
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"sygmax {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def tree_rss(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


def idle_rss(prefix: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from appliance.layout import load_state
    from appliance.supervisor import Supervisor

    state = load_state(prefix)
    sup = Supervisor(state)
    programs = sup.status()
    mib = 1024 * 1024
    result: dict = {}
    for name, count in state.processes.items():
        sizes = [tree_rss(programs[f"sygmax-{name}-{n}"].pid) for n in range(1, count + 1)]
        if sizes:
            result[name] = {
                "processes": count,
                "total": round(sum(sizes) / mib, 1),
                "per_process": round(sum(sizes) / len(sizes) / mib, 1),
            }
    for service in ("postgresql", "redis", "caddy"):
        result[service] = round(tree_rss(programs[service].pid) / mib, 1)
    supervisord = sup.pid()
    result["supervisord"] = (
        round(psutil.Process(supervisord).memory_info().rss / mib, 1) if supervisord else None
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: sygmax install provisions the host")

    workdir = Path(tempfile.mkdtemp(prefix="sygmax-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    prefix = workdir / "node"
    https, http, base = free_port(), free_port(), free_block(83)
    (prefix / "etc/sygmax").mkdir(parents=True)
    (prefix / "etc/sygmax/sygmax.toml").write_text("[rate_limit]\nenabled = false\n")
    install = ["install", "--http-port", str(http), "--https-port", str(https), "--base-port", str(base)]
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "wrk": f"-t1 -c{options.connections} -d{options.duration}s",
    }
    try:
        results["install_wall_s"], _ = sygmax(prefix, *install)
        results["install_wall_s"] = round(results["install_wall_s"], 1)
        reinstall, output = sygmax(prefix, *install)
        results["reinstall_wall_s"] = round(reinstall, 1)
        results["reinstall_reported_no_changes"] = "no changes" in output
        time.sleep(10)
        results["idle_rss_mib"] = idle_rss(prefix)

        sygmax(prefix, "scale", "api=1")
        time.sleep(2)
        direct, _ = run_wrk(f"http://127.0.0.1:{base}/healthz", options.duration, options.connections)
        caddy_one, _ = run_wrk(f"https://localhost:{https}/healthz", options.duration, options.connections)
        sygmax(prefix, "scale", "api=2")
        time.sleep(3)
        caddy_two, _ = run_wrk(f"https://localhost:{https}/healthz", options.duration, options.connections)
        results["rps"] = {
            "direct_api_x1": direct,
            "caddy_https_api_x1": caddy_one,
            "caddy_https_api_x2": caddy_two,
            "caddy_over_direct": round(caddy_one["requests_per_s"] / direct["requests_per_s"], 3),
        }
    finally:
        subprocess.run([SYGMAX, "uninstall", "--yes", "--prefix", str(prefix)], capture_output=True)
        subprocess.run(["rm", "-rf", str(workdir)])
    text = json.dumps(results, indent=2)
    print(text)
    if not options.no_write:
        out = ROOT / "bench" / "results" / "appliance.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
