"""The client calls a loopback server directly, whatever proxy the environment names.

With HTTP_PROXY (or ALL_PROXY) set, as on many company laptops, every call the
client and `spool --url` made to http://127.0.0.1:8000 went to that proxy instead,
X-API-Key and payload in clear, and failed there (502): a proxy elsewhere cannot
reach this machine's loopback. A loopback URL may be a tunnel to a real server
(`kubectl port-forward`), its key a production one. Against a real `spool serve`
server and a loopback listener standing in for the proxy (spool_client/direct.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.server import Server
from spool_client import NO_RETRY, AsyncClient, Client, ServerError
from spool_client.direct import goes_direct, loopback_host
from tests.apikit import KEY_A
from tests.recording_proxy import Proxy
from tests.served import served

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """The proxy, named by every variable httpx reads (upper and lower case), no NO_PROXY."""
    running = Proxy()
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in PROXY_VARIABLES[:3]:
        monkeypatch.setenv(name, running.url)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Server]:
    with served(tmp_path) as running:
        yield running


def test_the_client_calls_a_loopback_server_past_the_proxy(proxy: Proxy, spool: Server) -> None:
    with Client(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY) as client:
        job = client.enqueue("echo", {"hello": "world"})
        assert client.get(job.id).id == job.id
    assert proxy.seen == []


def test_the_async_client_calls_a_loopback_server_past_the_proxy(
    proxy: Proxy, spool: Server
) -> None:
    async def calls() -> str:
        async with AsyncClient(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY) as client:
            job = await client.enqueue("echo", {"hello": "world"})
            return (await client.get(job.id)).id

    assert asyncio.run(asyncio.wait_for(calls(), 30))
    assert proxy.seen == []


def test_a_client_made_after_a_fork_still_goes_direct(proxy: Proxy, spool: Server) -> None:
    """The pool a forked child makes for itself takes the same mounts."""
    with Client(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY) as client:
        client._pid = -1  # as if this process were a fork of the one that made it
        client.health()
    assert proxy.seen == []


def test_another_host_still_goes_through_the_proxy(proxy: Proxy) -> None:
    """The environment's proxy is kept for every other host (docs/client.md, Proxies)."""
    with (
        Client("http://spool.example:8000", KEY_A, retry=NO_RETRY) as client,
        pytest.raises(ServerError),
    ):
        client.health()
    assert len(proxy.seen) == 1
    assert proxy.seen[0].startswith(b"GET http://spool.example:8000/health HTTP/1.1\r\n")


def test_a_client_of_the_callers_own_is_used_as_given(proxy: Proxy, spool: Server) -> None:
    """http=httpx.Client(proxy=...) is how a debugging proxy is put in front of loopback."""
    url = f"http://127.0.0.1:{spool.port}"
    with (
        httpx.Client(proxy=proxy.url) as http,
        Client(url, KEY_A, retry=NO_RETRY, http=http) as client,
        pytest.raises(ServerError),
    ):
        client.health()
    assert len(proxy.seen) == 1


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.5.6.7", True),
        ("https://[::1]:8443/base", True),
        ("http://[::ffff:127.0.0.1]:8000", True),
        ("http://LocalHost:8000", True),
        ("http://localhost.:8000", True),
        ("http://spool.localhost:8000", True),
        ("http://user:pw@127.0.0.1:8000", True),
        ("https://spool.example", False),
        ("http://10.0.0.5:8000", False),
        ("http://localhost.example:8000", False),
        ("http://127.0.0.1.example:8000", False),
    ],
)
def test_which_urls_go_direct(url: str, direct: bool) -> None:
    assert goes_direct(url) is direct


def test_a_socks_proxy_without_its_package_does_not_stop_loopback_calls(
    proxy: Proxy, spool: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ALL_PROXY=socks5://... without socksio: httpx refused to make the client at all
    (ImportError, `spool: unexpected error`), whatever the server's address."""
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1")
    with Client(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY) as client:
        assert client.health()["status"] == "ok"

    async def health() -> None:
        async with AsyncClient(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY) as aio:
            await aio.health()

    asyncio.run(asyncio.wait_for(health(), 30))
    assert proxy.seen == []


def test_loopback_host() -> None:
    assert loopback_host("127.0.0.1") and loopback_host("::1") and loopback_host("LOCALHOST")
    assert not loopback_host("") and not loopback_host("0.0.0.0") and not loopback_host("::")


def test_an_async_client_used_from_a_new_loop_still_goes_direct(
    proxy: Proxy, spool: Server
) -> None:
    """The pool the async client makes for a second event loop takes the same mounts."""
    client = AsyncClient(f"http://127.0.0.1:{spool.port}", KEY_A, retry=NO_RETRY)

    async def health() -> None:
        await client.health()

    asyncio.run(asyncio.wait_for(health(), 30))
    asyncio.run(asyncio.wait_for(health(), 30))  # a new loop: a new pool
    asyncio.run(asyncio.wait_for(client.aclose(), 30))
    assert proxy.seen == []
