"""A listing's next_cursor from a broken or hostile server: anything but a short,
non-empty string is an UnexpectedResponse naming it, raised before it is sent back
(a 100,000-character cursor escaped as a bare ValueError blaming the caller's
arguments; a dict or a list was sent back as the next page's ?cursor=, then
reported as "the cursor it was asked for"). Real loopback servers, both clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse
from tests.canned_answers import CannedServer
from tests.test_client_probe import JOB


@pytest.fixture
def pages() -> Iterator[Any]:
    """start(cursor) -> a CannedServer answering every GET with one page of one job
    and that next_cursor; each is closed at the test's end."""
    made: list[CannedServer] = []

    def start(cursor: Any) -> CannedServer:
        made.append(CannedServer(200, {"jobs": [JOB], "next_cursor": cursor}))
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
