"""A listing's next_cursor from a broken or hostile server: anything but a short,
non-empty string is an UnexpectedResponse naming it, raised before it is sent back
(a 100,000-character cursor escaped as a bare ValueError blaming the caller's
arguments; a dict or a list was sent back as the next page's ?cursor=, then
reported as "the cursor it was asked for"). Real loopback servers, both clients."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse
from tests.test_client_probe import JOB


class PageServer:
    """Answers every GET with one page of one job and the given next_cursor."""

    def __init__(self, cursor: Any) -> None:
        self.paths: list[str] = []
        body = json.dumps({"jobs": [JOB], "next_cursor": cursor}).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def pages() -> Iterator[Any]:
    made: list[PageServer] = []

    def start(cursor: Any) -> PageServer:
        made.append(PageServer(cursor))
        return made[-1]

    yield start
    for server in made:
        server.close()


BAD_CURSORS = ["c" * 100_000, "", {"a": 1}, ["c1"], 5, True, 1.5]
NAMES = ["100k chars", "empty", "object", "list", "int", "bool", "float"]


@pytest.mark.parametrize("cursor", BAD_CURSORS, ids=NAMES)
def test_a_next_cursor_that_is_no_cursor_is_an_unexpected_response(pages, cursor: Any) -> None:
    server = pages(cursor)
    with Client(server.url, "k", retry=RetryPolicy(attempts=1)) as spool:
        with pytest.raises(UnexpectedResponse, match="next_cursor"):
            list(spool.list())
        with pytest.raises(UnexpectedResponse, match="next_cursor"):
            list(spool.dead_letters())
    assert len(server.paths) == 2  # one page each; the bad cursor was never sent back


@pytest.mark.parametrize("cursor", BAD_CURSORS, ids=NAMES)
def test_the_async_client_refuses_it_too(pages, cursor: Any) -> None:
    server = pages(cursor)

    async def listed() -> None:
        async with AsyncClient(server.url, "k", retry=RetryPolicy(attempts=1)) as spool:
            with pytest.raises(UnexpectedResponse, match="next_cursor"):
                [job async for job in spool.list()]

    asyncio.run(listed())
    assert len(server.paths) == 1
