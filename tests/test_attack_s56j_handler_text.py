"""Text a handler hands the worker never stores or serves a lone surrogate (s56, helper J).

A payload holding an unpaired UTF-16 surrogate is refused at enqueue (422), but a
handler's result was not held to the same rule: `{"x": "\\ud800"}` (or a name
"\\udfff") was stored and GET /status served it as a `\\ud800` escape, which is no
character (strict parsers refuse it, others make U+FFFD of it). Now such a result
is treated as every other result that is not JSON (a set, NaN): the job is dead with
"result is not JSON" naming where the surrogate is, on every store.

And the text of a failure: an exception whose str() holds a lone surrogate kept it in
the attempt's error and traceback (and in last_error on the memory, Postgres and
Redis stores; SQLite and DynamoDB made U+FFFD of it), as did a handler's log lines
in the attempt's log_tail. Every such text is now written with each lone surrogate
replaced by U+FFFD (storage.base.utf8_text), before any store sees it.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import logs, runtime
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.handlers import JobContext, Registry
from chalicelib.jsonstrict import surrogate_path
from chalicelib.models import Job, JobState
from chalicelib.storage.base import JobStore
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from local.server import Server
from tests.apikit import KEY_A
from tests.factories import new_job
from tests.served import post, served

SURROGATE = "unpaired UTF-16 surrogate"

RESULTS = [
    ({"x": "\ud800"}, "x"),
    ({"ok": 1, "\udfff": 1}, "\\udfff"),
    ("\udc00", "the result itself"),
    ([1, {"a": ["ok", "x\ud800y"]}], "1.a.1"),
    # 40 lists deep: shown as the API shows a deep place, by its ends (s57).
    (
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["\ud800"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
        "0.0.0.0.0.0...(28 more)...0.0.0.0.0.0 ",
    ),
]


def utf8(text: str | None) -> bool:
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def add(store: JobStore, clock: FakeClock, job_type: str, **fields: Any) -> Job:
    return store.add([new_job(clock, job_type, **fields)])[0].job


def get(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job


def drain(store: JobStore, reg: Registry) -> None:
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("result", "where"), RESULTS, ids=["value", "name", "str", "nested", "deep"]
)
def test_a_result_with_a_lone_surrogate_is_not_json_on_every_store(
    store: JobStore, clock: FakeClock, reg: Registry, result: Any, where: str
) -> None:
    @reg.handler("odd")
    def odd(payload: dict[str, Any]) -> Any:
        return result

    @reg.handler("astral")
    def astral(payload: dict[str, Any]) -> Any:
        return {"face": "\U0001f600", "\U0001f600": ["\u00e9"]}

    job = add(store, clock, "odd", max_attempts=3)
    fine = add(store, clock, "astral")
    drain(store, reg)
    dead = get(store, job.id)
    assert dead.state is JobState.DEAD and dead.attempts == 1
    assert dead.result is None
    error = dead.last_error or ""
    assert error.startswith("result is not JSON: ") and SURROGATE in error
    assert f"at {where}" in error
    assert utf8(error)
    done = get(store, fine.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == {"face": "\U0001f600", "\U0001f600": ["\u00e9"]}


class Odd(Exception):
    def __str__(self) -> str:
        return "odd \udc80 text"


def test_a_failure_text_with_a_lone_surrogate_is_stored_as_utf8_on_every_store(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("fails")
    def fails(payload: dict[str, Any], ctx: JobContext) -> Any:
        ctx.log.info("working on \ud800 now")
        raise ValueError("bad \ud800 value")

    @reg.handler("odd_str")
    def odd_str(payload: dict[str, Any]) -> Any:
        raise Odd()

    for job_type, shown in (("fails", "bad \ufffd value"), ("odd_str", "odd \ufffd text")):
        job = add(store, clock, job_type, max_attempts=1)
        drain(store, reg)
        dead = get(store, job.id)
        assert dead.state is JobState.DEAD
        assert dead.last_error is not None and shown in dead.last_error
        [attempt] = store.attempts(job.id) or []
        texts = [attempt.error, attempt.error_type, attempt.traceback, *attempt.log_tail]
        assert all(utf8(text) for text in texts), texts
        assert attempt.error is not None and shown in attempt.error
        if job_type == "fails":
            assert any("working on \ufffd now" in line for line in attempt.log_tail)


def raise_odd(payload: dict[str, Any]) -> Any:
    raise Odd()


@pytest.fixture
def server(tmp_path: Path, registry_restored: Registry) -> Iterator[Server]:
    with served(tmp_path) as running:
        reg = runtime.current().registry
        reg.handler("odd_result")(lambda payload: {"x": "\ud800", "\udfff": 1})
        reg.handler("odd_error", max_attempts=1)(raise_odd)
        yield running


def raw_get(server: Server, path: str) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY_A}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    assert b" 200 " in head_bytes.split(b"\r\n")[0], received
    return body


@pytest.mark.parametrize("job_type", ["odd_result", "odd_error"])
def test_get_status_serves_no_lone_surrogate_escape(server: Server, job_type: str) -> None:
    status, answer = post(server, "/enqueue", json.dumps({"type": job_type}).encode())
    assert status == 201, answer
    rt = runtime.current()
    drain(rt.store, rt.registry)
    for path in (f"/status/{answer['id']}?attempts=true", "/jobs?state=dead", "/dlq"):
        body = raw_get(server, path)
        text = body.decode("utf-8")  # strict: no stray bytes
        # A `\\ud800` escape reads back as a lone surrogate: every string must be UTF-8.
        assert surrogate_path(json.loads(text)) is None, text


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logs.reset()


def test_a_json_log_line_of_handler_text_holds_no_lone_surrogate(
    captured: io.StringIO, clock: FakeClock, reg: Registry
) -> None:
    """A JSON line holding the raw surrogate went out as a `\\ud800` escape (stderr's
    backslashreplace): a lone surrogate again, to whatever parses the log."""
    logs.configure(Settings(extra={"SPOOL_LOG_FORMAT": "json"}), stream=captured, force=True)
    store = MemoryStore(clock)

    @reg.handler("chatty", max_attempts=1)
    def chatty(payload: dict[str, Any], ctx: JobContext) -> None:
        ctx.log.info("working on \ud800 now")
        raise ValueError("bad \udfff value")

    add(store, clock, "chatty")
    drain(store, reg)
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line]
    said = [line for line in lines if "\ufffd" in json.dumps(line, ensure_ascii=False)]
    assert said, lines
    assert all(surrogate_path(line) is None for line in lines), lines


class _Formatted(logging.Handler):
    """A plain handler, as an app's own file or collector handler would be."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_every_log_handler_gets_a_handler_line_without_a_lone_surrogate(
    clock: FakeClock, reg: Registry
) -> None:
    """Only the JSON format made U+FFFD of a handler's lone surrogate: every other
    handler (pytest's capture, an app's UTF-8 file, a collector) got the raw one from
    ctx.log, its message, its arguments or the exception it logged, and a strict
    UTF-8 writer failed on it ("--- Logging error ---", the line lost)."""
    seen = _Formatted()
    root = logging.getLogger()
    root.addHandler(seen)
    store = MemoryStore(clock)

    @reg.handler("chatty", max_attempts=1)
    def chatty(payload: dict[str, Any], ctx: JobContext) -> None:
        ctx.log.error("working on \ud800 now")
        ctx.log.warning("argument %s", "x\udc00y")
        try:
            raise ValueError("bad \udfff value")
        except ValueError:
            ctx.log.exception("caught")

    try:
        add(store, clock, "chatty")
        drain(store, reg)
    finally:
        root.removeHandler(seen)
    said = [line for line in seen.lines if "\ufffd" in line]
    assert len(said) == 3, seen.lines
    assert all(utf8(line) for line in seen.lines), seen.lines
