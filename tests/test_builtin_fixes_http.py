"""http_request: a response within the payload's bounds always gives a storable result.

The worker refuses a result over MAX_RESULT_BYTES once JSON-encoded (ASCII only), which
made the job dead; here real loopback servers answer bodies that grow when escaped, and
headers repeated without end."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.builtin import http_request as hr
from chalicelib.clock import FakeClock
from chalicelib.handlers import registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import MAX_RESULT_BYTES, Worker, WorkerConfig
from tests.test_http_request import Served, _Server, jail, run

__all__ = ["jail"]  # the network jail fixture, used below

CAP = hr.MAX_BODY_CAP  # max_body_bytes' documented maximum, 128 KiB


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        n = int(query.get("n", "0"))
        headers: list[tuple[str, str]] = []
        content_type = "text/plain; charset=utf-8"
        if parts.path == "/cjk":  # U+4E00 is 3 bytes of UTF-8 and 6 of JSON
            body = ("\u4e00" * (n // 3)).encode()
        elif parts.path == "/ctrl":  # 0x01 is 1 byte and 6 of JSON
            body = b"\x01" * n
        elif parts.path == "/astral":  # U+1F600 is 4 bytes of UTF-8 and 12 of JSON
            body = ("\U0001f600" * (n // 4)).encode()
        elif parts.path == "/latin1":  # each byte is \\u00XX in JSON
            body, content_type = bytes([0xE9]) * n, "text/plain; charset=latin-1"
        elif parts.path == "/etags":
            body = b"ok"
            size = int(query["size"])
            headers = [("ETag", f'"{i:04d}' + "e" * size + '"') for i in range(n)]
        elif parts.path == "/huge-header":
            body = b"ok"
            headers = [("Content-Language", "\xe9" * n)]
        else:
            body = b"plain"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def hostile() -> Iterator[Served]:
    server = _Server(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Served(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def served() -> Iterator[Served]:
    with hostile() as server:
        yield server


def encoded_size(result: Any) -> int:
    """As the worker measures it."""
    return len(json.JSONEncoder(allow_nan=False).encode(result))


def test_the_budget_leaves_room_under_the_workers_limit() -> None:
    assert hr.RESULT_BUDGET < MAX_RESULT_BYTES


@pytest.mark.parametrize("path", ["/cjk", "/ctrl", "/astral", "/latin1"])
def test_a_body_at_the_cap_that_escapes_large_is_cut_to_fit(served: Served, path: str) -> None:
    result = run(served.url(f"{path}?n={CAP}"), max_body_bytes=CAP)
    assert encoded_size(result) <= hr.RESULT_BUDGET
    assert result["truncated"] is True
    assert result["body_encoding"] == "text"
    assert 0 < result["body_bytes"] < CAP
    # What is returned is a prefix of the body, cut at a character boundary.
    charset = "latin-1" if path == "/latin1" else "utf-8"
    assert len(result["body"].encode(charset)) == result["body_bytes"]
    assert result["body"]  # and as much of it as fits, not nothing
    assert encoded_size(result) > hr.RESULT_BUDGET - 16


def test_a_body_that_fits_is_untouched(served: Served) -> None:
    result = run(served.url("/cjk?n=30000"), max_body_bytes=CAP)
    assert result["truncated"] is False
    assert result["body"] == "\u4e00" * 10000
    assert result["body_bytes"] == 30000


def test_a_body_cut_at_max_body_bytes_inside_a_character_stays_text(served: Served) -> None:
    result = run(served.url("/cjk?n=3000"), max_body_bytes=1000)  # 1000 = 333 chars + 1 byte
    assert result["truncated"] is True
    assert result["body_encoding"] == "text"
    assert result["body"] == "\u4e00" * 333
    assert result["body_bytes"] == 999


def test_repeated_response_headers_are_bounded(served: Served) -> None:
    result = run(served.url("/etags?n=90&size=8000"))
    assert encoded_size(result) <= hr.RESULT_BUDGET
    etag = result["headers"]["etag"]
    assert etag.startswith('"0000eee')
    assert len(json.dumps(etag)) <= hr.MAX_HEADER_JSON
    assert len(json.dumps(result["headers"])) <= hr.MAX_HEADERS_JSON + 64
    assert result["body"] == "ok" and result["truncated"] is False


def test_a_huge_header_value_that_escapes_large_is_bounded(served: Served) -> None:
    result = run(served.url("/huge-header?n=60000"))
    value = result["headers"]["content-language"]
    assert value and set(value) == {"\xe9"}
    assert len(json.dumps(value)) <= hr.MAX_HEADER_JSON


@pytest.mark.usefixtures("jail")
@pytest.mark.parametrize(
    ("path", "max_body"),
    [("/cjk?n=131072", CAP), ("/ctrl?n=131072", CAP), ("/etags?n=90&size=8000", 65536)],
)
def test_through_the_worker_such_responses_succeed_instead_of_going_dead(
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    path: str,
    max_body: int,
) -> None:
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", "127.0.0.1/32")
    store = MemoryStore(clock)
    [added] = Service(store, registry).enqueue(
        [
            EnqueueRequest(
                type="http_request",
                payload={"url": served.url(path), "max_body_bytes": max_body},
            )
        ],
        tenant="t1",
    )
    Worker(store, registry, WorkerConfig(concurrency=1)).drain()
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.SUCCEEDED, job.last_error if job else None
    assert isinstance(job.result, dict) and job.result["status"] == 200
