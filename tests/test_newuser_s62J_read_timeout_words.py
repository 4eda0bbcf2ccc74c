"""A server that was reached but answered too slowly is not called unreachable.

Found from outside (stop 62): against a loopback server that took the connection and
the request, then sent nothing (or only its head), Client, AsyncClient and `spool
status --url` all said "cannot reach http://...: ReadTimeout: no whole answer within
Ns", and the command line added "check that the server is running". The server was
running; it was slow or stuck. A read timeout now says "reached <url>, but it did not
answer in time" (TransportError.reached is True), and the command line points at the
server's load and logs. A refused connection still says "cannot reach".
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from local import cli, remote_cli
from spool_client import AsyncClient, Client, RetryPolicy, TransportError
from tests.canned_http import read_head, serve_each

JOB_ID = "j_" + "0" * 32
KEY = "k" * 32
ONE_TRY = RetryPolicy(attempts=1)
HEAD_ONLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


class Stalling:
    """Takes each request, then sends `first` (nothing, or a head) and no more, holding
    the connection open until closed: a server that is up but does not answer."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        serve_each(self.sock, self._hold)

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            try:
                if read_head(conn) is not None:
                    conn.sendall(self.first)
                    self.closed.wait()
            except OSError:  # the client gave up and dropped the connection
                pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture(params=[b"", HEAD_ONLY], ids=["silent", "head-only"])
def stalling(request: pytest.FixtureRequest) -> Iterator[Stalling]:
    server = Stalling(request.param)
    yield server
    server.close()


def refused_url() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sync_get(url: str) -> TransportError:
    with (
        Client(url, KEY, timeout=0.5, retry=ONE_TRY) as client,
        pytest.raises(TransportError) as raised,
    ):
        client.get(JOB_ID)
    return raised.value


def async_get(url: str) -> TransportError:
    async def run() -> TransportError:
        async with AsyncClient(url, KEY, timeout=0.5, retry=ONE_TRY) as client:
            with pytest.raises(TransportError) as raised:
                await client.get(JOB_ID)
        return raised.value

    return asyncio.run(run())


GETS = {"sync": sync_get, "async": async_get}


@pytest.mark.parametrize("client", list(GETS))
def test_a_server_that_took_the_request_but_did_not_answer_was_reached(
    stalling: Stalling, client: str
) -> None:
    error = GETS[client](stalling.url)
    message = str(error)
    assert message.startswith(f"reached {stalling.url}, but it did not answer in time: "), message
    assert "cannot reach" not in message
    assert message.endswith(": ReadTimeout: no whole answer within 0.5s"), message
    assert error.reached is True


@pytest.mark.parametrize("client", list(GETS))
def test_a_refused_connection_still_cannot_reach(client: str) -> None:
    url = refused_url()
    error = GETS[client](url)
    assert str(error).startswith(f"cannot reach {url}: ConnectError"), str(error)
    assert error.reached is False


@pytest.fixture
def quick_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_cli, "TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(remote_cli, "RETRY", {**remote_cli.RETRY, "attempts": 2, "base": 0.01})


def test_the_command_line_says_the_server_is_up_but_slow(
    stalling: Stalling, quick_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["status", JOB_ID, "--url", stalling.url, "--key", KEY])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert f"reached {stalling.url}, but it did not answer in time" in err, err
    assert "no whole answer within 0.5s (after 2 tries)" in err, err
    assert "cannot reach" not in err and "that the server is running" not in err, err
    assert "too slow to answer" in err, err


def test_the_command_line_still_says_cannot_reach_a_server_that_is_down(
    quick_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    url = refused_url()
    code = cli.main(["status", JOB_ID, "--url", url, "--key", KEY])
    _, err = capsys.readouterr()
    assert code == 1
    assert f"cannot reach {url}" in err and "that the server is running" in err, err
