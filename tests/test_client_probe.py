"""What an outside tester found in the clients and webhooks, each pinned by a test.

The remote CLI and the Python client against servers that are not Spool (a
static file server, JSON of another shape, a TLS port with an untrusted
certificate), arguments no URL can carry, Retry-After abuse and long-polls that
come back early; webhook receivers that answer bytes no parser expects; the
verify function fed malformed headers; SPOOL_WEBHOOKS written wrong. Everything
runs over real loopback sockets (stdlib servers answering from a script).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.builtin.http_request import _retry_after_seconds
from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage import open_store
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import config as webhook_config
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from local import cli
from spool_client import AsyncClient, Client, RetryPolicy, TransportError, UnexpectedResponse
from spool_client.retry import MAX_RETRY_AFTER
from spool_client.webhooks import WebhookVerificationError, sign, verify
from tests.canned_http import CannedServer
from tests.factories import new_job, token

Reply = tuple[int, dict[str, str], bytes]
FAST = RetryPolicy(attempts=3, base=0.01, cap=0.02)
JOB = {
    "id": "j_" + "a" * 32,
    "type": "echo",
    "queue": "default",
    "priority": 0,
    "state": "running",
    "attempts": 1,
    "max_attempts": 3,
}


def json_reply(status: int, body: object, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


class Scripted:
    """A stdlib HTTP server answering every request with the next scripted reply."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, str]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                script.requests.append((self.command, self.path))
                status, headers, payload = script.replies[
                    min(len(script.requests), len(script.replies)) - 1
                ]
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
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def script() -> Iterator[Any]:
    made: list[Scripted] = []

    def start(*replies: Reply) -> Scripted:
        made.append(Scripted(list(replies)))
        return made[-1]

    yield start
    for server in made:
        server.close()


# -- the Python client: a wrong server, arguments no request can carry ----------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get("j_x"),
        lambda c: c.enqueue("echo"),
        lambda c: c.enqueue_many([{"type": "echo"}]),
        lambda c: list(c.list()),
        lambda c: list(c.dead_letters()),
        lambda c: c.cancel("j_x"),
        lambda c: c.redrive("j_x"),
        lambda c: c.redrive_all(),
        lambda c: c.wait("j_x", timeout=1),
    ],
)
def test_json_of_another_shape_is_an_unexpected_response(script, call) -> None:
    """A --url pointing at some other JSON API: before, a bare KeyError from deep inside."""
    server = script(json_reply(200, {"ok": True, "jobs": "nope"}))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(UnexpectedResponse) as got:
        call(spool)
    assert "Spool server" in str(got.value)


def test_a_job_with_fields_of_the_wrong_type_is_an_unexpected_response(script) -> None:
    server = script(json_reply(200, {**JOB, "id": 7}), json_reply(200, {**JOB, "created_at": "?"}))
    with Client(server.url, "k", retry=FAST) as spool:
        for _ in range(2):
            with pytest.raises(UnexpectedResponse):
                spool.get("j_x")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:abc",
        "http://127.0.0.1:0",
        "http://:8000",
        "http://127.0.0.1:8000/a b",
        "http://127.0.0.1:8000/\x7f",
    ],
)
def test_a_url_no_request_can_use_is_a_value_error_at_once(url: str) -> None:
    """Before: httpx.InvalidURL on the first request, or retries against port 99999."""
    with pytest.raises(ValueError):
        Client(url, "k")
    with pytest.raises(ValueError):
        AsyncClient(url, "k")


@pytest.mark.parametrize("url", ["http://h", "http://h:8000", "https://h", "HTTP://h"])
def test_a_one_letter_host_is_a_host(url: str) -> None:
    """Before: `http://h` was refused as not starting with http://, since no URL of its
    length or shorter was taken to hold a host (`https://h`, one longer, was fine)."""
    assert Client(url, "k").url == "http" + url[4:]  # the scheme in lower case
    assert AsyncClient(url, "k").url == "http" + url[4:]


@pytest.mark.parametrize("url", ["http://", "https://", "http:///x"])
def test_a_url_without_a_host_says_so(url: str) -> None:
    for make in (Client, AsyncClient):
        with pytest.raises(ValueError, match="has no host"):
            make(url, "k")


@pytest.mark.parametrize("job_id", [".", ".."])
@pytest.mark.parametrize(
    "call",
    [
        lambda c, i: c.redrive(i),
        lambda c, i: c.cancel(i),
        lambda c, i: c.get(i),
        lambda c, i: c.wait(i, timeout=1),
    ],
)
def test_a_dot_segment_is_no_job_id_and_nothing_is_sent(script, call, job_id: str) -> None:
    """Before: redrive(".") went out as POST /dlq/./redrive, which the URL's resolution
    turned into POST /dlq/redrive: every dead job redriven."""
    server = script(json_reply(200, {"redriven": 3, "ids": []}))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ValueError):
        call(spool, job_id)
    assert server.requests == []


async def _async_redrive(url: str, job_id: str) -> None:
    from spool_client.aio import AsyncClient

    async with AsyncClient(url, "k", retry=FAST) as spool:
        await spool.redrive(job_id)


def test_the_async_client_refuses_a_dot_segment_too(script) -> None:
    import asyncio

    server = script(json_reply(200, {"redriven": 3, "ids": []}))
    with pytest.raises(ValueError):
        asyncio.run(_async_redrive(server.url, "."))
    assert server.requests == []


def test_a_wait_stops_retrying_at_its_own_timeout(script) -> None:
    """Before: wait(timeout=1.5) against a server answering 503 retried for as long as
    the retry policy allowed (here ten tries a second apart), not 1.5 seconds."""
    from spool_client import errors as client_errors

    server = script(
        json_reply(503, {"error": {"code": "store_unavailable"}}, **{"Retry-After": "1"})
    )
    policy = RetryPolicy(attempts=10, base=0.01, cap=0.02)
    with (
        Client(server.url, "k", retry=policy) as spool,
        pytest.raises(client_errors.StoreUnavailable),
    ):
        spool.wait("j_" + "a" * 32, timeout=1.5)
    assert len(server.requests) == 2  # at 0 s and 1 s; a third would start past 1.5 s


def test_an_argument_too_long_for_a_url_is_a_value_error(script) -> None:
    server = script(json_reply(200, {"jobs": [], "next_cursor": None}))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ValueError):
        next(spool.pages(cursor="A" * 100_000))
    assert server.requests == []


@pytest.mark.parametrize(
    "make",
    [
        lambda url: Client(url, "k", batch_size=-1),
        lambda url: Client(5, "k"),  # type: ignore[arg-type]
        lambda url: Client(url, 5),  # type: ignore[arg-type]
        lambda url: Client(url, "k", timeout=math.nan),
        lambda url: Client(url, "k", timeout=0),
        lambda url: RetryPolicy(base=-1),
        lambda url: RetryPolicy(cap=math.nan),
        lambda url: RetryPolicy(attempts=0),
        lambda url: RetryPolicy(base=600, cap=5),
        lambda url: RetryPolicy(base=10),  # above the default cap, 5
    ],
)
def test_options_that_would_loop_or_crash_are_refused(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make("http://127.0.0.1:9")


def test_a_retry_base_above_its_cap_is_refused_saying_so() -> None:
    """As a handler's backoff=(600, 5): every wait was the cap, the base meant nothing."""
    with pytest.raises(ValueError, match=r"^base 10s is more than cap 5s: every wait would be"):
        RetryPolicy(base=10)
    assert RetryPolicy(base=10, cap=10).backoff(5) <= 10


@pytest.mark.parametrize("key", ["", 5])
def test_an_idempotency_key_that_is_no_key_is_refused_not_replaced(script, key: object) -> None:
    """key="" (a field that came out blank) was swapped for a made-up key: a new job
    on every call, the doubles the caller meant to prevent."""
    server = script(json_reply(201, {"id": "j_x"}))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ValueError):
        spool.enqueue("echo", {}, idempotency_key=key)  # type: ignore[arg-type]
    assert server.requests == []


def test_a_negative_batch_size_sends_nothing(script) -> None:
    """Before: bodies[0:-1] went out and was stored, then an empty batch was refused."""
    server = script(json_reply(201, {"jobs": []}))
    jobs = [{"type": "echo", "payload": {"n": n}} for n in range(3)]
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ValueError):
        spool.enqueue_many(jobs, batch_size=-1)
    assert server.requests == []


@pytest.mark.parametrize("timeout", [math.nan, -1])
def test_a_wait_timeout_that_is_not_a_time_is_refused(script, timeout: float) -> None:
    server = script(json_reply(200, JOB))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(ValueError):
        spool.wait("j_x", timeout=timeout)

    async def scenario() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.wait("j_x", timeout=timeout)

    with pytest.raises(ValueError):
        asyncio.run(scenario())
    assert server.requests == []


def test_a_long_poll_answered_at_once_is_not_repeated_in_a_tight_loop(script) -> None:
    """A server (or proxy) that drops ?wait: before, hundreds of requests a second."""
    server = script(json_reply(200, JOB))
    with (
        Client(server.url, "k", retry=FAST) as spool,
        pytest.raises(Exception, match="still running"),
    ):
        spool.wait("j_x", timeout=1.0)
    assert 2 <= len(server.requests) <= 12

    async def scenario() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.wait("j_x", timeout=1.0)

    before = len(server.requests)
    with pytest.raises(Exception, match="still running"):
        asyncio.run(scenario())
    assert 2 <= len(server.requests) - before <= 12


@pytest.mark.parametrize("after", ["0", "-30", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_a_retry_after_of_zero_still_backs_off(
    script, after: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After 0, negative or in the past, every time: before, no pause at all."""
    error = {"code": "store_unavailable", "message": "down", "details": None}
    server = script(json_reply(503, {"error": error}, **{"Retry-After": after}))
    slept: list[float] = []
    monkeypatch.setattr("spool_client.client.time.sleep", slept.append)
    policy = RetryPolicy(attempts=4, base=0.2, cap=1.0)
    with Client(server.url, "k", retry=policy) as spool, pytest.raises(Exception, match="503"):
        spool.get("j_x")
    assert len(server.requests) == 4 and len(slept) == 3
    assert all(s >= 0.1 for s in slept)  # at least half of the first backoff step


def test_a_huge_retry_after_is_raised_not_waited(script) -> None:
    error = {"code": "store_unavailable", "message": "down", "details": None}
    server = script(json_reply(503, {"error": error}, **{"Retry-After": "9" * 400}))
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(Exception) as got:
        spool.get("j_x")
    # Finite (a year at most): inf was raised here, and time.sleep(inf) raises.
    assert getattr(got.value, "retry_after", None) == MAX_RETRY_AFTER
    assert len(server.requests) == 1


@pytest.fixture
def untrusted_tls() -> Iterator[str]:
    """An HTTPS server whose certificate no default trust store knows."""
    import trustme

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_is_not_retried(
    untrusted_tls: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        Client(untrusted_tls, "k", retry=RetryPolicy(attempts=5, base=0.01)) as spool,
        pytest.raises(TransportError) as got,
    ):
        spool.get("j_x")
    assert got.value.attempts == 1  # no retry changes a certificate
    assert cli.main(["jobs", "--url", untrusted_tls, "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert "certificate" in err and "SSL_CERT_FILE" in err and err.count("\n") == 1


# -- the remote CLI: messages that say what is wrong ----------------------------------------


def test_the_cli_says_when_the_url_is_not_a_spool_server(
    script, capsys: pytest.CaptureFixture[str]
) -> None:
    """A static file server's HTML 404 and 501: before, "job not found ... check the id"."""
    page = (404, {"Content-Type": "text/html"}, b"<html>File not found</html>")
    unsupported = (501, {"Content-Type": "text/html"}, b"<html>Unsupported method</html>")
    server = script(page)
    assert cli.main(["status", "j_x", "--url", server.url, "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert "not Spool's JSON" in err and "--url" in err and "Check the id" not in err
    server = script(unsupported)
    assert cli.main(["enqueue", "echo", "--url", server.url, "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 501" in err and "--url" in err


def test_the_cli_points_at_the_base_address_for_a_route_spool_does_not_have(
    script, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"code": "not_found", "message": "no route for GET /api/jobs", "details": None}
    server = script(json_reply(404, {"error": error}))
    assert cli.main(["jobs", "--url", server.url + "/api", "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert "no route" in err and "base address" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["status", "j\udcff"], "UTF-8"),
        (["enqueue", "e\udcffcho"], "UTF-8"),
        (["jobs", "--cursor", "A" * 100_000], "cannot be sent"),
        (["jobs", "--url", "http://127.0.0.1:99999"], "Port out of range"),
        (["jobs", "--url", "http://[::1"], "malformed"),
    ],
)
def test_the_cli_refuses_arguments_no_request_can_carry(
    script, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "unexpected error: InvalidURL", or a codec error naming no fix."""
    server = script(json_reply(200, {"jobs": [], "next_cursor": None}))
    if "--url" not in argv:
        argv = [*argv, "--url", server.url]
    assert cli.main([*argv, "--key", "k"]) == 2
    err = capsys.readouterr().err
    assert words in err and "unexpected error" not in err and err.count("\n") == 1
    assert server.requests == []


# -- webhook receivers that misbehave ------------------------------------------------------


def _hooks(**extra: str) -> Settings:
    hooks = {"acme": {"secrets": [signing.new_secret()]}}
    values = {
        "SPOOL_WEBHOOKS": json.dumps(hooks),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_TIMEOUT": "2",
        "SPOOL_WEBHOOK_MAX_ATTEMPTS": "2",
        "SPOOL_WEBHOOK_BACKOFF": "10",
        **extra,
    }
    return Settings(extra=values)


def _finished(store: MemoryStore, url: str) -> str:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    job = store.add([new_job(clock, tenant="acme", callback_url=url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), JobState.SUCCEEDED, result={})])
    return job.id


def test_a_retry_after_in_superscript_digits_is_retried_with_backoff() -> None:
    """`Retry-After: \\xb2` reads as "²" (latin-1), which str.isdigit() takes and float()
    refuses: before, every attempt raised, was never recorded, and the delivery was
    claimed again at each lease's end, forever."""
    receiver = CannedServer(
        b"HTTP/1.1 503 No\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n", "/hooks"
    )
    store = MemoryStore(FakeClock())
    try:
        job_id = _finished(store, receiver.url)
        Deliverer(store, _hooks()).drain()
    finally:
        receiver.close()
    [d] = store.webhooks(job_id)
    assert receiver.requests == 1
    assert d.state == "pending" and d.last_error == "HTTP 503 from the receiver"
    assert d.next_at is not None and d.next_at > store.clock.now()  # the backoff, recorded
    assert _retry_after_seconds("\xb2") is None  # http_request read it the same way


def test_an_attempt_that_fails_every_time_is_failed_after_its_attempts() -> None:
    store = MemoryStore(FakeClock())
    job_id = _finished(store, "http://127.0.0.1:9/hooks")

    def broken_get(job_id: str, tenant: str | None = None) -> Any:
        raise RuntimeError("this job cannot be read")

    original, store.get = store.get, broken_get  # type: ignore[method-assign]
    clock = store.clock
    assert isinstance(clock, FakeClock)
    settings = _hooks()
    for _ in range(2):  # SPOOL_WEBHOOK_MAX_ATTEMPTS
        assert Deliverer(store, settings).drain() == 1
        clock.advance(2 * 2 + 5 + 1)  # past the lease
    assert Deliverer(store, settings).drain() == 0  # never claimed again
    store.get = original  # type: ignore[method-assign]
    [d] = store.webhooks(job_id)
    assert d.state == "failed" and d.attempts == 2
    assert "gave up after 2 attempts" in (d.last_error or "")


def test_a_receivers_first_line_is_not_echoed_into_the_job() -> None:
    receiver = CannedServer(b"+OK internal-service-banner v9.9 token=abc\r\n\r\n", "/hooks")
    store = MemoryStore(FakeClock())
    try:
        job_id = _finished(store, receiver.url)
        Deliverer(store, _hooks()).drain()
    finally:
        receiver.close()
    [d] = store.webhooks(job_id)
    assert d.state == "pending" and "not HTTP" in (d.last_error or "")
    assert "banner" not in (d.last_error or "") and "token" not in (d.last_error or "")


# -- SPOOL_WEBHOOKS written wrong ---------------------------------------------------------

GOOD = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"t": {"secrets": [GOOD], "url": "https://u:hunter2pw@example.com/h"}}, "credentials"),
        ({"t": {"secrets": [GOOD], "url": "not a url hunter2pw"}}, "whitespace"),
        ({"t": {"secrets": [GOOD], "url": "ftp://example.com/hunter2pw"}}, "http and https"),
        ('{"t": {"secrets": ["' + GOOD + '"]}, "t": {"secrets": ["' + GOOD + '"]}}', "twice"),
        ({"whsec_hunter2pw": "oops"}, "must be an object"),
        ({"t": {"secrets": ["whsec_hunter2pw!!"]}}, "base64"),
    ],
)
def test_malformed_webhook_settings_name_the_problem_never_the_secret(
    raw: object, says: str
) -> None:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    webhook_config.parse_tenants.cache_clear()
    with pytest.raises(ConfigError) as got:
        webhook_config.parse_tenants(text)
    message = str(got.value)
    assert says in message
    assert "hunter2" not in message and GOOD[6:] not in message


# -- verify: malformed headers raise WebhookVerificationError and nothing else ----------------

BODY = b'{"type":"job.succeeded","data":{}}'


def _signed(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    headers: dict[str, Any] = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(GOOD, "msg_1", now, BODY),
    }
    headers.update(override)
    return headers


@pytest.mark.parametrize(
    "override",
    [
        {"webhook-timestamp": "1" + "0" * 400},  # OverflowError before
        {"webhook-timestamp": "-" + "9" * 400},
        {"webhook-id": "msg_\udc80"},  # UnicodeEncodeError before
        {"webhook-signature": "v1,\udc80"},
        {"webhook-signature": "v1,é"},
        {"webhook-timestamp": "١٢٣"},
        {"webhook-timestamp": "{now:_}"},  # int() took these three, then accepted them
        {"webhook-timestamp": " {now} "},
        {"webhook-timestamp": "+{now}"},
        {"webhook-id": None, "webhook-timestamp": None, "webhook-signature": None},
    ],
)
def test_malformed_headers_raise_only_the_verification_error(override: dict[str, Any]) -> None:
    now = int(time.time())  # read here: a slow run must not refuse them for their age
    headers = _signed()
    for name, value in override.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value.format(now=now) if "{now" in value else value
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, GOOD)


def test_a_nan_clock_or_tolerance_refuses_instead_of_accepting_any_age() -> None:
    old = _signed(**{"webhook-timestamp": "0", "webhook-signature": sign(GOOD, "msg_1", 0, BODY)})
    with pytest.raises(WebhookVerificationError):
        verify(BODY, old, GOOD, tolerance=math.nan)
    with pytest.raises(WebhookVerificationError):
        verify(BODY, old, GOOD, now=math.nan)


def test_an_empty_secret_verifies_nothing() -> None:
    """ "whsec_" + an unset variable: an empty HMAC key anyone can sign with."""
    now = int(time.time())
    empty_key = hmac.new(b"", f"msg_1.{now}.".encode() + BODY, hashlib.sha256).digest()
    forged = _signed(**{"webhook-timestamp": str(now)})
    forged["webhook-signature"] = "v1," + base64.b64encode(empty_key).decode()
    with pytest.raises(WebhookVerificationError, match="empty"):
        verify(BODY, forged, "whsec_")
    with pytest.raises(WebhookVerificationError, match="empty"):
        verify(BODY, forged, b"")


def test_a_signed_body_nested_too_deep_is_refused_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    now = int(time.time())
    headers = _signed(**{"webhook-signature": sign(GOOD, "msg_1", now, deep)})
    headers["webhook-timestamp"] = str(now)
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify(deep, headers, GOOD)


def test_raw_asgi_headers_verify() -> None:
    """Bytes names and values, as a list of pairs (ASGI's scope["headers"])."""
    pairs = [(k.encode(), str(v).encode()) for k, v in _signed().items()]
    assert verify(BODY, pairs, GOOD)["type"] == "job.succeeded"
    assert verify(BODY, dict(pairs), [GOOD])["type"] == "job.succeeded"


def test_the_tolerance_is_the_replay_window() -> None:
    now = int(time.time())
    late = _signed(
        **{
            "webhook-timestamp": str(now - 301),
            "webhook-signature": sign(GOOD, "msg_1", now - 301, BODY),
        }
    )
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, late, GOOD)
    assert verify(BODY, late, GOOD, tolerance=timedelta(minutes=6).total_seconds())


def test_redrive_all_stops_when_the_same_jobs_come_back(
    script, capsys: pytest.CaptureFixture[str]
) -> None:
    """Jobs that die again as fast as they are redriven (or a server that always
    answers a full batch): before, `spool dlq redrive --all` looped forever."""
    from local.remote_cli import REDRIVE_CHUNK

    ids = [f"j_{n:032x}" for n in range(REDRIVE_CHUNK)]
    server = script(json_reply(200, {"redriven": REDRIVE_CHUNK, "ids": ids}))
    code = cli.main(["dlq", "redrive", "--all", "--json", "--url", server.url, "--key", "k"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["redriven"] == REDRIVE_CHUNK
    assert len(server.requests) == 2  # the second batch brought only jobs already redriven


@pytest.mark.parametrize(
    "argv",
    [["jobs", "--tenant", "a\udcff"], ["cancel", "j\udcff"], ["status", "j\udcff", "--wait", "1"]],
)
def test_local_commands_refuse_arguments_that_are_not_utf8(
    argv: list[str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: "unexpected error: UnicodeEncodeError", exit 1."""
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/local.db")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    open_store(f"sqlite:///{tmp_path}/local.db").close()  # these commands read a store
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "unexpected" not in err and err.count("\n") == 1


def test_job_errors_cannot_drive_the_operators_terminal(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tenant's payload text in an error: before, its escape sequences reached the
    terminal of whoever ran `spool jobs` or `spool status` (every tenant's jobs, locally)."""
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/local.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    evil = "\x1b]0;PWNED\x07\x1b[31mred\u202e"
    payload = json.dumps({"always": True, "message": evil})
    assert cli.main(["enqueue", "fail", "--payload", payload, "--max-attempts", "1"]) == 0
    job_id = capsys.readouterr().out.split()[0]
    assert cli.main(["worker", "--burst", "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["jobs", "--state", "dead"], ["status", job_id]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "\\x1b]0;PWNED" in out  # shown, escaped
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out


def test_a_huge_error_is_cut_so_the_webhook_still_goes_out() -> None:
    """An exception's message has no bound: before, a dead job whose error was over
    128 KiB made a body http_request refuses, so its webhook failed every attempt."""
    from tests.webhook_receiver import Receiver

    receiver = Receiver().up()
    store = MemoryStore(FakeClock())
    try:
        clock = store.clock
        assert isinstance(clock, FakeClock)
        job = store.add([new_job(clock, tenant="acme", callback_url=receiver.url)])[0].job
        [running] = store.claim(1, 30)
        done = Completion(job.id, token(running), JobState.DEAD, error="e" * 200_000)
        store.finish([done])
        Deliverer(store, _hooks()).drain()
    finally:
        receiver.down()
    [d] = store.webhooks(job.id)
    assert d.state == "delivered", d.last_error
    [got] = receiver.requests
    data = json.loads(got.body)["data"]
    assert data["last_error_truncated"] is True and len(data["last_error"]) == 4096


def test_the_guards_refusal_does_not_tell_the_tenant_internal_addresses() -> None:
    """Before: "host 'db.corp.example' resolves to a refused address: 10.20.30.40 is a
    private address", so any internal name could be mapped with callback URLs."""
    store = MemoryStore(FakeClock())
    job_id = _finished(store, "http://db.corp.example/hooks")

    def internal(host: str, port: int) -> list[str]:
        return ["10.20.30.40"]

    Deliverer(store, _hooks(SPOOL_WEBHOOK_ALLOW_PRIVATE="false"), resolver=internal).drain()
    [d] = store.webhooks(job_id)
    assert d.state == "failed" and "10.20.30.40" not in (d.last_error or "")
    # Nor the kind of address, nor whether the name exists: the same words for each.
    assert "private" not in (d.last_error or "")
    job_id_2 = _finished(store, "http://no-such-name.corp.example/hooks")

    def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    Deliverer(store, _hooks(SPOOL_WEBHOOK_ALLOW_PRIVATE="false"), resolver=nowhere).drain()
    [missing] = store.webhooks(job_id_2)
    said = [
        (x.last_error or "").replace(host, "HOST")
        for x, host in ((d, "db.corp.example"), (missing, "no-such-name.corp.example"))
    ]
    assert (
        said[0]
        == said[1]
        == (
            "refused by the SSRF guard: host 'HOST' does not resolve to an address this "
            "service may reach"
        )
    )


def test_local_redrive_all_stops_when_the_same_jobs_come_back(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local twin: a worker beside it killing the jobs again as fast as they are
    redriven (played here by a Service.redriving that keeps answering the same jobs)."""
    from types import SimpleNamespace

    from chalicelib.service import Service

    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/local.db")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    open_store(f"sqlite:///{tmp_path}/local.db").close()  # these commands read a store
    same = [SimpleNamespace(id=f"j_{n:032x}") for n in range(500)]
    calls: list[int] = []

    def redriving(
        self: Any,
        tenant: Any,
        queue: Any = None,
        type_: Any = None,
        limit: int = 0,
        died_before: Any = None,
    ) -> Iterator[Any]:
        calls.append(limit)
        return iter(same)

    monkeypatch.setattr(Service, "redriving", redriving)
    assert cli.main(["dlq", "redrive", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["redriven"] == 500
    assert len(calls) == 2


# -- a cache in the way: the same page again and again ---------------------------------------


def test_a_listing_whose_cursor_comes_back_unchanged_stops_with_an_error(
    script, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy that ignores the query string answers page one to every request: the
    listings followed its cursor forever (`spool jobs --all` grew past 500 MB)."""
    page = json_reply(200, {"jobs": [JOB], "next_cursor": "c1"})
    server = script(page)
    with Client(server.url, "k", retry=FAST) as spool:
        with pytest.raises(UnexpectedResponse, match="never end"):
            list(spool.list())
        with pytest.raises(UnexpectedResponse, match="never end"):
            list(spool.dead_letters())
    assert len(server.requests) == 4  # two pages each: the second repeats the cursor

    async def listed() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            with pytest.raises(UnexpectedResponse, match="never end"):
                [job async for job in spool.list()]

    asyncio.run(listed())
    assert cli.main(["jobs", "--all", "--url", server.url, "--key", "k"]) == 1
    assert "never end" in capsys.readouterr().err


def test_status_wait_exits_by_the_state_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """The long-polls were lost on the way until the wait ran out, then the read it
    prints found the job succeeded: it exited 3, "still waiting", beside it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "wait=" in self.path:  # a long-poll lost on the way: no answer in time
                time.sleep(3)
            state = "running" if "wait=" in self.path else "succeeded"
            at = "2026-01-01T00:00:00+00:00"
            job = {**JOB, "state": state, "result": None, "attempts": 1}
            body = json.dumps({**job, "run_at": at, "created_at": at, "updated_at": at}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code = cli.main(["status", str(JOB["id"]), "--wait", "1s", "--url", url, "--key", "k"])
    finally:
        server.shutdown()
        server.server_close()
    out, err = capsys.readouterr()
    assert "succeeded" in out and code == 0, (code, out, err)


def test_an_answer_that_cannot_be_decoded_is_retried_then_a_client_error(script) -> None:
    """A corrupt gzip body raised httpx.DecodingError out of the client, which promises
    SpoolClientError only; after an enqueue the caller could not tell whether its job
    was stored, and calling again made another key. It is now retried as a lost answer
    (the same idempotency key), then raised as TransportError."""
    corrupt = (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"\x1f\x8bno")
    server = script(corrupt)
    with Client(server.url, "k", retry=FAST) as spool, pytest.raises(TransportError) as sync:
        spool.enqueue("echo")
    assert "DecodingError" in str(sync.value) and sync.value.attempts == FAST.attempts

    async def enqueue() -> None:
        async with AsyncClient(server.url, "k", retry=FAST) as spool:
            await spool.enqueue("echo")

    with pytest.raises(TransportError):
        asyncio.run(enqueue())
    assert len(server.requests) == 2 * FAST.attempts


def test_the_cli_reads_its_url_and_key_as_the_client_does(
    script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key from a .env file with CRLF line endings, and an upper-case scheme, worked
    with Client() and were refused by the command line (a blank SPOOL_URL too)."""
    from spool_client import calls

    assert calls.settings("HTTP://127.0.0.1:8000/", None)[0] == "http://127.0.0.1:8000"
    server = script(json_reply(200, {"jobs": [], "next_cursor": None}))
    monkeypatch.setenv("SPOOL_URL", server.url.replace("http://", "HTTP://") + "\r\n")
    monkeypatch.setenv("SPOOL_API_KEY", "k\r\n")
    assert cli.main(["jobs"]) == 0, capsys.readouterr().err
    assert server.requests and server.requests[0][0] == "GET"
