"""A server that echoes the API key back does not put it into the client's errors.

Exceptions end up in logs and error trackers; the key must not ride along. A hostile
(or debugging) server or proxy can echo it in an error's message or details, in its
reason phrase, in a redirect's Location, or in a broken status line (which httpx
quotes). Real sockets: a raw server on loopback answers what each case needs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import traceback
from collections.abc import Callable, Iterator

import pytest

from spool_client import (
    AsyncClient,
    Client,
    RetryPolicy,
    SpoolClientError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
)

KEY = "sk-echoed-secret-0123456789"
ONCE = RetryPolicy(attempts=1)


def http_answer(status_line: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    length = f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    return f"{status_line}\r\n{head}{length}\r\n".encode("latin-1") + body


@pytest.fixture
def echoing() -> Iterator[Callable[[bytes], str]]:
    """Start a server that answers every connection with `raw`; yields its URL."""
    servers: list[socket.socket] = []

    def start(raw: bytes) -> str:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        servers.append(srv)

        def loop() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.sendall(raw)

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


def everything_shown(exc: BaseException) -> str:
    """What a log line or an error tracker would record of it, causes included."""
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    parts += [repr(vars(exc))]
    return "\n".join(parts)


def raised(url: str) -> SpoolClientError:
    with Client(url, KEY, retry=ONCE, timeout=5) as spool:
        try:
            spool.get("j_" + "a" * 32)
        except SpoolClientError as exc:
            sync = exc
        else:
            raise AssertionError("no error")

    async def main() -> None:
        async with AsyncClient(url, KEY, retry=ONCE, timeout=5) as spool:
            await spool.get("j_" + "a" * 32)

    with pytest.raises(SpoolClientError) as caught:
        asyncio.run(main())
    assert KEY not in everything_shown(caught.value)
    return sync


def test_an_error_that_echoes_the_key_is_raised_without_it(echoing) -> None:
    error = {"code": "unauthorized", "message": f"unknown key {KEY}", "details": {"key": [KEY]}}
    body = json.dumps({"error": error}).encode()
    url = echoing(http_answer("HTTP/1.1 401 Unauthorized", {}, body))
    exc = raised(url)
    assert isinstance(exc, Unauthorized) and exc.code == "unauthorized"
    assert KEY not in everything_shown(exc)
    assert exc.message == "unknown key ***" and exc.details == {"key": ["***"]}


def test_a_reason_phrase_that_echoes_the_key_is_raised_without_it(echoing) -> None:
    url = echoing(http_answer(f"HTTP/1.1 401 bad {KEY}", {}, b"<html>no</html>"))
    exc = raised(url)
    assert isinstance(exc, Unauthorized)
    assert KEY not in everything_shown(exc)


def test_a_redirect_to_a_url_holding_the_key_is_raised_without_it(echoing) -> None:
    url = echoing(http_answer("HTTP/1.1 302 Found", {"Location": f"http://x/?k={KEY}"}, b""))
    exc = raised(url)
    assert isinstance(exc, UnexpectedResponse)
    assert KEY not in everything_shown(exc)


def test_a_broken_status_line_that_echoes_the_key_is_raised_without_it(echoing) -> None:
    url = echoing(f"NOT-HTTP {KEY}\r\n\r\n".encode())
    exc = raised(url)
    assert isinstance(exc, TransportError)
    assert KEY not in everything_shown(exc)
