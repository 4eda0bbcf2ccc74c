"""A Client that fell back to http://127.0.0.1:8000 and cannot reach it says so.

Found following docs/client.md as a new user: `Client()` in a shell where SPOOL_URL
was not exported (a new terminal; or the server on another port, `PORT=8080 make
run`, `spool serve --port N`) raised "cannot reach http://127.0.0.1:8000:
ConnectError: [Errno 111] Connection refused", naming an address the user never
gave, with no word that it was the default or what sets another. Now the message
says the URL was the default because none was given and SPOOL_URL is unset, and
how to give one. A URL that was given keeps its message as it was.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from spool_client import AsyncClient, Client, RetryPolicy, TransportError, calls

HINT = "no URL was given and SPOOL_URL is unset"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nothing_listens_on_the_default(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default pointed at a port nothing listens on (8000 may be a real server's)."""
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(calls, "DEFAULT_URL", url)
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.setenv("SPOOL_API_KEY", "dev-key-of-sixteen-chars")
    return url


def test_the_sync_client_says_the_url_was_the_default(nothing_listens_on_the_default: str) -> None:
    with Client(retry=RetryPolicy(attempts=1)) as spool, pytest.raises(TransportError) as raised:
        spool.health()
    message = str(raised.value)
    assert f"cannot reach {nothing_listens_on_the_default}" in message
    assert HINT in message and "Client(url, key)" in message and "export SPOOL_URL" in message


def test_the_async_client_says_the_url_was_the_default(nothing_listens_on_the_default: str) -> None:
    async def call() -> str:
        async with AsyncClient(retry=RetryPolicy(attempts=1)) as spool:
            try:
                await spool.health()
            except TransportError as exc:
                return str(exc)
        raise AssertionError("the call succeeded")

    message = asyncio.run(call())
    assert HINT in message and "AsyncClient(url, key)" in message


@pytest.mark.parametrize("given", ["argument", "SPOOL_URL"])
def test_a_url_that_was_given_has_no_such_hint(
    nothing_listens_on_the_default: str, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    if given == "SPOOL_URL":
        monkeypatch.setenv("SPOOL_URL", url)
    client = Client(url if given == "argument" else None, retry=RetryPolicy(attempts=1))
    with client as spool, pytest.raises(TransportError) as raised:
        spool.health()
    assert f"cannot reach {url}" in str(raised.value) and HINT not in str(raised.value)
