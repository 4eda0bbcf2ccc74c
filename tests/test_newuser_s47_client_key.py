"""A Python client made without a key says where the key goes.

A newcomer who ran the README's client sample in a shell without the `export` line
got `Unauthorized: 401 unauthorized: missing API key: send it in the X-API-Key
header`: a header their code never writes. `spool` says "Pass the key with --key or
SPOOL_API_KEY"; the client now says its own way: `Client(url, key)` or SPOOL_API_KEY.
A wrong key, which the client did send, reads as before.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from spool_client import AsyncClient, Client, Unauthorized

URL = "http://127.0.0.1:9"
MISSING = "missing API key: send it in the X-API-Key header"
INVALID = "invalid API key"
HINT = "this client sends no API key: give it as Client(url, key) or in SPOOL_API_KEY"


def _answer(request: httpx.Request) -> httpx.Response:
    said = INVALID if request.headers.get("X-API-Key") else MISSING
    body = {"error": {"code": "unauthorized", "message": said, "details": None}}
    return httpx.Response(401, json=body)


def test_the_sync_client_without_a_key_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)
    with (
        httpx.Client(transport=httpx.MockTransport(_answer)) as http,
        Client(URL, http=http) as spool,
        pytest.raises(Unauthorized) as refused,
    ):
        spool.enqueue("echo", {})
    assert HINT in str(refused.value)
    assert refused.value.message.startswith("missing API key")  # the server's words kept


def test_the_async_client_without_a_key_says_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)

    async def enqueue() -> None:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(_answer)) as http,
            AsyncClient(URL, http=http) as spool,
        ):
            await spool.enqueue("echo", {})

    with pytest.raises(Unauthorized) as refused:
        asyncio.run(enqueue())
    assert HINT in str(refused.value)


def test_a_wrong_key_reads_as_before() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(_answer)) as http,
        Client(URL, "wrong-key-0123456789", http=http) as spool,
        pytest.raises(Unauthorized) as refused,
    ):
        spool.enqueue("echo", {})
    assert str(refused.value) == "401 unauthorized: invalid API key"
