"""`Client.enqueue(delay="1h")`: the forms `spool enqueue --delay` takes.

The CLI read `--delay 1h`, but the client sent the text as it was and the server
refused it with a 422. The client now reads the same grammar (chalicelib/durations.py,
which spool_client/durations.py links to) and sends seconds; text that is not a
duration is a ValueError naming the forms, raised before any request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from spool_client import AsyncClient, Client
from spool_client.calls import JobSpec

SENT: list[dict[str, Any]] = []


def _enqueued(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    SENT.extend(body.get("jobs", [body]))
    answer = {"id": "j_1", "state": "queued", "status_url": "/status/j_1", "created": True}
    return httpx.Response(201, json=answer)


def _no_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"a request was sent: {request.url}")


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600.0), ("30s", 30.0), ("1h30m", 5400.0), ("90", 90.0)]
)
def test_the_sync_client_sends_a_delay_written_as_the_cli_takes_it(
    text: str, seconds: float
) -> None:
    SENT.clear()
    http = httpx.Client(transport=httpx.MockTransport(_enqueued))
    with http, Client("http://127.0.0.1:9", "k", http=http) as c:
        c.enqueue("echo", {"n": 1}, delay=text)
    assert SENT[-1]["delay"] == seconds


def test_the_async_client_does_the_same() -> None:
    SENT.clear()

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(_enqueued))
        async with http, AsyncClient("http://127.0.0.1:9", "k", http=http) as c:
            await c.enqueue("echo", {"n": 1}, delay="2m")

    asyncio.run(run())
    assert SENT[-1]["delay"] == 120.0


@pytest.mark.parametrize("text", ["1 hour", "1x", "-5s", "soon"])
def test_text_that_is_not_a_duration_is_refused_before_any_request(text: str) -> None:
    http = httpx.Client(transport=httpx.MockTransport(_no_request))
    with http, Client("http://127.0.0.1:9", "k", http=http) as c:
        with pytest.raises(ValueError) as refused:
            c.enqueue("echo", {"n": 1}, delay=text)
        with pytest.raises(ValueError):
            c.enqueue_many([JobSpec("echo", {"n": 1}, delay=text)])
    said = str(refused.value)
    assert said.startswith("delay") and "'1h30m'" in said and "'90s'" in said, said
