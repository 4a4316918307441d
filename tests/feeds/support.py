"""A local HTTP server that plays every kind of feed host the tests need.

It runs in a thread (http.server, no extra dependency) on a free loopback port and serves:

* ``/f/<fixture>``: a file from tests/fixtures/feeds with an ETag and Last-Modified; a
  matching ``If-None-Match`` or ``If-Modified-Since`` gets ``304 Not Modified``;
* ``/dyn/<key>``: a document the test sets in ``server.documents[key]`` (same validators);
* ``/redirect/<code>?to=<path or URL>``: a redirect with that status;
* ``/slow``: answers after ``server.slow_s`` seconds; ``/huge``: an endless chunked body;
  ``/huge-declared``: announces 100 MB; ``/status/<code>``: an error status;
* ``/cache/<fixture>``: the fixture with ``Cache-Control: max-age=7200``.

Every request is recorded in ``server.requests`` (path and headers), so tests can count
fetches and see the conditional headers.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
LAST_MODIFIED = "Wed, 05 Jun 2024 18:30:02 GMT"
# A 1x1 transparent PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")
TYPES = {".xml": "application/xml", ".json": "application/feed+json", ".html": "text/html; charset=utf-8"}


class FeedServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.documents: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.slow_s = 3.0
        self.in_flight = 0  # requests being answered now, and the most there ever were at once
        self.most_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def do_GET(self):
                with server.lock:
                    server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    server.handle(self)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "FeedServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for requested, _ in self.requests if requested == path)

    # -------------------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        path = parts.path
        if path.startswith("/f/") or path.startswith("/cache/"):
            name = path.split("/", 2)[2]
            file = FIXTURES / name
            if not file.is_file() or ".." in name:
                return self.send(request, 404, b"not found", "text/plain")
            extra = {"Cache-Control": "max-age=7200"} if path.startswith("/cache/") else {}
            return self.document(request, file.read_bytes(), TYPES.get(file.suffix, "application/xml"), extra)
        if path.startswith("/dyn/"):
            body = self.documents.get(path[5:])
            if body is None:
                return self.send(request, 404, b"not found", "text/plain")
            return self.document(request, body, "application/rss+xml")
        if path.startswith("/redirect/"):
            code = int(path.split("/")[2])
            target = parse_qs(parts.query)["to"][0]
            return self.send(request, code, b"", "text/plain", {"Location": target})
        if path.startswith("/img/"):
            kind = path.rsplit(".", 1)[-1]
            if kind == "png":
                return self.send(request, 200, PNG, "image/png")
            if kind == "svg":
                return self.send(request, 200, b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>",
                                 "image/svg+xml")
            return self.send(request, 200, b"<html>not an image</html>", "text/html")
        if path == "/slow":
            time.sleep(self.slow_s)
            return self.document(request, (FIXTURES / "rss2.xml").read_bytes(), "application/xml")
        if path == "/huge":
            request.send_response(200)
            request.send_header("Content-Type", "application/rss+xml")
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            chunk = b"<!-- " + b"x" * 65_000 + b" -->\n"
            try:
                head = b"<?xml version='1.0'?><rss version='2.0'><channel>"
                request.wfile.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
                for _ in range(400):  # 26 MB unless the client hangs up first
                    request.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                request.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        if path == "/huge-declared":
            return self.send(request, 200, b"<rss>", "application/rss+xml", {"Content-Length": str(100 * 1024 * 1024)},
                             declared=True)
        if path.startswith("/status/"):
            return self.send(request, int(path.split("/")[2]), b"error page", "text/html")
        return self.send(request, 404, b"not found", "text/plain")

    def document(self, request, body: bytes, content_type: str, extra: dict | None = None) -> None:
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED, **(extra or {})}
        if request.headers.get("If-None-Match") == etag or (
                request.headers.get("If-None-Match") is None and request.headers.get("If-Modified-Since") == LAST_MODIFIED):
            return self.send(request, 304, b"", content_type, headers)
        return self.send(request, 200, body, content_type, headers)

    @staticmethod
    def send(request, status: int, body: bytes, content_type: str, headers: dict | None = None,
             declared: bool = False) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        if not declared:
            request.send_header("Content-Length", str(len(body)) if status != 304 else "0")
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        if status != 304:
            try:
                request.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass


def rss(items: list[tuple], title: str = "Dynamic feed") -> bytes:
    """An RSS 2.0 document with (guid, title[, link path]) items, newest first."""
    entries = "".join(
        f"<item><guid isPermaLink='false'>{item[0]}</guid><title>{item[1]}</title>"
        f"<link>https://dyn.example.org/{item[2] if len(item) > 2 else item[0]}</link>"
        f"<description>Body of {item[1]}</description></item>"
        for item in items)
    return (f"<?xml version='1.0'?><rss version='2.0'><channel><title>{title}</title>"
            f"<link>https://dyn.example.org/</link>{entries}</channel></rss>").encode()
