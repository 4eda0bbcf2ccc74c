"""The `spool` command line facing a server that sends its answer's head a byte at a time.

Found from outside (stop 46, second attack round): `spool status ID` against a
loopback server that wrote its status line and headers one byte every second
hung for as long as the server liked (a 270-byte head held it past 200 s; h11
reads heads of up to 16 KiB, so hours). The sync client bounds each read, and a
body as a whole, but not a head (docs/client.md, Timeouts: a thread per try cost
library callers a quarter of their enqueue rate). A person at a terminal makes
one call at a time, so the command line's client bounds each try whole, head
included: a slow head is a timeout, retried and then reported.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from local import cli, remote_cli
from tests.canned_http import CannedServer, json_answer, read_head, serve_each

JOB_ID = "j_" + "0" * 32
JOB = {
    "id": JOB_ID,
    "type": "echo",
    "queue": "default",
    "priority": 0,
    "state": "succeeded",
    "attempts": 1,
    "max_attempts": 3,
    "run_at": "2026-01-01T00:00:00Z",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:01Z",
}
GAP = 0.05  # between the head's bytes: far inside the per-read timeout below


class DripHead:
    """Answers every request with a whole job, its head written one byte per GAP."""

    def __init__(self) -> None:
        body = json.dumps(JOB).encode()
        pad = "".join(f"X-Pad-{n}: {'a' * 20}\r\n" for n in range(6))
        self.head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{pad}Connection: close\r\n\r\n"
        ).encode()
        self.body = body
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        serve_each(self.sock, self._answer)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if read_head(conn) is None:
                    return
                for byte in self.head:
                    if self.closed.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(GAP)
                conn.sendall(self.body)
            except OSError:  # the client gave up on this try and dropped the connection
                pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def drip(monkeypatch: pytest.MonkeyPatch) -> Iterator[DripHead]:
    # One try of at most 1 s: the head takes about 12 s at GAP a byte.
    monkeypatch.setattr(remote_cli, "TIMEOUT", 1.0, raising=False)
    monkeypatch.setattr(remote_cli, "RETRY", {**remote_cli.RETRY, "attempts": 2, "base": 0.01})
    server = DripHead()
    yield server
    server.close()


def test_a_head_sent_a_byte_at_a_time_is_a_timeout(
    drip: DripHead, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(drip.head) * GAP > 10  # the whole head would take this long: no try waits for it
    code = cli.main(["status", JOB_ID, "--url", drip.url, "--key", "k" * 32])
    out, err = capsys.readouterr()
    assert out == ""  # the job the server sent at last was never waited for
    assert code == 1
    assert "no whole answer within 1s" in err
    assert "after 2 tries" in err


def test_a_prompt_server_is_answered_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    # The whole-try bound changes nothing for a server that answers at once.
    server = CannedServer(json_answer(JOB))
    try:
        code = cli.main(["status", JOB_ID, "--url", server.url, "--key", "k" * 32])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert JOB_ID in out and "succeeded" in out
