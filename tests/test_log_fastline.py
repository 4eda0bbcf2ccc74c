"""Spool's event lines written straight to its own text handler are the lines the
logging machinery would have written: same text, same masking, same fallbacks."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib import logs
from chalicelib.config import Settings
from tests.served import exchange, served

SECRET = "sk-configured-7f3a9"
NOW = 1_764_000_123.4567


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    """Spool's text handler on a buffer, as in `spool serve` and `spool worker`."""
    buf = CountingStream()
    logs.configure(Settings(extra={"SPOOL_WEBHOOK_SECRET": SECRET}), stream=buf, force=True)
    yield buf
    logs.reset()
    logs.set_request_id(None)


def _handler() -> logging.Handler:
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, logs._Stream)]
    return handler


@contextmanager
def alone() -> Iterator[None]:
    """Spool's handler alone on the root logger: pytest's capture handlers, added for
    each phase of a test, set aside while the test body runs."""
    handlers = logging.getLogger().handlers
    saved = handlers[:]
    handlers[:] = [_handler()]
    try:
        yield
    finally:
        handlers[:] = saved


def _through_logging(name: str, level: int, message: str, extra: dict[str, Any]) -> str:
    """The line the record, the redacting filter and TextFormatter make of these fields."""
    record = logging.getLogger(name).makeRecord(name, level, "", 0, message, (), None, extra=extra)
    record.created, record.msecs = NOW, int((NOW - int(NOW)) * 1000)
    handler = _handler()
    assert handler.filter(record)
    return handler.format(record)


EXTRAS: list[dict[str, Any]] = [
    {"event": "enqueued", "job_id": "j_01HZX3Q8K9", "tenant": "t", "attempt": 0},
    {"event": "dead", "error": 'RuntimeError: a "quoted" message = bad', "delay_s": 1.5},
    {"event": "x", "tenant": "two words", "queue": "nul\x00esc\x1b", "ok": True, "none": None},
    {"event": "x", "error": f"login with {SECRET} refused", "note": SECRET},
    {"event": "x", "error": "Authorization: Bearer abcdefghijklmnop", "url": "https://u:pw@h/"},
    {"event": "x", "headers": {"Authorization": "Basic Zm9v", "n": [1, SECRET]}, "n": 3},
    {"event": "x", "password": "hunter22", "api_key": "plain-looking-value"},
    {"event": "x", "tenant": "ünïcödé ✓", "type": "", "queue": "a=b"},
]


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("request_id", [None, "req-123"])
def test_a_fast_line_is_the_line_logging_writes(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], request_id: Any
) -> None:
    logs.set_request_id(request_id)
    clock = SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", clock)
    for level in (logging.INFO, logging.ERROR):
        fast = logs.text_line("spool.jobs", level, "job something", extra)
        assert fast == _through_logging("spool.jobs", level, "job something", dict(extra))
    assert SECRET not in fast and "hunter22" not in fast


def test_threads_serving_http_beside_an_invocation_do_not_take_its_id(
    stream: io.StringIO,
) -> None:
    """Under `spool serve` the emulated worker's invocation id went on every HTTP line."""
    import threading

    logs.set_request_id("req-worker")
    try:
        with alone():

            def serve_one() -> None:
                logs.not_in_invocation()
                logs.job_line(logging.INFO, "enqueued", {"job_id": "j_http"})
                logging.getLogger("spool.http").info("through logging")

            thread = threading.Thread(target=serve_one)
            thread.start()
            thread.join(10)
            logs.job_line(logging.INFO, "succeeded", {"job_id": "j_pool"})
        lines = stream.getvalue().splitlines()
    finally:
        logs.set_request_id(None)
    [http_fast, http_logging, pool] = lines
    assert "aws_request_id" not in http_fast and "aws_request_id" not in http_logging
    assert pool.endswith("aws_request_id=req-worker")


def test_spool_lines_skip_the_record_when_its_handler_is_alone(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        raise AssertionError("a record was made")

    monkeypatch.setattr(logs.jobs_log, "makeRecord", no_record)
    with alone():
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_1", "tenant": "t"}, delay_s=2.0)
        logs.http_request("POST", "/enqueue", 201, 0.0012, "t")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].endswith(
            "spool.jobs: job enqueued event=enqueued job_id=j_1 tenant=t delay_s=2"
        )
        assert " spool.http: POST /enqueue 201 event=http_request method=POST " in lines[1]


def test_another_handler_gets_records_and_the_stream_the_same_line(
    stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    with alone():
        logging.getLogger().addHandler(caplog.handler)
        caplog.set_level(logging.INFO, logger="spool")
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_2", "tenant": "t", "note": SECRET})
        [record] = [r for r in caplog.records if r.name == "spool.jobs"]
        assert record.job_id == "j_2" and record.note == "***"  # type: ignore[attr-defined]
        [line] = stream.getvalue().splitlines()
        assert line.endswith("job enqueued event=enqueued job_id=j_2 tenant=t note=***")


def test_a_logger_filter_a_disabled_logger_or_a_quiet_handler_is_respected(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    with alone():
        monkeypatch.setattr(logs.jobs_log, "disabled", True)
        logs.job_line(logging.ERROR, "dead", {"job_id": "j_disabled"})
        monkeypatch.setattr(logs.jobs_log, "disabled", False)
        monkeypatch.setattr(logs.jobs_log, "filters", [lambda record: False])
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_3"})
        monkeypatch.setattr(logs.jobs_log, "filters", [])
        monkeypatch.setattr(_handler(), "level", logging.ERROR)
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_4"})
        assert stream.getvalue() == ""
        logs.job_line(logging.ERROR, "dead", {"job_id": "j_5"})
        assert "job_id=j_5" in stream.getvalue()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_a_field_that_cannot_be_masked_takes_the_filters_way_out(stream: io.StringIO) -> None:
    with alone():
        logs.job_line(logging.WARNING, "x", {"job_id": "j_6"}, odd=Unprintable())
        [line] = stream.getvalue().splitlines()
        assert "a log line that could not be redacted: RuntimeError" in line


def test_a_field_named_like_a_record_attribute_is_refused_as_logging_refuses_it(
    stream: io.StringIO,
) -> None:
    with alone(), pytest.raises(KeyError):
        logs.job_line(logging.INFO, "x", {"job_id": "j_7"}, module="m")


def test_a_broken_stream_is_reported_not_raised(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    with alone():
        reported: list[logging.LogRecord] = []
        monkeypatch.setattr(stream, "write", lambda text: 1 / 0)
        monkeypatch.setattr(_handler(), "handleError", reported.append)
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_8"})
        assert [r.getMessage() for r in reported] == ["job enqueued"]


def test_a_closed_sys_stderr_drops_the_line_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler may close sys.stderr. Logging's own report of the failed write then
    raised ValueError out of the log call: in the worker, out of the thread writing
    job outcomes, and the worker died with 15 jobs running."""
    closed = io.StringIO()
    closed.close()
    logs.configure(Settings(), force=True)  # Spool's handler on whatever sys.stderr is
    try:
        monkeypatch.setattr(sys, "stderr", closed)
        with alone():
            logs.job_line(logging.INFO, "succeeded", {"job_id": "j_9"})  # its own way
            logging.getLogger("spool.worker").warning("through logging: %s", "x")
    finally:
        logs.reset()


def test_lines_logged_together_reach_the_stream_in_one_write_in_order(
    stream: CountingStream,
) -> None:
    with alone():
        with pytest.raises(RuntimeError), logs.together():
            for n in range(5):
                logs.job_line(logging.INFO, "enqueued", {"job_id": f"j_{n}"})
                with logs.together():  # nested: joins the outer block
                    logs.job_line(logging.INFO, "enqueued", {"job_id": f"j_{n}_inner"})
            assert stream.getvalue() == ""  # held until the block ends
            raise RuntimeError("the block failed after logging: its lines still go out")
        logs.job_line(logging.INFO, "enqueued", {"job_id": "j_after"})
    ids = [line.rsplit("job_id=", 1)[1] for line in stream.getvalue().splitlines()]
    assert ids == [x for n in range(5) for x in (f"j_{n}", f"j_{n}_inner")] + ["j_after"]
    assert stream.writes == 2


def test_a_batch_enqueue_writes_its_lines_at_once(stream: CountingStream, tmp_path: Path) -> None:
    from chalicelib.handlers import Registry
    from chalicelib.service import EnqueueRequest, Service
    from chalicelib.storage import open_store

    registry = Registry()

    @registry.handler("echo")
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    service = Service(open_store(f"sqlite:///{tmp_path}/s.db"), registry)
    requests = [
        EnqueueRequest.model_validate({"type": "echo", "payload": {"n": n}}) for n in range(7)
    ]
    with alone():
        results = service.enqueue(requests, "t")
        service.enqueue(requests[:1], "t")
    service.store.close()
    lines = stream.getvalue().splitlines()
    assert [line.split("job_id=")[1].split()[0] for line in lines[:7]] == [
        r.job.id for r in results
    ]
    assert len(lines) == 8 and stream.writes == 2


def test_a_workers_flush_writes_its_outcome_lines_at_once(stream: CountingStream) -> None:
    from chalicelib.clock import FakeClock
    from chalicelib.handlers import Registry
    from chalicelib.job_events import JobEvents
    from chalicelib.storage.memory import MemoryStore
    from chalicelib.worker import Worker, WorkerConfig
    from tests.factories import new_job

    registry = Registry()

    @registry.handler("echo")
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    clock = FakeClock()
    store = MemoryStore(clock)
    store.add([new_job(clock) for _ in range(40)])
    worker = Worker(
        store, registry, WorkerConfig(concurrency=4, flush_delay=0.05), middleware=[JobEvents()]
    )
    with alone():
        stats = worker.drain()
    worker.close()
    assert stats.succeeded == 40
    lines = [line for line in stream.getvalue().splitlines() if "job succeeded" in line]
    assert len(lines) == 40
    assert stream.writes < 40  # completions are flushed in batches, each one write


def test_a_custom_record_factory_keeps_its_fields(stream: io.StringIO) -> None:
    made = logging.getLogRecordFactory()

    def with_host(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = made(*args, **kwargs)
        record.host = "web-1"
        return record

    logging.setLogRecordFactory(with_host)
    try:
        with alone():
            logs.job_line(logging.INFO, "enqueued", {"job_id": "j_9"})
    finally:
        logging.setLogRecordFactory(made)
    assert " host=web-1 event=enqueued job_id=j_9" in stream.getvalue()


FORGING = "x\n2026-12-02T00:00:00.000Z ERROR spool.http: FORGED tenant=b\r\x1b[31mRED\u2028\x85"


def test_a_message_cannot_forge_a_line_or_colour_the_terminal(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler logging a payload's text (ctx.log.info(payload["s"])): its line breaks
    and control characters are written as escapes, on both ways a line is made."""
    clock = SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", clock)
    fast = logs.text_line("spool.handler", logging.INFO, FORGING, {"event": "log"})
    slow = _through_logging("spool.handler", logging.INFO, FORGING, {"event": "log"})
    assert fast == slow
    assert "\n" not in slow and "\r" not in slow and "\x1b" not in slow
    assert "\u2028" not in slow and "\x85" not in slow
    assert "x\\n2026-12-02T00:00:00.000Z ERROR spool.http: FORGED" in slow
    assert "\\r\\u001b[31mRED\\u2028\\u0085" in slow


# What a client can put in a job id (the path is percent-decoded): Unicode's line and
# paragraph separators, NEL and the other C1 controls (U+009B is a terminal's CSI, as
# ESC [ is), and DEL. A message has them escaped (one_line); a key=value field too.
CLIENT_ID = "j_\u2028\u2029\x85\x9b31mRED\x9b0m\x7f FORGED tenant=b"


@pytest.mark.parametrize("value", [CLIENT_ID, "j_\u2028x", "j_\x85x", "j_\x9b31m", "j_\x7f"])
def test_a_field_cannot_forge_a_line_or_reach_the_terminal_raw(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    clock = SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", clock)
    extra = {"event": "http_request", "job_id": value}
    fast = logs.text_line("spool.http", logging.INFO, "GET /status/{id} 401", extra)
    slow = _through_logging("spool.http", logging.INFO, "GET /status/{id} 401", extra)
    assert fast == slow
    assert len(slow.splitlines()) == 1  # splitlines() breaks at U+2028 and NEL too
    for raw in ("\u2028", "\u2029", "\x85", "\x9b", "\x7f"):
        assert raw not in slow
    assert json.loads(slow.split(" job_id=", 1)[1]) == value  # written as a JSON string


def test_a_job_id_sent_without_a_key_reaches_the_log_escaped(
    stream: io.StringIO, tmp_path: Path
) -> None:
    """Over a socket: the request line of `GET /status/<id>` logs the id from the path,
    key or no key (and an unrouted request its path), so anyone who can reach the port
    wrote U+2028, NEL, U+009B and DEL raw into the operator's log."""
    with served(tmp_path) as server, alone():
        routed, _ = exchange(
            server,
            b"GET /status/j_%E2%80%A8%C2%85%C2%9B31mRED HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n",
        )
        unrouted, _ = exchange(
            server, b"GET /nope%7F%C2%9B31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert (routed, unrouted) == (401, 404)
    lines = [x for x in stream.getvalue().split("\n") if "event=http_request" in x]
    assert len(lines) == 2
    for raw in ("\u2028", "\x85", "\x9b", "\x7f"):
        assert all(raw not in line for line in lines)
    assert 'job_id="j_\\u2028\\u0085\\u009b31mRED"' in lines[0]
    assert 'path="/nope\\u007f\\u009b31m"' in lines[1]
