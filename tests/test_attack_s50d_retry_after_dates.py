"""A Retry-After date whose numbers overflow (an hour, day or year of twenty digits,
or a zone offset past any int): email.utils.parsedate_to_datetime raises OverflowError
for them, not ValueError. Read by the Python client, that escaped every call as a bare
OverflowError (any answer carrying the header, a 400 too); read by an http_request job
it failed the attempt as an OverflowError instead of the retryable status it was.
Now such a date is as if absent, as other unreadable values are. Real loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from spool_client import AsyncClient, BadRequest, Client, RetryPolicy, Unavailable
from tests.canned_answers import canned_servers
from tests.test_http_request import Served, jail, run, served  # noqa: F401 (fixtures)

OVERFLOWING = [
    "Fri, 31 Dec 2026 99999999999999999999:00:00 GMT",
    "Fri, 99999999999999999999 Dec 2026 00:00:00 GMT",
    "Fri, 31 Dec 99999999999999999999 00:00:00 GMT",
    "Fri, 31 Dec 2026 00:00:00 +99999999999999999999",
]
KEY = "attack-s50d-key-0123456789"


@pytest.fixture
def refusing() -> Iterator[Callable[[int, str], str]]:
    """A server answering `status`, a JSON error and the given Retry-After."""
    error = {"error": {"code": "x", "message": "no"}}
    with canned_servers() as start:
        yield lambda status, retry_after: start(status, error, {"Retry-After": retry_after})


RETRY = RetryPolicy(attempts=2, base=0.01, cap=0.01, deadline=5)


@pytest.mark.parametrize("value", OVERFLOWING)
def test_the_client_reads_an_overflowing_date_as_no_retry_after(refusing: Any, value: str) -> None:
    with (
        Client(refusing(503, value), KEY, timeout=5, retry=RETRY) as spool,
        pytest.raises(Unavailable) as caught,
    ):
        spool.health()
    assert caught.value.retry_after is None
    with (
        Client(refusing(400, value), KEY, timeout=5, retry=RETRY) as spool,
        pytest.raises(BadRequest),
    ):
        spool.health()


def test_the_async_client_too(refusing: Any) -> None:
    url = refusing(503, OVERFLOWING[0])

    async def health() -> None:
        async with AsyncClient(url, KEY, timeout=5, retry=RETRY) as spool:
            await spool.health()

    with pytest.raises(Unavailable):
        asyncio.run(asyncio.wait_for(health(), 10))


@pytest.mark.parametrize("value", OVERFLOWING)
def test_an_http_request_job_reads_it_as_a_retryable_status(served: Served, value: str) -> None:  # noqa: F811
    from urllib.parse import quote

    from chalicelib.builtin import http_request as hr

    with pytest.raises(hr.RetryableStatus, match="503"):
        run(served.url(f"/status?code=503&retry_after={quote(value)}"))
