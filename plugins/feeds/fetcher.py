"""Fetching feeds politely and safely with httpx (async).

Polite: conditional GET (``If-None-Match``/``If-Modified-Since``; a 304 is answered without
reading or parsing anything), a per-host limit on concurrent requests, timeouts, a cap on
the body size (read as a stream and abandoned as soon as it grows past the cap), and an
honest User-Agent.

Safe (SSRF): a feed URL is chosen by a user, and the server fetches it from inside the
operator's network, so only ``http``/``https`` URLs are fetched, and the connection itself
is guarded. The guard lives in the network backend under httpx (httpcore's
``connect_tcp``): it resolves the host, refuses when *any* answer is loopback, private,
link-local, multicast, reserved or otherwise not globally routable (IPv4 and IPv6, IPv4
mapped into IPv6 and NAT64 included), and then connects to the address it checked. Because
the check and the connection use the same resolved address, a DNS answer that changes
between the two (DNS rebinding) cannot slip through, and every redirect hop (followed here,
one by one, not by httpx) goes through the same door. ``feeds.allow_private_addresses``
turns the refusal off for installations that read feeds on their own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from httpcore._backends.anyio import AnyIOBackend

from sygmax import __version__

USER_AGENT = f"Sygmax-Feeds/{__version__} (+https://sygmax.dev; feed reader)"
MAX_REDIRECTS = 5
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*(\d+)", re.I)


class FetchError(Exception):
    """A fetch failed; the message is meant for the subscriber (stored on the feed)."""


class BlockedAddress(FetchError):
    """The URL points at an address the SSRF guard refuses."""


def address_blocked(address: str) -> bool:
    """Whether ``address`` is anything but a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_blocked(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return address_blocked(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip.sixtofour is not None and address_blocked(str(ip.sixtofour)):
            return True
    return (not ip.is_global or ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private
            or ip.is_reserved or ip.is_unspecified)


def check_url(url: str) -> str:
    """Refuse anything but an absolute http(s) URL with a host (file://, gopher://, ...)."""
    if _UNSAFE.search(url):
        raise BlockedAddress("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range, ...
        raise BlockedAddress(f"the URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress(f"only http and https URLs can be fetched, not {parts.scheme or 'a relative URL'}:")
    if not hostname:
        raise BlockedAddress("the URL has no host")
    return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks and pins the address it connects to."""

    def __init__(self, allow_private: bool, private_hosts: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.private_hosts = frozenset(host.lower().rstrip(".") for host in private_hosts)
        self._backend = AnyIOBackend()

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:  # an address already: no resolver round trip through the thread pool
            addresses = [str(literal)]
            if not self.allow_private and address_blocked(addresses[0]) and host.lower() not in self.private_hosts:
                raise BlockedAddress(f"{host} is a private, loopback or reserved address; fetching it is not "
                                     f"allowed (feeds.allow_private_addresses)")
            return addresses
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        except (UnicodeError, ValueError) as exc:
            raise FetchError(f"cannot resolve {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses:
            raise FetchError(f"cannot resolve {host}")
        if not self.allow_private and host.lower().rstrip(".") not in self.private_hosts:
            blocked = [address for address in addresses if address_blocked(address)]
            if blocked:
                raise BlockedAddress(f"{host} resolves to {blocked[0]}, a private, loopback or reserved address; "
                                     f"fetching it is not allowed (feeds.allow_private_addresses)")
        return addresses

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        last_error: Exception | None = None
        for address in await self.resolve(host, port):
            try:
                return await self._backend.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guarded backend under its connection pool.

    httpx does not take a network backend as an argument; its pool (httpcore) does, so the
    pool is rebuilt with the same limits and the guarded backend.
    """

    def __init__(self, allow_private: bool, max_connections: int, private_hosts: Iterable[str] = ()) -> None:
        super().__init__(verify=_shared_ssl_context(), retries=0, limits=httpx.Limits(max_connections=max_connections,
                                                         max_keepalive_connections=max_connections))
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_shared_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=GuardedBackend(allow_private, private_hosts),
        )


@dataclass
class FetchResult:
    status: int  # 200 or 304
    url: str  # the final URL after redirects
    body: bytes = b""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None
    max_age_s: int | None = None
    permanent_url: str | None = None  # set when every redirect hop was permanent (301/308)


class Fetcher:
    """One per process: a pooled client and per-host concurrency limits."""

    def __init__(self, *, allow_private: bool, timeout_s: float, max_bytes: int, per_host: int,
                 max_connections: int = 100, private_hosts: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.per_host = per_host
        self._hosts = _limits_of_loop()
        self.client = httpx.AsyncClient(
            transport=GuardedTransport(allow_private, max_connections, private_hosts),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,  # an environment proxy would connect on our behalf, past the guard
            headers={"User-Agent": USER_AGENT,
                     "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
                               "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> "Fetcher":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    def _host_limit(self, host: str) -> asyncio.Semaphore:
        semaphore = self._hosts.get(host)
        if semaphore is None:
            if len(self._hosts) > 10_000:  # forget idle hosts so the table cannot grow without bound
                for name, held in list(self._hosts.items()):
                    if not held.locked():
                        del self._hosts[name]
            semaphore = self._hosts[host] = asyncio.Semaphore(self.per_host)
        return semaphore

    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                return await self._fetch(url, etag, last_modified)
        except TimeoutError:
            raise FetchError(f"no complete answer within {self.timeout_s * 2:g} s") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}"[:300]) from None
        except httpx.InvalidURL as exc:
            raise FetchError(f"not a valid URL: {exc}"[:300]) from None
        except (httpcore.ConnectError, OSError) as exc:
            raise FetchError(f"cannot connect: {exc}"[:300]) from None
        except ValueError as exc:  # a redirect to a malformed URL (urljoin refuses it)
            raise FetchError(f"malformed redirect: {exc}"[:300]) from None

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        permanent = True
        current = check_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            headers = {}
            if etag:
                headers["If-None-Match"] = etag
            if last_modified:
                headers["If-Modified-Since"] = last_modified
            host = urlsplit(current).hostname or ""
            async with self._host_limit(host):
                async with self.client.stream("GET", current, headers=headers) as response:
                    if response.status_code in (301, 302, 303, 307, 308):
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError(f"HTTP {response.status_code} redirect without a Location")
                        permanent = permanent and response.status_code in (301, 308)
                        current = check_url(urljoin(current, location))
                        continue
                    if response.status_code == 304:
                        return FetchResult(304, current, etag=response.headers.get("etag") or etag,
                                           last_modified=response.headers.get("last-modified") or last_modified,
                                           max_age_s=_max_age(response.headers),
                                           permanent_url=current if permanent and current != url else None)
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_bytes:
                        raise FetchError(f"the feed is {int(declared):,} bytes, more than the "
                                         f"{self.max_bytes:,} allowed (feeds.max_body_bytes)")
                    chunks = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise FetchError(f"the feed is larger than the {self.max_bytes:,} bytes allowed "
                                             f"(feeds.max_body_bytes)")
                        chunks.append(chunk)
                    return FetchResult(
                        200, current, b"".join(chunks), response.headers.get("content-type", ""),
                        etag=response.headers.get("etag"), last_modified=response.headers.get("last-modified"),
                        max_age_s=_max_age(response.headers),
                        permanent_url=current if permanent and current != url else None)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _max_age(headers: httpx.Headers) -> int | None:
    value = headers.get("cache-control")
    if value:
        if "no-store" in value.lower() or "no-cache" in value.lower():
            return 0
        match = _MAX_AGE.search(value)
        if match:
            return int(match.group(1))
    return None


_ssl_context = None
_host_limits: dict[int, dict[str, asyncio.Semaphore]] = {}


def _shared_ssl_context():
    """Loading the CA bundle costs ~10 ms: build it once per process, share it between clients."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def _limits_of_loop() -> dict[str, asyncio.Semaphore]:
    """Per-host semaphores shared by every Fetcher of this event loop (the process's worker)."""
    loop_id = id(asyncio.get_running_loop())
    limits = _host_limits.get(loop_id)
    if limits is None:
        _host_limits.clear()  # a finished loop's semaphores (tests start one loop per test)
        limits = _host_limits[loop_id] = {}
    return limits


def fetcher_for(settings) -> Fetcher:
    """A Fetcher configured from the ``[feeds]`` settings; use it as ``async with``."""
    return Fetcher(allow_private=settings.allow_private_addresses, timeout_s=settings.timeout_s,
                   max_bytes=settings.max_body_bytes, per_host=settings.per_host_concurrency,
                   private_hosts=settings.private_hosts)
