"""`chalice local` cuts off a slow or idle client, as `spool serve` does.

Was (stop 61, live against `chalice local --stage local`): its server (chalice's
handler on http.server) read with no timeout at all. A POST whose body was shorter
than its Content-Length, a head sent a byte at a time, a keep-alive connection left
idle after its answer and a connection that sent nothing were each still open, with
no answer, after any wait; each held one of the server's threads (51 threads for 50
such clients) until the client went. `spool serve` answers the first two 408 within
SPOOL_HTTP_REQUEST_TIMEOUT and closes the other two after SPOOL_HTTP_IDLE_TIMEOUT.

Now chalice local's handler reads through a deadline (chalicelib/chalice_local_deadline.py)
set from the same settings: the same 408 in Spool's shape, then the close, which is
the handler's thread ending. Each case below is bounded by BOUND, ten times the
timeouts it runs with; none measures how long anything took.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.apikit import KEY_A
from tests.test_chalice_local import serving_chalice_local

TIMEOUT = 2.0
BOUND = 10 * TIMEOUT
KEY = f"X-API-Key: {KEY_A}\r\n".encode()
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {
        **os.environ,
        "SPOOL_API_KEYS": f"{KEY_A}=acme",
        "SPOOL_HTTP_REQUEST_TIMEOUT": str(TIMEOUT),
        "SPOOL_HTTP_IDLE_TIMEOUT": str(TIMEOUT),
    }
    with serving_chalice_local(tmp_path_factory.mktemp("chalice_local_slow"), env) as served:
        yield served


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND)


def _until_closed(sock: socket.socket, drip: bytes = b"") -> bytes:
    """All the server sends until it closes the connection, within BOUND (then the
    test fails: the server kept it open). With `drip`, that byte is sent every
    tenth of a second meanwhile, as a slowloris client sends its head."""
    received = b""
    give_up = time.monotonic() + BOUND
    while True:
        left = give_up - time.monotonic()
        if left <= 0:
            pytest.fail(f"still open after {BOUND:g}s, having sent {received[:200]!r}")
        sock.settimeout(min(left, 0.1) if drip else left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if drip:
                with contextlib.suppress(OSError):  # closed: its answer is still to read
                    sock.sendall(drip)
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _timed_out(answer: bytes) -> None:
    """`answer` is chalice local's 408 in Spool's shape, as `spool serve` words it."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"\r\nConnection: close" in head
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert error["message"] == f"the request did not arrive within {TIMEOUT:g} seconds"
    assert error["details"] == {"timeout": TIMEOUT}


def test_a_body_shorter_than_its_length_is_answered_408_and_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(
            b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\n" + KEY + b"Content-Type: "
            b'application/json\r\nContent-Length: 100\r\n\r\n{"type": "noop"'
        )
        _timed_out(_until_closed(sock))


def test_a_head_sent_a_byte_at_a_time_is_answered_408_and_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        _timed_out(_until_closed(sock, drip=b"a"))


def test_a_request_line_left_unfinished_is_answered_408(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /hea")
        _timed_out(_until_closed(sock))


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    with _connect(port) as sock:
        assert _until_closed(sock) == b""


def test_a_request_sent_in_pieces_in_time_is_served(port: int) -> None:
    """The deadline bounds the request, not each piece: a client pausing briefly
    between its head and body, then asking again on the same connection, is served."""
    body = b'{"type": "echo", "payload": {}}'
    with _connect(port) as sock:
        sock.sendall(
            b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\n" + KEY + b"Content-Type: "
            b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        time.sleep(0.1)  # a pause, not a measurement
        sock.sendall(body[:10])
        time.sleep(0.1)
        sock.sendall(body[10:])
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = _until_closed(sock)
    assert answers.startswith(b"HTTP/1.1 201 "), answers
    assert b"}HTTP/1.1 200 " in answers, answers  # the 201, then the GET's 200


def test_requests_are_answered_while_slow_clients_hold_connections(port: int) -> None:
    slow: list[socket.socket] = []
    try:
        for n in range(30):  # each starts its request at once: an idle one is only closed
            slow.append(_connect(port))
            half = b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{"
            slow[-1].sendall(half if n % 2 else b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(5):
            with _connect(port) as sock:
                sock.sendall(HEALTH)
                assert _until_closed(sock).startswith(b"HTTP/1.1 200 ")
        for sock in slow:  # and each slow one is let go, its thread with it
            _timed_out(_until_closed(sock))
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    "name", ["SPOOL_HTTP_IDLE_TIMEOUT", "SPOOL_HTTP_REQUEST_TIMEOUT", "SPOOL_HTTP_SEND_TIMEOUT"]
)
def test_a_malformed_timeout_is_refused_before_chalice_local_serves(name: str) -> None:
    """As `spool serve` refuses it (local/http_limits.py), not a traceback at import."""
    from chalicelib.edge_settings import value_refusal

    refusal = value_refusal({"SPOOL_API_KEYS": f"{KEY_A}=acme", name: "soon"})
    assert refusal is not None and refusal[0].startswith(f"{name} must be a number")
