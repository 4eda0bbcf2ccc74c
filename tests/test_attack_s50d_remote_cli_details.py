"""`spool` against a broken or hostile server (--url): a refusal whose details are not
shaped as Spool's is still one line and an exit code. An unknown_job_type 422 whose
details were a list, or whose "known" types were not strings, ended the command with
a Python traceback (AttributeError, TypeError) from the code meant to explain it.
Real loopback server; local.cli.main in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from local import cli
from local.cli_errors import EXIT_USAGE

KEY = "attack-s50d-key-0123456789"


class Refusing:
    """Answers every request with `status` and the given error JSON."""

    def __init__(self, status: int, error: Any) -> None:
        body = json.dumps({"error": error}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
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
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)
    made: list[Refusing] = []

    def start(status: int, error: Any) -> str:
        made.append(Refusing(status, error))
        return made[-1].url

    yield start
    for server in made:
        server.close()


@pytest.mark.parametrize(
    "details",
    [[1], "types", {"known": [1, None, {"a": 1}]}, {"known": "echo"}, {"known": None}],
)
def test_an_unknown_type_refusal_of_any_shape_is_one_line(
    refusing: Any, capsys: pytest.CaptureFixture[str], details: Any
) -> None:
    error = {"code": "unknown_job_type", "message": "unknown job type 'x'", "details": details}
    url = refusing(422, error)
    code = cli.main(["enqueue", "echo", "--url", url, "--key", KEY])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith("spool: unknown job type 'x'") and "Traceback" not in err
