"""A 422 whose details a broken or hostile server shaped oddly: every refusal's text
(str(exc), what a traceback, a log line or an f-string shows) is still a string.
An error's "loc" that was a number or true made str() raise TypeError, so a traceback
read "<exception str() failed>" and `f"{exc}"` in the caller's code raised in turn.
Real loopback servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from spool_client import ApiError, Client, RetryPolicy

KEY = "attack-s50d-key-0123456789"


class Refusing:
    """Answers every request with 422 and the given error JSON."""

    def __init__(self, error: Any) -> None:
        body = json.dumps({"error": error}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(422)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def refusing() -> Iterator[Any]:
    made: list[Refusing] = []

    def start(error: Any) -> str:
        made.append(Refusing(error))
        return made[-1].url

    yield start
    for server in made:
        server.close()


ODD_LOCS = [5, True, 2.5, {"a": 1}, "payload"]


@pytest.mark.parametrize("loc", ODD_LOCS)
def test_a_validation_error_of_any_loc_has_text(refusing: Any, loc: Any) -> None:
    error = {
        "code": "validation_error",
        "message": "the job is invalid",
        "details": {"errors": [{"loc": loc, "msg": "no good"}]},
    }
    once = RetryPolicy(attempts=1)
    with (
        Client(refusing(error), KEY, timeout=5, retry=once) as spool,
        pytest.raises(ApiError) as caught,
    ):
        spool.enqueue("echo", {})
    text = str(caught.value)
    assert text.startswith("422 validation_error: the job is invalid (") and "no good" in text


@pytest.mark.parametrize("loc", ODD_LOCS)
def test_a_batch_entrys_error_of_any_loc_has_text(refusing: Any, loc: Any) -> None:
    error = {
        "code": "validation_error",
        "message": "a job is invalid",
        "details": {"errors": [{"index": 0, "details": [{"loc": loc, "msg": "no good"}]}]},
    }
    once = RetryPolicy(attempts=1)
    with (
        Client(refusing(error), KEY, timeout=5, retry=once) as spool,
        pytest.raises(ApiError) as caught,
    ):
        spool.enqueue_many([{"type": "echo"}])
    assert "job 0: " in str(caught.value) and "no good" in str(caught.value)
