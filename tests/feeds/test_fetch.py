"""The fetcher against a real local server: conditional GET, redirects, limits and the SSRF guard."""

from __future__ import annotations

import pytest

from plugins.feeds.fetcher import BlockedAddress, FetchError, Fetcher, address_blocked, check_url


def fetcher(allow_private: bool = True, **kwargs) -> Fetcher:
    options = {"timeout_s": 1.0, "max_bytes": 512 * 1024, "per_host": 2, **kwargs}
    return Fetcher(allow_private=allow_private, **options)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:db8::1",
])
def test_private_and_special_addresses_are_blocked(address):
    assert address_blocked(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_not(address):
    assert not address_blocked(address)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x.example/", "ftp://x.example/feed",
                                 "javascript:alert(1)", "/relative/feed", "http://", "http://host:99999/",
                                 "https://L[A/feed", "http://[::1/"])
def test_only_http_urls_are_fetched(url):
    with pytest.raises(BlockedAddress):
        check_url(url)


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "localhost", "10.1.2.3"])
async def test_guard_refuses_private_targets(feed_server, host):
    async with fetcher(allow_private=False) as guarded:
        with pytest.raises(BlockedAddress) as caught:
            await guarded.fetch(f"http://{host}:{feed_server.port}/f/rss2.xml")
    assert "not allowed" in str(caught.value)
    assert feed_server.requests == []  # refused before any connection was made


async def test_guard_checks_every_redirect_hop(feed_server):
    # "localhost" is allowed by name (an intranet host the operator trusts); its redirect to
    # 127.0.0.1 is a new host and is refused at connection time.
    target = feed_server.url("/f/rss2.xml")
    async with fetcher(allow_private=False, private_hosts=["localhost"]) as guarded:
        first = await guarded.fetch(feed_server.url("/f/rss2.xml", host="localhost"))
        assert first.status == 200
        with pytest.raises(BlockedAddress):
            await guarded.fetch(feed_server.url(f"/redirect/302?to={target}", host="localhost"))
        with pytest.raises(BlockedAddress):
            await guarded.fetch(feed_server.url("/redirect/301?to=file:///etc/passwd", host="localhost"))
    assert feed_server.hits("/f/rss2.xml") == 1


async def test_per_host_concurrency_limit(feed_server):
    import asyncio

    feed_server.slow_s = 0.3
    async with fetcher(per_host=2, timeout_s=5.0) as client:
        results = await asyncio.gather(*(client.fetch(feed_server.url("/slow")) for _ in range(6)))
    assert [result.status for result in results] == [200] * 6
    assert feed_server.most_in_flight == 2  # six wanted to go at once; the host saw two at a time


async def test_conditional_get(feed_server):
    async with fetcher() as client:
        first = await client.fetch(feed_server.url("/f/atom.xml"))
        assert first.status == 200 and first.etag and first.last_modified and first.body.startswith(b"<?xml")
        again = await client.fetch(feed_server.url("/f/atom.xml"), first.etag, first.last_modified)
        assert again.status == 304 and again.body == b""
    assert feed_server.requests[1][1]["if-none-match"] == first.etag


async def test_redirects_report_permanent_moves_only(feed_server):
    target = feed_server.url("/f/rss2.xml")
    async with fetcher() as client:
        moved = await client.fetch(feed_server.url(f"/redirect/301?to={target}"))
        assert moved.permanent_url == target and moved.url == target
        moved = await client.fetch(feed_server.url("/redirect/308?to=/f/rss2.xml"))
        assert moved.permanent_url == target
        temporary = await client.fetch(feed_server.url(f"/redirect/302?to={target}"))
        assert temporary.permanent_url is None and temporary.url == target
        chained = await client.fetch(feed_server.url(f"/redirect/301?to=/redirect/307%3Fto%3D{target}"))
        assert chained.permanent_url is None


@pytest.mark.parametrize("path, message", [
    ("/slow", "timed out"),
    ("/huge", "larger than"),
    ("/huge-declared", "more than"),
    ("/status/500", "HTTP 500"),
    ("/status/404", "HTTP 404"),
    ("/redirect/302?to=http://%5Bbroken/feed", "malformed"),
    ("/redirect/302?to=/redirect/302%3Fto%3D/redirect/302%3Fto%3D/redirect/302%3Fto%3D/redirect/302%3Fto%3D"
     "/redirect/302%3Fto%3D/f/rss2.xml", "redirects"),
])
async def test_failures_are_readable(feed_server, path, message):
    async with fetcher() as client:
        with pytest.raises(FetchError) as caught:
            await client.fetch(feed_server.url(path))
    assert message in str(caught.value)


async def test_unresolvable_and_closed_ports(feed_server):
    async with fetcher() as client:
        with pytest.raises(FetchError) as caught:
            await client.fetch("http://no-such-host.invalid/feed")
        assert "cannot resolve" in str(caught.value)
        feed_server.stop()
        with pytest.raises(FetchError):
            await client.fetch(feed_server.url("/f/rss2.xml"))
    feed_server.stop = lambda: None  # already stopped
