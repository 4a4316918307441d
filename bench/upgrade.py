"""Upgrade benchmark, and the harness tests/test_upgrade.py shares with it.

    sudo .venv/bin/python bench/upgrade.py [--clients 4] [--no-write]

Installs a node (``sygmax install``, root, no systemd, a fresh prefix on free ports), builds the
next release from this checkout (version bump plus a new migration), then, while clients send
requests through Caddy over HTTPS without pause (GET /healthz, GET /api/v1/workspaces with a
bearer token, and a POST /api/v1/workspaces every 20th request):

* ``upgrade_wall_s``: ``sygmax upgrade --to <release> --yes`` (pre-flight, pre-upgrade backup,
  new venv beside the old, migration, rolling restart);
* per kind of client (see :class:`Traffic`, none of which ever retries a request): ``http1``,
  HTTP/1.1 clients with keep-alive connections, and ``http2``, httpx's HTTP/2 client:
  requests/s for 15 s before the upgrade (the peer, same clients, same node), requests/s while
  the upgrade ran, their ratio, and the requests that failed (must be 0).
* ``caddy_config_changes_during_upgrade``: how often Caddy's configuration changed while the
  upgrade ran (must be 0: each change closes clients' idle connections).

Uninstalls at the end. Prints one JSON object and writes bench/results/upgrade.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the checkout's packages

from tests.servers import free_block, free_port  # noqa: E402

BIN = Path(sys.executable).parent
SYGMAX = str(BIN / "sygmax")
PASSWORD = "correct horse battery staple 42"
ADMIN = "admin@example.org"
# What a release is built from: the package's own directories and metadata, nothing else.
RELEASE_FILES = ("pyproject.toml", "README.md", "sygmax", "cli", "appliance", "plugins", "profiles", "roles")
BACKUP_KEY = "upgrade-harness-backup-key-0123456789"
# An operator's config kept by every install: the clients all come from 127.0.0.1, so per-IP and
# per-user limits would measure the limiter, not the upgrade; the key encrypts the pre-upgrade backup.
NODE_CONFIG = f'[rate_limit]\nenabled = false\n\n[backup]\nkey = "{BACKUP_KEY}"\n'




def bump(version: str, minor: int = 1) -> str:
    """``0.1.0`` -> ``0.2.0``: the next release's version."""
    major, rest = version.split(".", 1)
    return f"{major}.{int(rest.split('.')[0]) + minor}.0"


def build_release(
    dest: Path, version: str, migration: str | None = None, break_startup: bool = False, source: Path = ROOT
) -> Path:
    """A Sygmax source tree at ``dest``: this checkout with ``version``, plus ``migration`` as the
    kernel's next migration step, and, with ``break_startup``, a ``sygmax run`` that exits at once
    (a release whose processes never become healthy)."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in RELEASE_FILES:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    pyproject = dest / "pyproject.toml"
    text, count = re.subn(r'(?m)^version = "[^"]+"$', f'version = "{version}"', pyproject.read_text())
    assert count == 1, "pyproject.toml: no static version line"
    pyproject.write_text(text)
    init = dest / "sygmax" / "__init__.py"
    text, count = re.subn(r'(?m)^__version__ = "[^"]+"$', f'__version__ = "{version}"', init.read_text())
    assert count == 1, "sygmax/__init__.py: no __version__ line"
    init.write_text(text)
    if migration is not None:
        steps = dest / "sygmax" / "db" / "migrations"
        number = max(int(path.name[:4]) for path in steps.glob("*.sql")) + 1
        slug = "release_" + version.replace(".", "_")
        (steps / f"{number:04d}_{slug}.sql").write_text(migration)
    if break_startup:
        run = dest / "cli" / "commands" / "run.py"
        text = run.read_text()
        anchor = "    settings, _ = load_or_fail()\n"
        assert anchor in text, "cli/commands/run.py changed: update build_release(break_startup=True)"
        run.write_text(
            text.replace(
                anchor, '    fail("this release is broken on purpose (tests/test_upgrade.py)")\n' + anchor, 1
            )
        )
    return dest


@dataclass
class Node:
    prefix: Path
    http_port: int
    https_port: int
    base_port: int

    @classmethod
    def fresh(cls) -> Node:
        # Under a directory the node's service users can reach (pytest's own tmp dir is 0700).
        parent = Path(tempfile.mkdtemp(prefix="sygmax-upgrade-", dir="/tmp"))
        parent.chmod(0o755)
        return cls(parent / "node", free_port(), free_port(), free_block(83))

    @property
    def ca(self) -> ssl.SSLContext:
        """Trust exactly Caddy's internal CA root, read from the node's data directory."""
        return ssl.create_default_context(
            cafile=str(self.prefix / "var/lib/sygmax/caddy/caddy/pki/authorities/local/root.crt")
        )

    def url(self, path: str) -> str:
        return f"https://localhost:{self.https_port}{path}"

    def sygmax(
        self, *args: str, stdin: str | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith("SYGMAX_")}
        env["COLUMNS"] = "200"
        return subprocess.run(
            [SYGMAX, *args, "--prefix", str(self.prefix)],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def install(self, config: str = NODE_CONFIG) -> None:
        etc = self.prefix / "etc/sygmax"
        etc.mkdir(parents=True)
        (etc / "sygmax.toml").write_text(config)
        done = self.sygmax(
            "install",
            "--http-port",
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--base-port",
            str(self.base_port),
            "--admin-email",
            ADMIN,
            "--admin-password-stdin",
            stdin=PASSWORD + "\n",
        )
        if done.returncode != 0:
            raise RuntimeError(f"sygmax install failed:\n{done.stdout}\n{done.stderr}")

    def uninstall(self) -> subprocess.CompletedProcess:
        done = self.sygmax("uninstall", "--yes")
        shutil.rmtree(self.prefix.parent, ignore_errors=True)
        return done

    def token(self) -> str:
        import httpx

        with httpx.Client(verify=self.ca, timeout=30) as client:
            login = client.post(self.url("/api/v1/auth/login"), json={"email": ADMIN, "password": PASSWORD})
            login.raise_for_status()
            return login.json()["access_token"]

    def info(self, token: str) -> dict:
        """GET /api/v1/system/info through Caddy: the version the api processes run."""
        import httpx

        response = httpx.get(
            self.url("/api/v1/system/info"),
            headers={"Authorization": f"Bearer {token}"},
            verify=self.ca,
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def state(self) -> dict:
        return json.loads((self.prefix / "etc/sygmax/appliance.json").read_text())

    def caddy_loads(self) -> int:
        """Configurations Caddy was given so far (its admin API logs every ``POST /load``)."""
        log = self.prefix / "var/log/sygmax/caddy.log"
        with log.open(encoding="utf-8", errors="replace") as lines:
            return sum(1 for line in lines if '"uri":"/load"' in line)

    def query(self, sql: str) -> list:
        """Rows of ``sql`` on the node's database, as the node's own user."""
        import asyncpg

        url = tomllib.loads((self.prefix / "etc/sygmax/sygmax.toml").read_text())["database"]["url"]

        async def run() -> list:
            connection = await asyncpg.connect(url, timeout=10)
            try:
                return [tuple(row) for row in await connection.fetch(sql)]
            finally:
                await connection.close()

        return asyncio.run(run())


@dataclass
class Traffic:
    """Clients sending requests through Caddy without pause until stopped; every failure is kept.

    No request is ever retried, not even an idempotent one whose connection closed before any
    answer (RFC 9112 would allow that): the rolling restart must not cost a single request to the
    strictest client. HTTP/1.1 with keep-alive by default; ``http2=True`` httpx's HTTP/2 client.
    """

    node: Node
    token: str
    clients: int = 2
    http2: bool = False
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # ids of workspaces created while it ran
    marks: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, ok so far)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _send(self, client, method: str, path: str, body: dict | None = None):
        return client.request(method, self.node.url(path), json=body)

    def _client(self, number: int) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + 1800  # bounded whatever happens
        sent = 0
        with httpx.Client(verify=self.node.ca, timeout=30, headers=headers, http2=self.http2) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                sent += 1
                try:
                    if sent % 20 == 0:
                        body = {"name": f"load {number}-{sent}"}
                        response = self._send(client, "POST", "/api/v1/workspaces", body)
                        expected = 201
                    elif sent % 2:
                        response = self._send(client, "GET", "/healthz")
                        expected = 200
                    else:
                        response = self._send(client, "GET", "/api/v1/workspaces")
                        expected = 200
                    with self._lock:
                        if response.status_code == expected:
                            self.ok += 1
                            if expected == 201:
                                self.created.append(response.json()["id"])
                        else:
                            self.failures.append(
                                f"{response.request.method} {response.request.url.path}: "
                                f"{response.status_code} {response.text[:300]}"
                            )
                except httpx.HTTPError as exc:
                    try:
                        where = f"{exc.request.method} {exc.request.url.path}"
                    except RuntimeError:  # an error raised before the request existed
                        where = "?"
                    with self._lock:
                        self.failures.append(f"{time.strftime('%H:%M:%S')} {where}: {exc!r}")

    def mark(self) -> tuple[float, int]:
        with self._lock:
            point = (time.monotonic(), self.ok)
        self.marks.append(point)
        return point

    def __enter__(self) -> Traffic:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def rate(start: tuple[float, int], end: tuple[float, int]) -> float:
    return (end[1] - start[1]) / max(end[0] - start[0], 1e-9)


MIGRATION = """-- The benchmark's next release: expand steps only (a new table, a new nullable column).
CREATE TABLE sygmax_upgrade_probe (id bigint PRIMARY KEY, note text NOT NULL);
INSERT INTO sygmax_upgrade_probe VALUES (1, 'written by the next release''s migration');
ALTER TABLE sygmax_workspace ADD COLUMN upgrade_probe text;
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=3, help="HTTP/1.1 keep-alive clients")
    parser.add_argument("--http2-clients", type=int, default=1, help="httpx HTTP/2 clients")
    parser.add_argument("--steady-seconds", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from bench.report import emit
    from sygmax import __version__

    node = Node.fresh()
    work = Path(tempfile.mkdtemp(prefix="sygmax-release-"))
    try:
        node.install()
        token = node.token()
        release = build_release(work / "next", bump(__version__), MIGRATION)
        groups = {
            "http1": Traffic(node, token, clients=args.clients),
            "http2": Traffic(node, token, clients=args.http2_clients, http2=True),
        }
        for traffic in groups.values():
            traffic.__enter__()
        try:
            time.sleep(2)
            steady_start = {name: traffic.mark() for name, traffic in groups.items()}
            time.sleep(args.steady_seconds)
            steady_end = {name: traffic.mark() for name, traffic in groups.items()}
            before = {name: len(traffic.failures) for name, traffic in groups.items()}
            loads = node.caddy_loads()
            started = time.monotonic()
            done = node.sygmax("upgrade", "--to", str(release), "--yes")
            seconds = time.monotonic() - started
            loads = node.caddy_loads() - loads
            ended = {name: traffic.mark() for name, traffic in groups.items()}
            time.sleep(2)
        finally:
            for traffic in groups.values():
                traffic.__exit__(None, None, None)
        if done.returncode != 0:
            raise RuntimeError(f"sygmax upgrade failed:\n{done.stdout}\n{done.stderr}")
        print(done.stdout, file=sys.stderr)

        def figures(name: str, traffic: Traffic) -> dict:
            steady_rps = rate(steady_start[name], steady_end[name])
            upgrade_rps = rate(steady_end[name], ended[name])
            failed = before[name]
            return {
                "clients": traffic.clients,
                "steady_rps": round(steady_rps, 1),
                "upgrade_rps": round(upgrade_rps, 1),
                "ratio_upgrade_over_steady": round(upgrade_rps / max(steady_rps, 1e-9), 3),
                "requests_ok_during_upgrade": ended[name][1] - steady_end[name][1],
                "failed_during_upgrade": len(traffic.failures) - failed,
                "failures_sample": traffic.failures[failed:][:3],
            }

        report = {
            "benchmark": "upgrade",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "from_version": __version__,
            "to_version": node.info(token)["version"],
            "upgrade_wall_s": round(seconds, 1),
            "caddy_config_changes_during_upgrade": loads,
            "steady_seconds": args.steady_seconds,
            **{name: figures(name, traffic) for name, traffic in groups.items()},
            "workspaces_created_under_load": sum(len(traffic.created) for traffic in groups.values()),
        }
        emit(report, ROOT / "bench" / "results" / "upgrade.json", write=not args.no_write)
    finally:
        node.uninstall()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
