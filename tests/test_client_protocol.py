"""The client against servers that misbehave in scripted ways, over a real socket.

`spool serve` cannot be made to answer a dated Retry-After, an HTML 502 from a
proxy, a 500, or a 200 that is not JSON (a wrong --url); a small stdlib HTTP
server here answers from a script, and counts what it was asked.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local import cli
from spool_client import (
    AsyncClient,
    Client,
    NotFound,
    RetryPolicy,
    ServerError,
    StoreUnavailable,
    Unavailable,
    UnexpectedResponse,
)
from spool_client.retry import retry_after

Reply = tuple[int, dict[str, str], bytes]
JOB = {"id": "j_" + "a" * 32, "state": "queued", "status_url": "/status/x", "created": True}


class Scripted:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, str, bytes]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                script.requests.append((self.command, self.path, body))
                index = min(len(script.requests), len(script.replies)) - 1
                status, headers, payload = script.replies[index]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    def start(replies: list[Reply]) -> Scripted:
        server = Scripted(replies)
        made.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in made:
        server.close()


def json_reply(status: int, body: object, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


def unavailable(after: str) -> Reply:
    error = {"code": "store_unavailable", "message": "down", "details": None}
    return json_reply(503, {"error": error}, **{"Retry-After": after})


FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


def test_a_dated_retry_after_is_waited_and_every_try_sends_the_same_key(scripted) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    server = scripted([unavailable(soon), unavailable("0"), json_reply(201, JOB)])
    with Client(server.url, "k", retry=FAST) as spool:
        job = spool.enqueue("echo", {"a": 1})
    assert job.id == JOB["id"]
    bodies = [json.loads(body) for _, _, body in server.requests]
    assert len(bodies) == 3
    assert len({b["idempotency_key"] for b in bodies}) == 1  # one key for every try
    assert bodies[0] == bodies[1] == bodies[2]


def test_a_retry_after_past_the_limit_is_raised_with_its_value(scripted) -> None:
    server = scripted([unavailable("3600")])
    with (
        Client(server.url, "k", retry=RetryPolicy(max_retry_after=5)) as spool,
        pytest.raises(StoreUnavailable) as caught,
    ):
        spool.get("j_x")
    assert caught.value.retry_after == 3600 and len(server.requests) == 1


def test_an_infinite_retry_after_is_ignored_and_the_backoff_retries(scripted) -> None:
    """It raised at once, the error's retry_after inf."""
    server = scripted([unavailable("1e999"), unavailable("inf"), json_reply(201, JOB)])
    with Client(server.url, "k", retry=FAST) as spool:
        assert spool.enqueue("echo", {"a": 1}).id == JOB["id"]
    assert len(server.requests) == 3


def test_a_proxys_html_502_is_retried_then_raised_by_status(scripted) -> None:
    page = (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")
    server = scripted([page])
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ServerError) as caught:
        spool.get("j_x")
    assert caught.value.status == 502 and caught.value.code == "http_502"
    assert len(server.requests) == FAST.attempts


def test_a_500_is_an_answer_not_retried(scripted) -> None:
    error = {"code": "internal_error", "message": "an internal error occurred", "details": None}
    server = scripted([json_reply(500, {"error": error})])
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ServerError):
        spool.enqueue("echo", {})
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        (200, {"Content-Type": "text/html"}, b"<html>a web site</html>"),
        json_reply(200, ["not", "an", "object"]),
        (302, {"Location": "/login"}, b""),
    ],
)
def test_an_answer_that_is_not_spools_json_says_so(scripted, reply: Reply) -> None:
    server = scripted([reply])
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(UnexpectedResponse) as caught:
        spool.get("j_x")
    assert "Spool server" in str(caught.value)

    async def async_too() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.get("j_x")

    with pytest.raises(UnexpectedResponse):
        asyncio.run(async_too())


DEEP = b"[" * 200_000 + b"]" * 200_000  # JSON nested past Python's recursion limit


def test_json_nested_too_deep_is_not_spools_json_not_a_recursion_error(scripted) -> None:
    """json.loads raises RecursionError (not ValueError) on such a body: it escaped
    the client raw, and after an enqueue's 503 left no way to know what was stored."""
    server = scripted([(200, {"Content-Type": "application/json"}, DEEP)])
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(UnexpectedResponse):
        spool.get("j_x")

    async def async_too() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.get("j_x")

    with pytest.raises(UnexpectedResponse):
        asyncio.run(async_too())
    busy = scripted([(503, {"Content-Type": "application/json"}, DEEP)])
    with Client(busy.url, "k", retry=FAST) as spool, pytest.raises(Unavailable) as caught:
        spool.enqueue("echo", {})
    assert caught.value.status == 503 and caught.value.retried_after_send
    assert len(busy.requests) == FAST.attempts  # retried like any 503, then raised by status


def test_the_async_client_retries_the_same_way(scripted) -> None:
    server = scripted([unavailable("0"), unavailable("0"), json_reply(201, JOB)])

    async def scenario() -> str:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            return (await spool.enqueue("echo", {})).idempotency_key

    key = asyncio.run(scenario())
    assert [json.loads(b)["idempotency_key"] for _, _, b in server.requests] == [key] * 3


@pytest.mark.parametrize(
    "url, key",
    [
        ("localhost:8000", "k"),
        ("ftp://127.0.0.1", "k"),
        ("http://127.0.0.1:8000/?x=1", "k"),
        ("http://", "k"),
        ("http://127.0.0.1:8000", "two words"),
        ("http://127.0.0.1:8000", "clé"),
        ("http://127.0.0.1:8000", "line\nbreak"),
    ],
)
def test_a_url_or_key_that_cannot_work_is_refused_at_once(url: str, key: str) -> None:
    with pytest.raises(ValueError):
        Client(url, key)
    with pytest.raises(ValueError):
        AsyncClient(url, key)


def test_job_ids_are_required_and_quoted(scripted) -> None:
    server = scripted([json_reply(404, {"error": {"code": "not_found", "message": "x"}})])
    with Client(server.url, "k", retry=FAST) as spool:
        with pytest.raises(ValueError):
            spool.get("")
        with pytest.raises(NotFound):
            spool.cancel("a/b?c#d")
    assert server.requests[-1][1] == "/jobs/a%2Fb%3Fc%23d/cancel"


def test_retry_after_reads_seconds_dates_and_nonsense() -> None:
    import httpx

    def after(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}))

    assert after("7") == 7.0 and after(" 2 ") == 2.0 and after("-3") == 0.0
    assert after("soon") is None
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert after(past) == 0.0
    assert retry_after(httpx.Response(503)) is None


@pytest.mark.parametrize(
    "value",
    [b"nan", b"inf", b"1e999", b"1e3", b"1_0", b"\xd9\xa5", b"\xef\xbc\x95", b"+5", b"0x10"],
)
def test_retry_after_is_plain_ascii_digits_or_ignored(value: bytes) -> None:
    """A hostile or broken server's Retry-After: float() took `inf` and `1e999` (an
    error whose retry_after was inf: time.sleep() on it raises OverflowError),
    `nan`, `1_0` and non-ASCII digits (U+0665, U+FF15). RFC 9110 delay-seconds is ASCII
    digits; anything else is as if absent, and the backoff applies."""
    import httpx

    assert retry_after(httpx.Response(503, headers=[(b"Retry-After", value)])) is None


def test_a_retry_after_too_long_to_hold_stays_finite() -> None:
    import math

    import httpx

    for value in ("9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"):
        after = retry_after(httpx.Response(503, headers={"Retry-After": value}))
        assert after is not None and math.isfinite(after) and after <= 366 * 86400, value


def test_the_cli_names_a_wrong_url_or_a_missing_id(
    scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["jobs", "--url", "localhost:8000", "--key", "k"]) == 2
    assert "http://" in capsys.readouterr().err
    server = scripted([(200, {"Content-Type": "text/html"}, b"<html></html>")])
    assert cli.main(["jobs", "--url", server.url, "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert "Spool server" in err and "--url" in err and err.count("\n") == 1
    assert cli.main(["status", "", "--url", server.url, "--key", "k"]) == 2
    assert "job id" in capsys.readouterr().err
