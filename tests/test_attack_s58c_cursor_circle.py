"""A listing whose pages lead round in a circle ends with an UnexpectedResponse.

Found in s58 (helper C2) with a hostile server on a loopback port whose listing pages
named each other as next_cursor (?cursor=a answered next_cursor "b", ?cursor=b answered
"a"). The clients refused only a page naming the very cursor it was asked with, so
they followed the circle forever: `spool jobs --all`, which prints when the listing
ends, ran until killed, printing nothing, its memory past 360 MB after 20 s and
growing; Client.list() and dead_letters() (and the async client's) never ended.
Every cursor one listing has asked with is now remembered, and meeting one again
ends it. A real server's cursors are (created_at, id) places, each past the last,
so none comes twice in a listing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, UnexpectedResponse
from tests.canned_answers import CannedServer
from tests.procs import guarded_env
from tests.test_client_probe import JOB

SPOOL = Path(sys.executable).with_name("spool")
KEY = "circle-key-0123456789"


class Pages(CannedServer):
    """A server answering GET /jobs and /dlq with one job and the next_cursor `leads`
    names for the cursor asked with (None: the first page). `asked`: each cursor asked."""

    def __init__(self, leads: dict[str | None, str | None]) -> None:
        self.asked: list[str | None] = []

        def page(path: str) -> dict[str, object]:
            given = parse_qs(urlsplit(path).query).get("cursor", [None])[0]
            self.asked.append(given)
            return {"jobs": [JOB], "next_cursor": leads[given]}

        super().__init__(200, page)


@pytest.fixture
def circle() -> Iterator[Pages]:
    """a -> b -> c -> a, after a first page that leads to a."""
    server = Pages({None: "a", "a": "b", "b": "c", "c": "a"})
    yield server
    server.close()


def test_spool_jobs_all_ends_on_a_circle_of_two(tmp_path: Path) -> None:
    """The command as found: before, it never ended (killed here after 60 s)."""
    server = Pages({None: "a", "a": "b", "b": "a"})
    try:
        proc = subprocess.Popen(
            [str(SPOOL), "jobs", "--all"],
            cwd=tmp_path,
            env=guarded_env(SPOOL_URL=server.url, SPOOL_API_KEY=KEY),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"`spool jobs --all` went round the circle ({len(server.asked)} pages)")
    finally:
        server.close()
    assert proc.returncode == 1, err
    # The pages before the circle was met, printed as they came (stop 59: streamed).
    assert len(out.splitlines()) == 1 + 3
    [line] = err.splitlines()
    assert "already asked with" in line and "never end" in line, line
    assert server.asked == [None, "a", "b"]


def test_both_listings_of_the_client_end_on_a_circle(circle: Pages) -> None:
    with Client(circle.url, KEY, retry=RetryPolicy(attempts=1)) as spool:
        with pytest.raises(UnexpectedResponse, match="already asked with"):
            list(spool.list())
        with pytest.raises(UnexpectedResponse, match="already asked with"):
            list(spool.dead_letters())
    assert circle.asked == [None, "a", "b", "c"] * 2


def test_the_async_client_ends_too(circle: Pages) -> None:
    async def listed() -> None:
        async with AsyncClient(circle.url, KEY, retry=RetryPolicy(attempts=1)) as spool:
            with pytest.raises(UnexpectedResponse, match="already asked with"):
                [job async for job in spool.list()]
            with pytest.raises(UnexpectedResponse, match="already asked with"):
                [job async for job in spool.dead_letters()]

    asyncio.run(listed())
    assert circle.asked == [None, "a", "b", "c"] * 2


def test_a_circle_back_to_the_caller_s_own_cursor_ends(circle: Pages) -> None:
    with Client(circle.url, KEY, retry=RetryPolicy(attempts=1)) as spool:
        pages = spool.pages(cursor="b")
        with pytest.raises(UnexpectedResponse, match="already asked with"):
            list(pages)
    assert circle.asked == ["b", "c", "a"]


def test_a_page_naming_itself_is_still_told_as_before() -> None:
    server = Pages({None: "a", "a": "a"})
    try:
        with (
            Client(server.url, KEY, retry=RetryPolicy(attempts=1)) as spool,
            pytest.raises(UnexpectedResponse, match="the cursor it was asked for"),
        ):
            list(spool.list())
    finally:
        server.close()


def test_a_listing_that_ends_is_read_whole() -> None:
    server = Pages({None: "a", "a": "b", "b": "c", "c": None})
    try:
        with Client(server.url, KEY, retry=RetryPolicy(attempts=1)) as spool:
            assert len(list(spool.list())) == 4
    finally:
        server.close()
    assert server.asked == [None, "a", "b", "c"]
