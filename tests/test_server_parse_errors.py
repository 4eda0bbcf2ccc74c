"""Requests waitress cannot parse, sent as a new user or a careless client sends them
(curl with an é in the URL, a space in a path, `get`, a bad Content-Length): each is
refused in Spool's error shape with a message that says what to send instead, not
waitress's bare reason ("Bad URI"), and the server goes on answering. Real sockets
on 127.0.0.1 against a real `spool serve` server."""

from __future__ import annotations

import pytest

from local.server import Server
from tests.apikit import KEY_A
from tests.served import exchange

KEY = f"X-API-Key: {KEY_A}\r\n".encode()
# Every request names its Host: an HTTP/1.1 one without is refused (RFC 9112 3.2).
CLOSE = b"Host: x\r\nConnection: close\r\n"

# (what was sent, its status, words the message must hold: what to do about it)
CASES = [
    pytest.param(
        "GET /ui/api/jobs?find=café HTTP/1.1\r\n".encode() + KEY + CLOSE + b"\r\n",
        400,
        ["percent-encode", "%C3%A9"],
        id="raw-utf8-in-query",
    ),
    pytest.param(
        b"GET /jobs?queue=a b HTTP/1.1\r\n" + KEY + CLOSE + b"\r\n",
        400,
        ["METHOD /path HTTP/1.1", "%20"],
        id="space-in-target",
    ),
    pytest.param(
        b"get /health HTTP/1.1\r\n" + CLOSE + b"\r\n",
        400,
        ["case-sensitive", "'GET'"],
        id="lower-case-method",
    ),
    pytest.param(
        b"GET /jobs HTTP/1.1\r\nX-API-Key : k\r\n" + CLOSE + b"\r\n",
        400,
        ["Name: value", "no space before the colon"],
        id="space-before-colon",
    ),
    pytest.param(
        b"POST /enqueue HTTP/1.1\r\n" + KEY + b"Content-Length: 2\r\nContent-Length: 3\r\n"
        b"" + CLOSE + b"\r\n{} ",
        400,
        ["given once", "plain digits"],
        id="content-length-twice",
    ),
    pytest.param(
        b"POST /enqueue HTTP/1.1\r\n" + KEY + b"Content-Length: 0x10\r\n" + CLOSE + b"\r\n",
        400,
        ["plain digits"],
        id="content-length-not-digits",
    ),
    pytest.param(
        b"POST /enqueue HTTP/1.1\r\n" + KEY + b"Transfer-Encoding: chunked\r\n" + CLOSE + b"\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
        400,
        ["size in hex", "Content-Length"],
        id="chunk-size-not-hex",
    ),
    pytest.param(
        b"POST /enqueue HTTP/1.1\r\n" + KEY + b"Transfer-Encoding: gzip\r\n" + CLOSE + b"\r\n",
        501,
        ["Content-Length", "Transfer-Encoding: chunked"],
        id="unknown-coding",
    ),
]


@pytest.mark.parametrize(("sent", "status", "words"), CASES)
def test_an_unparsable_request_is_told_what_to_send_instead(
    server: Server, sent: bytes, status: int, words: list[str]
) -> None:
    answered, body = exchange(server, sent)
    assert answered == status
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] in {"bad_request", "not_implemented"}
    for word in words:
        assert word in error["message"], error["message"]
    # The server is still there for the next client.
    assert exchange(server, b"GET /health HTTP/1.1\r\n" + CLOSE + b"\r\n")[0] == 200


def test_the_same_request_percent_encoded_is_answered(server: Server) -> None:
    """The advice works: the target the first case refused, encoded as it says."""
    status, body = exchange(
        server, b"GET /ui/api/jobs?find=caf%C3%A9 HTTP/1.1\r\n" + KEY + CLOSE + b"\r\n"
    )
    assert status == 200
    assert body == {"jobs": [], "next_cursor": None}
