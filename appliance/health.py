"""Probes of a node's processes and services (blocking; stdlib only)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, dict | None]:
    """(status, JSON body or None) of GET http://127.0.0.1:port/path; status 0 if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def process_health(port: int, timeout: float = 2.0) -> Probe:
    status, _ = http_get(port, "/healthz", timeout)
    if status == 200:
        return Probe(True, "healthy")
    return Probe(False, "not answering" if status == 0 else f"/healthz answered {status}")


def upstream_check(port: int, header: str, timeout: float = 2.0) -> int:
    """The status a process gives the proxy's active check (``header`` set): 200 in rotation, 503
    draining; 0 if it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={header: "1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code
    except (OSError, urllib.error.URLError):
        return 0


def readiness(port: int, timeout: float = 5.0) -> Probe:
    status, body = http_get(port, "/readyz", timeout)
    if status == 200:
        return Probe(True, "ready")
    if status == 0:
        return Probe(False, "not answering")
    failed = (body or {}).get("failed") or []
    return Probe(False, f"not ready: {', '.join(failed) or status}")


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(port: int, password: str, timeout: float = 2.0) -> Probe:
    """AUTH + PING over a raw socket (RESP), so the probe needs no client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            auth = f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n".encode()
            sock.sendall(auth + b"*1\r\n$4\r\nPING\r\n")
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return Probe(False, f"unreachable: {exc}")
    if data.startswith(b"+OK\r\n+PONG"):
        return Probe(True, "answers PING")
    return Probe(False, data.split(b"\r\n")[0].decode(errors="replace") or "no answer")
