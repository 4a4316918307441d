"""Throwaway real servers for tests and benchmarks: PostgreSQL, Redis and an S3 peer.

Each starts on a free loopback port in its own temporary directory and is torn down by
``stop()``. Nothing here assumes a service is already running on the machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_block(size: int) -> int:
    """A base port with ``size`` free loopback ports after it (an appliance node's port block)."""
    for base in range(21000, 60000, 97):
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} not found: install the postgresql package")


def _as_unprivileged() -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user when root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:  # pragma: no cover - depends on the host
        raise RuntimeError("running as root needs a 'postgres' system user (apt install postgresql)") from exc
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sygmax-pg-")))
    user: str = "sygmax"
    password: str = "sygmax-test"
    # Extra server settings, e.g. {"archive_mode": "on", "archive_command": "..."} (backup tests).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "sygmax") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PostgresServer":
        prefix = _as_unprivileged()
        if prefix:
            shutil.chown(self.directory, user="postgres", group="postgres")
        pwfile = self.directory / "pw"
        pwfile.write_text(self.password)
        if prefix:
            shutil.chown(pwfile, user="postgres", group="postgres")
        subprocess.run(
            [*prefix, _pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(pwfile),
             "-A", "scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C.UTF-8"],
            check=True, capture_output=True,
        )
        self.launch()
        self.psql("postgres", "CREATE DATABASE sygmax")
        return self

    def launch(self) -> None:
        """Start the postmaster on the existing data directory (also after a test stopped it)."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        options += "".join(f" -c {key}='{value}'" for key, value in self.settings.items())
        subprocess.run(
            [*_as_unprivileged(), _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-o", options,
             "-l", str(self.directory / "log"), "-w", "start"],
            check=True, capture_output=True,
        )

    def halt(self) -> None:
        """Stop the postmaster cleanly, keeping the data directory."""
        subprocess.run(
            [*_as_unprivileged(), _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            check=True, capture_output=True,
        )

    def psql(self, database: str, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            check=True, capture_output=True, text=True, env=env,
        )
        return done.stdout

    def stop(self) -> None:
        subprocess.run(
            [*_as_unprivileged(), _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sygmax-redis-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class S3Server:
    """moto's S3 server mode: a real S3-protocol peer over HTTP (MinIO cannot be installed here)."""

    port: int = field(default_factory=free_port)
    access_key: str = "testing-access"
    secret_key: str = "testing-secret"
    _server: object | None = None

    def url(self, bucket: str) -> str:
        return f"s3://{self.access_key}:{self.secret_key}@127.0.0.1:{self.port}/{bucket}"

    def start(self) -> "S3Server":
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
