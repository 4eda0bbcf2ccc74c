"""Logs: one structured line per job event and HTTP request, and never a secret.

The scenario runs app.py over a real socket (waitress, local/server.py) and a
worker on a real SQLite file with a FakeClock: an http_request job carrying an
Authorization header to a local server that answers 503, a send_email job with
SMTP credentials configured (its server is down), a job that fails until it is
dead, a cancel and two redrives. Every line it writes is then checked.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

import app as spool_app
from chalicelib import events, logs, worker_id
from chalicelib.api import routes
from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import JobContext, Registry
from chalicelib.job_events import JobEvents, where
from chalicelib.log_redact import Redactor, secrets_in
from chalicelib.models import Completion, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, OPERATOR_KEY, TENANT_A, installed, settings_for
from tests.factories import new_job, stored, token

ROOT = Path(__file__).resolve().parent.parent
SMTP_PASSWORD = "smtp-Pa55word-q7"
URL_PASSWORD = "url-pa55word-z9"
BEARER = "tok-0f1e2d3c4b5a69788796"
SECRETS = (KEY_A, KEY_B, OPERATOR_KEY, SMTP_PASSWORD, URL_PASSWORD, BEARER)
JOB_FIELDS = ("job_id", "tenant", "type", "queue", "attempt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    """A local HTTP API that is down (503), recording the Authorization it was sent."""

    url: str
    seen: list[str]


@pytest.fixture
def target() -> Iterator[Target]:
    seen: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Target(f"http://127.0.0.1:{server.server_address[1]}/hook", seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Where Spool's configured handler writes, for the test; the process's
    logging is put back afterwards."""
    buf = io.StringIO()
    yield buf
    logs.reset()


def lines_of(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def records(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(buf)]


def assert_no_secret(text: str, secrets: tuple[str, ...] = SECRETS) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in the logs: {leaked}"


# -- the full scenario ---------------------------------------------------------------------


@pytest.fixture
def scenario_env(monkeypatch: pytest.MonkeyPatch, target: Target) -> dict[str, str]:
    env = {
        "SPOOL_SMTP_HOST": "127.0.0.1",
        "SPOOL_SMTP_PORT": str(free_port()),  # nothing listens: the send fails
        "SPOOL_SMTP_USERNAME": "spool",
        "SPOOL_SMTP_STARTTLS": "true",
        "SPOOL_SMTP_PASSWORD": SMTP_PASSWORD,
        "SPOOL_SMTP_FROM": "Spool <noreply@example.com>",
        "SPOOL_SMTP_LOCAL_HOSTNAME": "worker.test",
        "SPOOL_SMTP_TIMEOUT": "5",
        "SPOOL_HTTP_ALLOWLIST": "127.0.0.1",
        "SPOOL_HTTP_ALLOW_PRIVATE": "true",
        "SPOOL_LOG_LEVEL": "DEBUG",
        "SPOOL_LOG_FORMAT": "json",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def served(
    tmp_path: Path, scenario_env: dict[str, str], captured: io.StringIO
) -> Iterator[tuple[Runtime, str, FakeClock]]:
    clock = FakeClock()
    with installed(settings_for(tmp_path, extra=scenario_env), clock) as rt:
        logs.configure(rt.settings, stream=captured, force=True)
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2)
        server.start()
        try:
            yield rt, server.url, clock
        finally:
            server.stop()


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.sent = 0

    def call(self, method: str, path: str, key: str | None = KEY_A, **kw: Any) -> Any:
        headers = {"X-API-Key": key} if key else {}
        reply = requests.request(method, self.base + path, headers=headers, timeout=30, **kw)
        self.sent += 1
        return reply

    def enqueue(self, job: dict[str, Any]) -> str:
        reply = self.call("POST", "/enqueue", json=job)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])


def work(rt: Runtime, clock: FakeClock, rounds: int) -> None:
    """Drain, then jump past every backoff, `rounds` times."""
    for _ in range(rounds):
        worker = rt.worker(2)
        try:
            worker.drain()
        finally:
            worker.close()
        clock.advance(3600)


def events_of(recs: list[dict[str, Any]], job_id: str) -> list[str]:
    return [r["event"] for r in recs if r.get("job_id") == job_id and r["logger"] == "spool.jobs"]


def test_a_full_scenario_logs_each_event_once_with_its_fields_and_no_secret(
    served: tuple[Runtime, str, FakeClock], target: Target, captured: io.StringIO
) -> None:
    rt, base, clock = served
    api = Client(base)
    echo = api.enqueue({"type": "echo", "payload": {"hello": "world"}})
    hook = api.enqueue(
        {
            "type": "http_request",
            "payload": {
                "method": "POST",
                "url": target.url,
                "headers": {"Authorization": f"Bearer {BEARER}"},
                "json": {"x": 1},
                "timeout": 5,
            },
            "max_attempts": 2,
        }
    )
    mail = api.enqueue(
        {
            "type": "send_email",
            "payload": {"to": ["someone@example.com"], "subject": "hi", "text": "hello"},
            "max_attempts": 2,
        }
    )
    message = f"cannot reach postgresql://spool:{URL_PASSWORD}@db.internal/spool"
    doomed = api.enqueue(
        {"type": "fail", "payload": {"always": True, "message": message}, "max_attempts": 3}
    )
    later = api.enqueue({"type": "echo", "delay": 86400})
    assert api.call("POST", f"/jobs/{later}/cancel").status_code == 200
    assert api.call("GET", f"/status/{echo}", key="not-a-key").status_code == 401
    assert api.call("GET", "/health", key=None).status_code == 200

    work(rt, clock, rounds=3)
    assert target.seen == [f"Bearer {BEARER}"] * 2  # the header did go out, twice
    for job_id in (hook, mail, doomed):
        assert stored(rt.store, job_id).state is JobState.DEAD
    assert api.call("POST", f"/dlq/{doomed}/redrive").status_code == 200
    redriven = api.call("POST", "/dlq/redrive", json={}).json()
    assert sorted(redriven["ids"]) == sorted([hook, mail])
    status = api.call("GET", f"/status/{doomed}")
    assert status.status_code == 200

    text = captured.getvalue()
    assert_no_secret(text)
    recs = records(captured)  # every line is one JSON object
    for rec in recs:
        assert {"timestamp", "level", "logger", "message"} <= set(rec), rec
    jobs = [r for r in recs if r["logger"] == "spool.jobs"]
    for rec in jobs:
        assert all(rec.get(f) is not None for f in JOB_FIELDS), rec
        assert rec["tenant"] == TENANT_A
        assert "payload" not in rec and "headers" not in rec

    assert events_of(recs, echo) == ["enqueued", "started", "succeeded"]
    assert events_of(recs, later) == ["enqueued", "cancelled"]
    assert events_of(recs, doomed) == [
        "enqueued",
        *["started", "retrying"] * 2,
        "started",
        "dead",
        "redriven",
    ]
    for job_id in (hook, mail):
        assert events_of(recs, job_id) == [
            "enqueued",
            *["started", "retrying"],
            "started",
            "dead",
            "redriven",
        ]

    # Why, on which attempt, and where.
    by_event = {(r["job_id"], r["event"]): r for r in jobs}
    dead = by_event[(doomed, "dead")]
    assert dead["level"] == "ERROR" and dead["attempt"] == 3 and dead["max_attempts"] == 3
    assert dead["error_type"] == "RuntimeError"
    assert "cannot reach postgresql://spool:***@db.internal/spool" in dead["error"]
    assert dead["where"].startswith("builtin/demo.py:") and dead["where"].endswith(" in fail")
    assert dead["worker"] == worker_id.current()
    assert dead["duration_ms"] >= 0
    retrying = [r for r in jobs if r["job_id"] == doomed and r["event"] == "retrying"]
    assert [r["attempt"] for r in retrying] == [1, 2]
    # Full jitter may choose a delay that rounds to 0: present and not negative.
    assert all(r["level"] == "WARNING" and r["delay_s"] >= 0 for r in retrying)
    assert by_event[(echo, "succeeded")]["level"] == "INFO"
    assert by_event[(echo, "started")]["level"] == "DEBUG"
    assert by_event[(hook, "dead")]["attempt"] == 2
    assert by_event[(mail, "dead")]["error_type"] == "TemporaryFailure"

    # One line per request: method, route template, status, duration, tenant.
    http = [r for r in recs if r["logger"] == "spool.http"]
    assert len(http) == api.sent
    for rec in http:
        assert {"method", "route", "status", "duration_ms"} <= set(rec), rec
        assert rec["route"] in {route for _, route in routes.ROUTES.values()}
    shapes = [(r["method"], r["route"], r["status"], r.get("tenant")) for r in http]
    assert shapes[:5] == [("POST", "/enqueue", 201, TENANT_A)] * 5
    assert ("POST", "/jobs/{id}/cancel", 200, TENANT_A) in shapes
    assert ("GET", "/status/{id}", 401, None) in shapes
    assert ("GET", "/health", 200, None) in shapes
    assert ("POST", "/dlq/{id}/redrive", 200, TENANT_A) in shapes
    assert ("POST", "/dlq/redrive", 200, TENANT_A) in shapes
    assert ("GET", "/status/{id}", 200, TENANT_A) in shapes
    cancel = next(r for r in http if r["route"] == "/jobs/{id}/cancel")
    assert cancel["job_id"] == later


def test_text_lines_are_one_readable_line_per_event(tmp_path: Path, captured: io.StringIO) -> None:
    clock = FakeClock()
    extra = {"SPOOL_LOG_FORMAT": "text", "SPOOL_SMTP_PASSWORD": SMTP_PASSWORD}
    with installed(settings_for(tmp_path, extra=extra), clock) as rt:
        logs.configure(rt.settings, stream=captured, force=True)
        message = f"smtp login with {SMTP_PASSWORD} failed"
        request = {"type": "fail", "payload": {"always": True, "message": message}}
        [added] = rt.service.enqueue([_request(request | {"max_attempts": 1})], TENANT_A)
        work(rt, clock, rounds=1)
    lines = lines_of(captured)
    assert_no_secret("\n".join(lines))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    enqueued = [line for line in lines if "job enqueued" in line]
    assert len(enqueued) == 1
    assert re.match(rf"{stamp} INFO spool\.jobs: job enqueued event=enqueued ", enqueued[0])
    [dead] = [line for line in lines if "job dead" in line]
    assert re.match(rf"{stamp} ERROR spool\.jobs: job dead ", dead)
    for pair in (f"job_id={added.job.id}", f"tenant={TENANT_A}", "type=fail", "attempt=1"):
        assert pair in dead.split(), (pair, dead)
    assert 'error="RuntimeError: smtp login with *** failed (attempt 1)"' in dead
    assert "started" not in captured.getvalue()  # INFO: the start of each attempt is DEBUG


def _request(data: dict[str, Any]) -> Any:
    from chalicelib.service import EnqueueRequest

    return EnqueueRequest.model_validate(data)


# -- the handler's logger ----------------------------------------------------------------


def test_ctx_log_lines_carry_the_job_and_attempt_and_the_tail_is_kept(
    captured: io.StringIO,
) -> None:
    logs.configure(Settings(extra={"SPOOL_LOG_FORMAT": "json"}), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()
    tails: list[tuple[str, ...]] = []

    @reg.handler("chatty", max_attempts=2, backoff=(1.0, 1.0))
    def chatty(payload: dict[str, Any], ctx: JobContext) -> None:
        for n in range(25):
            ctx.log.info("step %d of attempt %d", n, ctx.attempt)
        ctx.log.debug("hidden at INFO")
        try:
            raise ValueError(f"X-API-Key: {KEY_A}")
        except ValueError:
            ctx.log.exception("upstream refused")
            tails.append(ctx.log_tail())
            raise

    job = store.add([new_job(clock, "chatty", max_attempts=2)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    handler_lines = [r for r in records(captured) if r["logger"] == logs.HANDLER_LOGGER]
    assert len(handler_lines) == 26
    assert all(
        (r["job_id"], r["attempt"], r["type"]) == (job.id, 1, "chatty") for r in handler_lines
    )
    assert all(r["tenant"] == job.tenant and r["queue"] == job.queue for r in handler_lines)
    [tail] = tails
    assert len(tail) == logs.DEFAULT_TAIL_LINES
    assert tail[0] == "INFO step 6 of attempt 1"
    assert tail[-1] == "ERROR upstream refused (ValueError: X-API-Key: ***)"
    assert_no_secret(captured.getvalue() + "\n".join(tail))


def test_the_tail_does_not_tell_a_tenant_which_guess_in_its_payload_is_a_secret(
    captured: io.StringIO, tmp_path: Path
) -> None:
    """A handler that logs its payload sent each guess back to the tenant through the
    attempt's log tail, with `***` where a guess was another tenant's key. Secrets the
    payload holds now come back as sent; one the handler logs by itself is masked."""
    logs.configure(settings_for(tmp_path), stream=captured, force=True)
    clock = FakeClock()
    ctx = JobContext(new_job_model(clock, {"guesses": ["not-a-key-0123456789", KEY_A]}), 0.0)
    for guess in ("not-a-key-0123456789", KEY_A):
        ctx.log.info("calling with %s", guess)
    ctx.log.info("the relay's key is %s", KEY_B)  # not from the payload: still masked
    assert ctx.log_tail() == (
        "INFO calling with not-a-key-0123456789",
        f"INFO calling with {KEY_A}",
        "INFO the relay's key is ***",
    )
    assert_no_secret(captured.getvalue())  # the operator's log masks every one


def test_ctx_log_called_as_a_function_writes_an_info_line(
    captured: io.StringIO, tmp_path: Path
) -> None:
    """`ctx.log("...")` raised TypeError ('JobLog' object is not callable) at every
    attempt, and the job went dead after its retries."""
    logs.configure(settings_for(tmp_path), stream=captured, force=True)
    ctx = JobContext(new_job_model(FakeClock(), {}), 0.0)
    ctx.log("sent %s to %d people", "the newsletter", 3)
    ctx.log.warning("one bounced")
    assert ctx.log_tail() == ("INFO sent the newsletter to 3 people", "WARNING one bounced")
    assert "sent the newsletter to 3 people" in captured.getvalue()


def test_a_configured_secret_in_a_handler_s_exception_is_masked_unless_the_tenant_sent_it(
    captured: io.StringIO, tmp_path: Path
) -> None:
    """The error and traceback go back to the tenant (status, dashboard, webhook): they
    were masked by shape only, so an exception quoting the SMTP password or another
    tenant's key showed it, while the same text in ctx.log was masked."""
    logs.configure(settings_for(tmp_path), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()

    @reg.handler("leaky", max_attempts=1)
    def leaky(payload: dict[str, Any]) -> None:
        raise RuntimeError(f"relay refused {KEY_B}; asked with {payload['guess']}")

    job = store.add([new_job(clock, "leaky", payload={"guess": KEY_A}, max_attempts=1)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    done = store.get(job.id)
    assert done is not None and done.state is JobState.DEAD
    [attempt] = store.attempts(job.id) or []
    for text in (done.last_error or "", attempt.error or "", attempt.traceback or ""):
        assert KEY_B not in text and "relay refused ***" in text, text
        assert f"asked with {KEY_A}" in text, text  # what the tenant sent comes back as sent


@pytest.mark.parametrize(
    "env",
    [
        {"SPOOL_SECRET_VARIABLES": "PARTNER_API_KEY", "PARTNER_API_KEY": "pk_live_SECRET987654"},
        {"SPOOL_PARTNER_API_KEY": "pk_live_SECRET987654"},  # a SPOOL_ name ending in _KEY
    ],
)
def test_a_handler_s_own_secret_is_masked_where_the_tenant_would_read_it(
    captured: io.StringIO, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler's credential (not one of Spool's settings) in its exception or its
    ctx.log lines reached the tenant through last_error and log_tail."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logs.configure(Settings.from_env(env), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()

    @reg.handler("partner", max_attempts=1)
    def partner(payload: dict[str, Any], ctx: JobContext) -> None:
        ctx.log.info("using key %s", "pk_live_SECRET987654")
        raise RuntimeError("partner refused key pk_live_SECRET987654")

    job = store.add([new_job(clock, "partner", max_attempts=1)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    done = store.get(job.id)
    assert done is not None and done.state is JobState.DEAD
    [attempt] = store.attempts(job.id) or []
    for text in (done.last_error, attempt.error, attempt.traceback, *attempt.log_tail):
        assert text and "pk_live_SECRET987654" not in text, text
    assert "partner refused key ***" in (done.last_error or "")
    assert "pk_live_SECRET987654" not in captured.getvalue()


def test_the_tail_length_is_a_setting_and_a_context_without_lines_has_none(
    captured: io.StringIO,
) -> None:
    settings = Settings(extra={"SPOOL_LOG_TAIL_LINES": "3"})
    logs.configure(settings, stream=captured, force=True)
    clock = FakeClock()
    ctx = JobContext(new_job_model(clock), deadline=0.0)
    assert ctx.log_tail() == ()
    for n in range(5):
        ctx.log.warning("line %d", n)
    assert ctx.log_tail() == ("WARNING line 2", "WARNING line 3", "WARNING line 4")
    with pytest.raises(ValueError, match="SPOOL_LOG_TAIL_LINES"):
        logs.configure(Settings(extra={"SPOOL_LOG_TAIL_LINES": "-1"}), force=True)


def new_job_model(clock: FakeClock, payload: dict[str, Any] | None = None) -> Any:
    store = MemoryStore(clock)
    store.add([new_job(clock, "echo", payload=payload or {})])
    [job] = store.claim(1, 60)
    return job


# -- lease events ------------------------------------------------------------------------


def test_an_expired_lease_is_logged_when_the_job_is_claimed_again(captured: io.StringIO) -> None:
    logs.configure(Settings(extra={"SPOOL_LOG_FORMAT": "json"}), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()
    reg.handler("ok")(lambda payload: None)
    job = store.add([new_job(clock, "ok", max_attempts=3)])[0].job
    store.claim(1, 10)  # a worker takes it and vanishes
    clock.advance(11)
    worker = Worker(store, reg, WorkerConfig(concurrency=1), middleware=[JobEvents()])
    try:
        worker.drain()
    finally:
        worker.close()
    recs = [r for r in records(captured) if r.get("job_id") == job.id]
    assert [(r["event"], r["attempt"], r["level"]) for r in recs] == [
        ("lease_expired", 1, "WARNING"),
        ("succeeded", 2, "INFO"),
    ]


def test_a_refused_completion_is_logged_as_lease_lost_not_as_its_outcome(
    captured: io.StringIO,
) -> None:
    logs.configure(Settings(), stream=captured, force=True)
    clock = FakeClock()
    job = new_job_model(clock)
    events_mw = JobEvents()
    done = Completion(job.id, token(job), JobState.SUCCEEDED)
    events_mw.after_attempt(job, done, 0.5)
    events_mw.after_flush([done], [False])
    [line] = lines_of(captured)
    assert "job lease_lost" in line and "event=lease_lost" in line and "outcome=succeeded" in line
    assert "job succeeded" not in line


def test_where_names_the_last_frame() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/chalicelib/worker.py", line 10, in execute\n'
        '  File "/srv/app/myjobs/mail.py", line 42, in send\n'
        "ValueError: boom\n"
    )
    assert where(trace) == "myjobs/mail.py:42 in send"
    assert where(None) is None and where("no frames") is None


# -- the Lambda request id ----------------------------------------------------------------


class FakeContext:
    aws_request_id = "8f1c2b7e-1111-4a7e-9d3c-1234567890ab"

    def get_remaining_time_in_millis(self) -> float:
        return 900_000  # room for the longest handler timeout: drain claims


def test_a_lambda_invocation_names_its_request_on_every_worker_line(
    tmp_path: Path, captured: io.StringIO
) -> None:
    clock = FakeClock()
    extra = {"SPOOL_LOG_FORMAT": "json"}
    with installed(settings_for(tmp_path, extra=extra), clock) as rt:
        logs.configure(rt.settings, stream=captured, force=True)
        request = {"type": "fail", "payload": {"always": True}, "max_attempts": 1}
        [added] = rt.service.enqueue([_request(request)], TENANT_A)
        captured.truncate(0)
        captured.seek(0)
        events.handle_schedule({}, FakeContext())
    recs = records(captured)
    assert recs, "the invocation logged nothing"
    assert all(r.get("aws_request_id") == FakeContext.aws_request_id for r in recs)
    [dead] = [r for r in recs if r.get("event") == "dead"]
    assert dead["job_id"] == added.job.id
    assert dead["worker"] == f"lambda:{FakeContext.aws_request_id}"
    assert not worker_id.current().startswith("lambda:")  # cleared after the invocation


def test_json_is_the_default_on_lambda_and_text_elsewhere() -> None:
    assert logs.format_of(Settings(), {"AWS_LAMBDA_FUNCTION_NAME": "spool-worker"}) == "json"
    assert logs.format_of(Settings(), {}) == "text"
    assert (
        logs.format_of(
            Settings(extra={"SPOOL_LOG_FORMAT": "text"}), {"AWS_LAMBDA_FUNCTION_NAME": "f"}
        )
        == "text"
    )
    with pytest.raises(ConfigError, match="SPOOL_LOG_FORMAT"):
        logs.format_of(Settings(extra={"SPOOL_LOG_FORMAT": "xml"}), {})
    with pytest.raises(ConfigError, match="SPOOL_LOG_LEVEL"):
        logs.level_of(Settings(extra={"SPOOL_LOG_LEVEL": "loud"}))
    assert logs.level_of(Settings(extra={"SPOOL_LOG_LEVEL": "warn"})) == logging.WARNING


def test_on_lambda_the_runtime_handler_is_reformatted_not_doubled(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "spool-worker")
    root = logging.getLogger()
    lambdas = logging.StreamHandler(captured)  # stands for the Lambda runtime's handler
    root.addHandler(lambdas)
    try:
        before = list(root.handlers)
        logs.configure(Settings(api_keys=f"{KEY_A}={TENANT_A}"), force=True)
        assert root.handlers == before
        logging.getLogger("spool.test").info("key %s", KEY_A)
        [line] = lines_of(captured)
        rec = json.loads(line)
        assert rec["message"] == "key ***" and rec["level"] == "INFO"
        logs.reset()
        assert lambdas.formatter is None and not lambdas.filters
    finally:
        root.removeHandler(lambdas)


# -- redaction ----------------------------------------------------------------------------


def test_secrets_are_found_in_the_settings() -> None:
    settings = Settings(
        store_url=f"postgresql://spool:{URL_PASSWORD}@db/spool",
        api_keys=f"{KEY_A}={TENANT_A},sha256:{'a' * 64}=other",
        extra={
            "SPOOL_METRICS_KEYS": f"{OPERATOR_KEY}",
            "SPOOL_SMTP_PASSWORD": SMTP_PASSWORD,
            "SPOOL_WEBHOOK_SECRET": "whsec-123456",
        },
    )
    found = secrets_in(settings)
    assert {KEY_A, OPERATOR_KEY, SMTP_PASSWORD, URL_PASSWORD, "whsec-123456"} <= found
    assert not any(s.startswith("sha256:") for s in found)


def test_webhook_signing_secrets_are_secrets_too() -> None:
    """Was: SPOOL_WEBHOOKS's name matches no secret word, so its signing secrets
    were logged in clear wherever a line quoted them."""
    hooks = {
        "alpha": {"url": "https://hooks.example/a", "secrets": ["whsec_new1", "whsec_old1"]},
        "beta": {"url": "https://hooks.example/b", "secret": "whsec_only"},
    }
    found = secrets_in(Settings(extra={"SPOOL_WEBHOOKS": json.dumps(hooks)}))
    assert {"whsec_new1", "whsec_old1", "whsec_only"} <= found
    assert secrets_in(Settings(extra={"SPOOL_WEBHOOKS": "{not json"})) <= set()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("{'Authorization': 'Basic dXNlcjpw'}", "{'Authorization': '***'}"),
        ('{"x-api-key": "k-1"}', '{"x-api-key": "***"}'),
        ('"{\\"Authorization\\": \\"Bearer z\\"}"', '"{\\"Authorization\\": \\"***\\"}"'),
        ("sent bearer abcdefgh123 upstream", "sent bearer *** upstream"),
        ("proxy-authorization=Digest abc", "proxy-authorization=***"),
        ("https://u:pw@host/x", "https://u:***@host/x"),
        ("password=hunter2 ok", "password=*** ok"),
        ("the api is up", "the api is up"),
    ],
)
def test_credentials_are_masked_by_shape(text: str, shown: str) -> None:
    assert Redactor().text(text) == shown


def test_configured_secrets_are_masked_by_value_also_json_escaped() -> None:
    redactor = Redactor()
    redactor.add(['pa"ss\\word', "abc"])  # "abc": too short to mask by value
    assert redactor.text('x pa"ss\\word y abc') == "x *** y abc"
    assert redactor.text(json.dumps('pa"ss\\word')) == '"***"'
    assert redactor.value({"headers": {"Authorization": "x"}, "n": 1}) == {
        "headers": {"Authorization": "***"},
        "n": 1,
    }


# -- wiring -------------------------------------------------------------------------------


def test_routes_names_each_operation_as_app_py_routes_it() -> None:
    served = {
        entry.view_name: (method, path)
        for path, methods in spool_app.app.routes.items()
        for method, entry in methods.items()
        if method != "HEAD"  # each GET route's too: answered as the GET, logged as one
    }
    assert served == dict(routes.ROUTES)


def test_one_shot_cli_commands_stay_quiet_and_the_worker_logs_its_jobs(tmp_path: Path) -> None:
    env = {
        "SPOOL_STORE_URL": f"sqlite:///{tmp_path}/s.db",
        "SPOOL_DEMO_HANDLERS": "true",
        "PATH": "/usr/bin:/bin",
    }
    cli = [sys.executable, "-m", "local.cli"]
    payload = json.dumps({"always": True, "message": f"password={SMTP_PASSWORD}"})
    added = subprocess.run(
        [*cli, "enqueue", "fail", "--json", "--payload", payload, "--max-attempts", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    # Only the note that no worker runs the job yet (stop 59): no log line.
    assert [line.split(": no worker")[0] for line in added.stderr.splitlines()] == ["spool: note"]
    ran = subprocess.run(
        [*cli, "worker", "--burst", "--quiet"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    job_id = json.loads(added.stdout)["id"]
    [dead] = [line for line in ran.stderr.splitlines() if "job dead" in line]
    assert f"job_id={job_id}" in dead and "attempt=1" in dead
    assert SMTP_PASSWORD not in ran.stderr


@pytest.mark.parametrize("level", ["WARNING", "ERROR"])
def test_a_worker_at_warning_or_error_still_logs_deaths(captured: io.StringIO, level: str) -> None:
    logs.configure(Settings(extra={"SPOOL_LOG_LEVEL": level}), stream=captured, force=True)
    clock = FakeClock()
    store = MemoryStore(clock)
    reg = Registry()

    @reg.handler("boom", max_attempts=1)
    def boom(payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    reg.handler("fine")(lambda payload: None)
    store.add([new_job(clock, "boom", max_attempts=1), new_job(clock, "fine")])
    worker = Worker(store, reg, WorkerConfig(concurrency=1), middleware=[JobEvents()])
    try:
        worker.drain()
    finally:
        worker.close()
    events_seen = [line.split(" event=")[1].split()[0] for line in lines_of(captured)]
    assert events_seen == ["dead"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_a_line_that_cannot_be_redacted_is_replaced_not_raised(captured: io.StringIO) -> None:
    logs.configure(Settings(), stream=captured, force=True)
    logging.getLogger("spool.test").warning("a field", extra={"x": Unprintable()})
    [line] = lines_of(captured)
    assert "a log line that could not be redacted: RuntimeError" in line
