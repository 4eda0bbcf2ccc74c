"""The Python client and remote CLI pointed at a plain-HTTP server with https://.

Found from outside: `SPOOL_URL=https://127.0.0.1:8000 spool jobs` against `make run`
(which serves plain HTTP) tried six times over several seconds, then said
"cannot reach ...: ConnectError: [SSL: WRONG_VERSION_NUMBER] wrong version number
(_ssl.c:1006) (after 6 tries)". The server answered at once, in HTTP: no retry can
change that, and the fix is the URL's scheme. Now one try, and the line says to use
http://.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local import cli
from spool_client import Client, TransportError


class _PlainHttp(BaseHTTPRequestHandler):
    """Any request: a small JSON 200, over plain HTTP."""

    def do_GET(self) -> None:
        body = b'{"status": "ok", "store": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what the client says, not the server."""


@pytest.fixture
def plain_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PlainHttp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_https_to_a_plain_http_server_is_one_try_that_names_http(plain_port: int) -> None:
    url = f"https://127.0.0.1:{plain_port}"
    with (
        Client(url, "dev-abcdefghijklmnopqrstuvwxyz") as spool,
        pytest.raises(TransportError) as caught,
    ):
        spool.health()
    assert caught.value.attempts == 1, str(caught.value)
    assert f"http://127.0.0.1:{plain_port}" in str(caught.value), str(caught.value)


def test_the_remote_cli_says_to_use_http(
    plain_port: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_URL", f"https://127.0.0.1:{plain_port}")
    monkeypatch.setenv("SPOOL_API_KEY", "dev-abcdefghijklmnopqrstuvwxyz")
    code = cli.main(["jobs"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"use http://127.0.0.1:{plain_port}" in err and "tries" not in err, err


async def _async_health(port: int) -> None:
    from spool_client import AsyncClient

    async with AsyncClient(f"https://127.0.0.1:{port}", "dev-abcdefghijklmnopqrstuvwxyz") as spool:
        await spool.health()


def test_the_async_client_says_the_same(plain_port: int) -> None:
    import asyncio

    with pytest.raises(TransportError) as caught:
        asyncio.run(_async_health(plain_port))
    assert caught.value.attempts == 1 and "http://" in str(caught.value), str(caught.value)
