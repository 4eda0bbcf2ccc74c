"""The client never follows a redirect: its X-API-Key must not reach another host.

httpx drops `Authorization` on a cross-origin redirect but not a custom header such
as `X-API-Key`, so a caller's own `httpx.Client(follow_redirects=True)` (the
client accepts one, `http=`) would hand the key to whatever host a hostile or
misconfigured server names in `Location`. Two real servers on loopback: the
first redirects, the second (another address, 127.0.0.2) records what reaches it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse

KEY = "sk-secret-redirect-test"
JOB = {"id": "j_" + "a" * 32, "state": "queued", "status_url": "/status/x", "created": True}


class Server:
    """Answers every request with `status` and `location`; records request headers."""

    def __init__(self, host: str, status: int, location: str = "") -> None:
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append(dict(self.headers.items()))
                body = json.dumps(JOB).encode()  # a whole answer, as if it were one
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hosts() -> Iterator[tuple[Server, Server]]:
    other = Server("127.0.0.2", 200)
    redirecting = Server("127.0.0.1", 307, other.url + "/enqueue")
    yield redirecting, other
    redirecting.close()
    other.close()


def test_a_redirect_to_another_host_is_not_followed_even_by_a_following_http(hosts) -> None:
    redirecting, other = hosts
    http = httpx.Client(follow_redirects=True, timeout=5)
    spool = Client(redirecting.url, KEY, retry=RetryPolicy(attempts=1), http=http)
    with http, spool, pytest.raises(UnexpectedResponse) as caught:
        spool.enqueue("echo", {})
    assert other.seen == []  # the key never left for the other host
    assert len(redirecting.seen) == 1
    assert caught.value.status == 307
    assert f"redirecting to {other.url}/enqueue (not followed" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_the_async_client_does_not_follow_one_either(hosts) -> None:
    redirecting, other = hosts

    async def main() -> None:
        http = httpx.AsyncClient(follow_redirects=True, timeout=5)
        async with (
            http,
            AsyncClient(redirecting.url, KEY, retry=RetryPolicy(attempts=1), http=http) as spool,
        ):
            with pytest.raises(UnexpectedResponse):
                await spool.get("j_" + "a" * 32)

    asyncio.run(main())
    assert other.seen == []
    assert len(redirecting.seen) == 1


def test_a_redirect_whose_body_looks_like_an_answer_is_not_taken_for_one(hosts) -> None:
    """The default httpx client does not follow; a 3xx's JSON is still not the answer."""
    redirecting, other = hosts
    spool = Client(redirecting.url, KEY, retry=RetryPolicy(attempts=1))
    with spool, pytest.raises(UnexpectedResponse) as caught:
        spool.enqueue("echo", {})
    assert caught.value.status == 307
    assert other.seen == []
