"""A compressed answer is held to max_answer_bytes as it is inflated, not after.

httpx inflates each piece of a gzip or deflate body whole: one 64 KiB piece of
zeros becomes 64 MiB before the client counts a byte of it, so a server answering
a 1 MiB gzip "bomb" made a client with max_answer_bytes=1 MiB hold 130 MiB and
more. Real loopback servers; memory measured with tracemalloc (allocations, not
time), both clients."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from spool_client import AnswerTooLarge, AsyncClient, Client, RetryPolicy, TransportError
from tests.canned_http import CannedServer

LIMIT = 1 << 20


@functools.cache
def _bomb(wbits: int) -> bytes:
    """256 MiB of zeros, compressed (about 256 KiB). Made once per encoding and process:
    compressing it at level 9 took 1-13 s (a loaded machine), and each of the 12 tests
    with a bomb made its own; the bytes are the same every time."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = b"\0" * (1 << 20)
    return b"".join(comp.compress(zeros) for _ in range(256)) + comp.flush()


def answering(body: bytes, encoding: str) -> CannedServer:
    """Answers every request with this body under this Content-Encoding."""
    return CannedServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.fixture(params=[("gzip", 31), ("deflate", 15), ("deflate", -15)], ids=str)
def bomb(request: pytest.FixtureRequest) -> Iterator[CannedServer]:
    encoding, wbits = request.param
    server = answering(_bomb(wbits), encoding)
    yield server
    server.close()


def _peak(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compressed_bomb_is_refused_within_the_limit(bomb: CannedServer) -> None:
    def call() -> None:
        client = Client(bomb.url, "k", retry=RetryPolicy(attempts=1), max_answer_bytes=LIMIT)
        with client, pytest.raises(AnswerTooLarge):
            client.health()

    assert _peak(call) < 8 * LIMIT


def test_a_wait_try_on_its_own_thread_is_bounded_too(bomb: CannedServer) -> None:
    """wait() runs each try on a thread of its own (Client._exchange)."""

    def call() -> None:
        client = Client(bomb.url, "k", retry=RetryPolicy(attempts=1), max_answer_bytes=LIMIT)
        with client, pytest.raises(AnswerTooLarge):
            client.wait("j_" + "a" * 32, timeout=5)

    assert _peak(call) < 8 * LIMIT


def test_the_async_client_is_bounded_too(bomb: CannedServer) -> None:
    async def go() -> None:
        async with AsyncClient(
            bomb.url, "k", retry=RetryPolicy(attempts=1), max_answer_bytes=LIMIT
        ) as c:
            with pytest.raises(AnswerTooLarge):
                await c.health()

    assert _peak(lambda: asyncio.run(go())) < 8 * LIMIT


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_a_compressed_answer_within_the_limit_is_read(encoding: str) -> None:
    answer = json.dumps({"status": "ok", "pad": "x" * 100_000}).encode()
    body = {
        "gzip": gzip.compress(answer),
        "deflate": zlib.compress(answer),
        "identity": answer,
    }[encoding]
    server = answering(body, encoding)
    try:
        with Client(server.url, "k", retry=RetryPolicy(attempts=1)) as c:
            assert c.health()["status"] == "ok"
    finally:
        server.close()


def test_a_corrupt_or_unknown_coding_is_a_transport_error() -> None:
    for body, encoding in [(b"not gzip", "gzip"), (b"{}", "x-unknown"), (b"{}", "br, gzip")]:
        server = answering(body, encoding)
        try:
            client = Client(server.url, "k", retry=RetryPolicy(attempts=1))
            with client, pytest.raises(TransportError, match="DecodingError"):
                client.health()
        finally:
            server.close()


def test_the_client_asks_only_for_the_codings_it_reads() -> None:
    """httpx adds br and zstd to Accept-Encoding when their packages are installed;
    an answer in one of them could not be read (above), so they are not asked for."""
    heads: list[bytes] = []
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            heads.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with Client(url, "k", http=httpx.Client(headers={"Accept-Encoding": "br, zstd"})) as c:
            c.health()
    finally:
        sock.close()
    [head] = heads
    assert b"\r\naccept-encoding: gzip, deflate\r\n" in head.lower()


def test_an_answer_its_transport_read_already_is_read_and_held_to_the_limit() -> None:
    """httpx.MockTransport (and any transport answering with whole content) hands over a
    body already read, which iter_raw() refuses (StreamConsumed): it is taken as it is,
    and still held to max_answer_bytes."""
    pad = {"size": 10}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ok", "pad": "x" * pad["size"]})

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        client = Client("http://spool.test", "k", http=http, max_answer_bytes=LIMIT)
        assert client.health()["status"] == "ok"
        pad["size"] = 2 * LIMIT
        with pytest.raises(AnswerTooLarge):
            client.health()


def test_each_bomb_is_compressed_once_per_process() -> None:
    """Twelve tests answer with a bomb: each compressed 256 MiB anew in its setup."""
    assert _bomb(-15) is _bomb(-15)
