"""The worker's side of attempt history: what each attempt records, and heartbeats.

Stores are the memory store and a real SQLite file on a FakeClock (the contract
suite runs the store side on every backend); the worker's pool is real threads.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import attempt_record, worker_id
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError, StoreUnavailable
from chalicelib.handlers import JobContext, Registry
from chalicelib.models import MAX_ERROR_CHARS, Job, JobState
from chalicelib.retry import RetryPolicy
from chalicelib.storage.base import LEASE_EXPIRED_ERROR, JobStore
from chalicelib.storage.memory import MemoryStore
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

WAIT = 10.0  # generous bound for anything that waits on another thread


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[JobStore]:
    opened: JobStore = (
        MemoryStore(clock)
        if request.param == "memory"
        else SQLiteStore(str(tmp_path / "spool.db"), clock)
    )
    yield opened
    opened.close()


@pytest.fixture
def reg() -> Registry:
    return Registry()


def add(store: JobStore, clock: FakeClock, type_: str, **fields: Any) -> Job:
    return store.add([new_job(clock, type_, **fields)])[0].job


def drain(store: JobStore, reg: Registry, **config: Any) -> None:
    worker = Worker(store, reg, WorkerConfig(concurrency=2, **config))
    try:
        worker.drain()
    finally:
        worker.close()


def deep_failure(depth: int, message: str) -> None:
    if depth == 0:
        raise ValueError(message)
    deep_failure(depth - 1, message)


def test_three_failures_then_a_success_leave_four_attempts(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("flaky", max_attempts=5, backoff=(2.0, 60.0))
    def flaky(payload: dict[str, Any], ctx: JobContext) -> dict[str, int]:
        clock.advance(0.25)  # the handler "takes" a quarter second on the store's clock
        if ctx.attempt <= 3:
            deep_failure(3, f"flaky {ctx.attempt}")
        return {"ok": ctx.attempt}

    job = add(store, clock, "flaky", max_attempts=5)
    retry_ats = []
    for _ in range(4):
        drain(store, reg)
        waiting = store.get(job.id)
        assert waiting is not None
        if waiting.state is JobState.RETRYING:
            retry_ats.append(waiting.run_at)
            clock.advance(max(0.0, (waiting.run_at - clock.now()).total_seconds()))
    done = store.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED and done.result == {"ok": 4}
    attempts = store.attempts(job.id)
    assert attempts is not None
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "retrying"),
        (4, "succeeded"),
    ]
    for attempt, retry_at in zip(attempts[:3], retry_ats, strict=True):
        assert attempt.error_type == "ValueError"
        assert attempt.error == f"flaky {attempt.number}"
        assert attempt.traceback is not None
        assert attempt.traceback.startswith("Traceback (most recent call last):")
        assert attempt.traceback.endswith(f"ValueError: flaky {attempt.number}\n")
        assert "in deep_failure" in attempt.traceback
        assert attempt.seconds == 0.25
        assert attempt.next_delay == (retry_at - attempt.finished_at).total_seconds()
        assert 0 <= attempt.next_delay <= RetryPolicy(base=2.0).ceiling(attempt.number)
        assert attempt.worker == worker_id.current()
    last = attempts[3]
    assert (last.error_type, last.error, last.traceback, last.next_delay) == (
        None,
        None,
        None,
        None,
    )
    assert last.finished_at == done.finished_at


def test_a_dead_end_records_the_permanent_error(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("refuse")
    def refuse(payload: dict[str, Any]) -> None:
        raise PermanentError("the address does not exist")

    job = add(store, clock, "refuse")
    drain(store, reg)
    [attempt] = store.attempts(job.id) or []
    assert (attempt.outcome, attempt.error_type, attempt.error, attempt.next_delay) == (
        "dead",
        "PermanentError",
        "the address does not exist",
        None,
    )
    assert attempt.traceback is not None and "in refuse" in attempt.traceback


def test_a_failure_with_a_huge_message_is_recorded_as_itself_cut_to_the_limit(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    """Was: a message of megabytes redacted whole three times on the pool thread (~0.3 s
    a MiB), so a PermanentError could be charged as a timeout and retried, and it was
    stored and served whole (a /status answer of megabytes)."""
    huge = "password=hunter2 " + "P" * (2 * 1024 * 1024)

    @reg.handler("refuse")
    def refuse(payload: dict[str, Any]) -> None:
        raise PermanentError(huge)

    job = add(store, clock, "refuse")
    drain(store, reg)
    done = store.get(job.id)
    assert done is not None and done.state is JobState.DEAD and done.attempts == 1
    assert done.last_error is not None
    assert done.last_error.startswith("PermanentError: password=")
    assert re.search(r"P\[\.\.\. \d+ characters trimmed\]$", done.last_error)
    assert len(done.last_error) <= MAX_ERROR_CHARS and "hunter2" not in done.last_error
    [attempt] = store.attempts(job.id) or []
    assert attempt.error_type == "PermanentError" and attempt.error is not None
    assert len(attempt.error) <= MAX_ERROR_CHARS
    assert "hunter2" not in attempt.error and attempt.error.startswith("password=")
    assert attempt.traceback is not None and "hunter2" not in attempt.traceback


def test_tracebacks_keep_their_end_within_spool_traceback_bytes(
    store: JobStore, clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_TRACEBACK_BYTES", "600")

    @reg.handler("deep", max_attempts=1)
    def deep(payload: dict[str, Any]) -> None:
        deep_failure(60, "at the bottom")

    job = add(store, clock, "deep", max_attempts=1)
    drain(store, reg)
    [attempt] = store.attempts(job.id) or []
    assert attempt.traceback is not None
    assert len(attempt.traceback.encode()) <= 600
    assert attempt.traceback.startswith("[... ") and "bytes trimmed ...]" in attempt.traceback
    assert attempt.traceback.endswith("ValueError: at the bottom\n")


def test_spool_traceback_bytes_zero_keeps_none(
    store: JobStore, clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_TRACEBACK_BYTES", "0")

    @reg.handler("boom", max_attempts=1)
    def boom(payload: dict[str, Any]) -> None:
        raise KeyError("k")

    job = add(store, clock, "boom", max_attempts=1)
    drain(store, reg)
    [attempt] = store.attempts(job.id) or []
    assert (attempt.error_type, attempt.traceback) == ("KeyError", None)


def test_secrets_in_an_error_stay_out_of_the_history(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("leaky", max_attempts=1)
    def leaky(payload: dict[str, Any]) -> None:
        raise ConnectionError("cannot reach postgresql://app:s3cret@db.internal/jobs")

    job = add(store, clock, "leaky", max_attempts=1)
    drain(store, reg)
    [attempt] = store.attempts(job.id) or []
    assert attempt.error is not None and "db.internal" in attempt.error
    assert "s3cret" not in attempt.error
    assert attempt.traceback is not None and "s3cret" not in attempt.traceback


def test_an_exception_that_cannot_describe_itself_still_finishes_the_job(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no words")

    @reg.handler("mute", max_attempts=1)
    def mute(payload: dict[str, Any]) -> None:
        raise Unprintable()

    job = add(store, clock, "mute", max_attempts=1)
    drain(store, reg)
    dead = store.get(job.id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.last_error is not None and dead.last_error.startswith("Unprintable")
    [attempt] = store.attempts(job.id) or []
    assert (attempt.outcome, attempt.error_type) == ("dead", "Unprintable")


def test_a_lease_that_expired_is_recorded_with_the_worker_that_held_it(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("job")
    def work(payload: dict[str, Any]) -> str:
        return "done"

    job = add(store, clock, "job")
    worker_id.set_lambda_request("req-that-vanished")
    try:
        [held] = store.claim(1, 30)  # a worker that dies right after claiming
    finally:
        worker_id.set_lambda_request(None)
    clock.advance(31)
    drain(store, reg)
    attempts = store.attempts(job.id)
    assert attempts is not None
    lost, done = attempts
    assert (lost.number, lost.outcome, lost.worker, lost.error) == (
        1,
        "lease_expired",
        "lambda:req-that-vanished",
        LEASE_EXPIRED_ERROR,
    )
    assert (lost.started_at, lost.finished_at, lost.next_delay) == (
        held.started_at,
        held.lease_expires_at,
        0.0,
    )
    assert (done.number, done.outcome, done.worker) == (2, "succeeded", worker_id.current())


def test_history_keeps_the_last_spool_attempt_history(
    clock: FakeClock, reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_ATTEMPT_HISTORY", "3")
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)

    @reg.handler("never", max_attempts=5, backoff=(0.0, 0.0))
    def never(payload: dict[str, Any], ctx: JobContext) -> None:
        raise RuntimeError(f"no {ctx.attempt}")

    try:
        job = add(store, clock, "never", max_attempts=5)
        drain(store, reg)  # immediate retries: all five attempts in one drain
        final = store.get(job.id)
        assert final is not None and (final.state, final.attempts) == (JobState.DEAD, 5)
        attempts = store.attempts(job.id) or []
        assert [(a.number, a.outcome, a.error) for a in attempts] == [
            (3, "retrying", "no 3"),
            (4, "retrying", "no 4"),
            (5, "dead", "no 5"),
        ]
    finally:
        store.close()


def test_a_timed_out_attempt_shows_where_the_handler_was_stuck(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    release = threading.Event()

    @reg.handler("hangs", max_attempts=1, timeout=0.2)
    def hangs(payload: dict[str, Any]) -> None:
        release.wait(WAIT)  # stuck here until the test ends

    job = add(store, clock, "hangs", max_attempts=1)
    try:
        drain(store, reg)
    finally:
        release.set()
    [attempt] = store.attempts(job.id) or []
    assert (attempt.outcome, attempt.error_type) == ("dead", "TimeoutError")
    assert attempt.error == "timed out after 0.2s"
    assert attempt.traceback is not None
    assert "timed out" in attempt.traceback and "in hangs" in attempt.traceback


# -- heartbeats ---------------------------------------------------------------------------


def test_drain_and_run_beat_while_they_work(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    drain(store, reg, queues=("mail",))
    [beat] = store.live_workers(60)
    assert (beat.worker, beat.queues, beat.last_beat) == (
        worker_id.current(),
        ("mail",),
        clock.now(),
    )
    worker = Worker(store, reg, WorkerConfig(concurrency=1, heartbeat_seconds=0.05))
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        started = clock.now()
        for _ in range(3):  # each step of the store's clock is followed by a fresh beat
            clock.advance(120)
            deadline = time.monotonic() + WAIT
            while not store.live_workers(1) and time.monotonic() < deadline:
                time.sleep(0.01)
            [beat] = store.live_workers(1)
            assert beat.last_beat == clock.now() and beat.started_at == started
            assert beat.queues is None
    finally:
        worker.stop()
        runner.join(WAIT)
    assert not runner.is_alive()
    # Stopped cleanly, it signs off: not counted live for another minute (was: up to
    # SPOOL_WORKER_LIVE_SECONDS, so a fleet scaled to zero still showed workers).
    assert store.live_workers(600) == []


def test_a_burst_signs_off_when_it_ends(store: JobStore, reg: Registry) -> None:
    """`spool worker --burst` from cron: each run used to stay counted live for a
    minute after it exited, and its row stayed in the store for good."""
    worker = Worker(store, reg, WorkerConfig(concurrency=1, heartbeat_seconds=0.05))
    worker.run(burst=True)
    assert store.live_workers(600) == []


def test_a_store_that_cannot_take_a_beat_does_not_stop_the_work(
    clock: FakeClock, reg: Registry
) -> None:
    class NoBeats(MemoryStore):
        def beat(self, *args: Any) -> None:
            raise StoreUnavailable("down for beats")

    store = NoBeats(clock)

    @reg.handler("job")
    def work(payload: dict[str, Any]) -> str:
        return "fine"

    job = add(store, clock, "job")
    drain(store, reg)
    done = store.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    store.close()


def test_settings_read_by_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert attempt_record.traceback_bytes({}) == 4096
    assert attempt_record.heartbeat_seconds({}) == 15.0
    assert attempt_record.traceback_bytes({"SPOOL_TRACEBACK_BYTES": "1024"}) == 1024
    with pytest.raises(ValueError, match="SPOOL_TRACEBACK_BYTES"):
        attempt_record.traceback_bytes({"SPOOL_TRACEBACK_BYTES": "lots"})
    with pytest.raises(ValueError, match="SPOOL_HEARTBEAT_SECONDS"):
        attempt_record.heartbeat_seconds({"SPOOL_HEARTBEAT_SECONDS": "0"})
    from chalicelib.storage import history

    assert history.history_limit({}) == 25
    with pytest.raises(ValueError, match="SPOOL_ATTEMPT_HISTORY"):
        history.history_limit({"SPOOL_ATTEMPT_HISTORY": "0"})
    monkeypatch.setenv("SPOOL_ATTEMPT_HISTORY", "7")
    assert MemoryStore(FakeClock()).history_limit == 7


def test_a_lambda_invocation_names_the_worker() -> None:
    host = worker_id.current()
    name, pid, tag = host.rsplit(":", 2)  # host:pid:tag
    assert (name, pid) == (socket.gethostname(), str(os.getpid())) and tag
    worker_id.set_lambda_request("8f1c2b7e-0000-4a7e-9d3c-1234567890ab")
    try:
        assert worker_id.current() == "lambda:8f1c2b7e-0000-4a7e-9d3c-1234567890ab"
    finally:
        worker_id.set_lambda_request(None)
    assert worker_id.current() == host


def test_a_failing_attempt_keeps_the_handlers_last_log_lines(
    store: JobStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("noisy", max_attempts=2, backoff=(1.0, 1.0))
    def noisy(payload: dict[str, Any], ctx: JobContext) -> str:
        ctx.log.info("fetching page %d", ctx.attempt)
        if ctx.attempt == 1:
            ctx.log.warning("upstream said 503")
            raise RuntimeError("upstream unavailable")
        return "ok"

    job = add(store, clock, "noisy")
    drain(store, reg)
    clock.advance(2)
    drain(store, reg)
    history = store.attempts(job.id)
    assert history is not None
    failed, succeeded = history
    assert failed.outcome == "retrying"
    assert [line.split(" ", 1)[1] for line in failed.log_tail] == [
        "fetching page 1",
        "upstream said 503",
    ]
    assert succeeded.outcome == "succeeded" and succeeded.log_tail == ()


def test_the_default_beat_is_a_quarter_of_a_short_live_window() -> None:
    """A worker beating every 15 s under SPOOL_WORKER_LIVE_SECONDS=8 would count as
    live for 8 s of every 15: unset, the beat follows the window it is read against."""
    beat = attempt_record.heartbeat_seconds
    assert beat({"SPOOL_WORKER_LIVE_SECONDS": "8"}) == 2.0
    assert beat({"SPOOL_WORKER_LIVE_SECONDS": "600"}) == 15.0  # never slower than before
    assert beat({"SPOOL_WORKER_LIVE_SECONDS": "8", "SPOOL_HEARTBEAT_SECONDS": "5"}) == 5.0
    with pytest.raises(ValueError, match="SPOOL_WORKER_LIVE_SECONDS"):
        beat({"SPOOL_WORKER_LIVE_SECONDS": "0"})


def test_a_runtimes_worker_beats_within_the_live_window(tmp_path: Path) -> None:
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime

    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/spool.db", extra={"SPOOL_WORKER_LIVE_SECONDS": "4"}
    )
    rt = build_runtime(settings)
    try:
        worker = rt.worker()
        try:
            assert worker.config.heartbeat_seconds == 1.0
        finally:
            worker.close()
    finally:
        rt.close()


def test_a_runtimes_worker_takes_these_settings_from_the_runtime_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import Settings
    from chalicelib.runtime import build_runtime

    monkeypatch.setenv("SPOOL_TRACEBACK_BYTES", "999")
    monkeypatch.setenv("SPOOL_HEARTBEAT_SECONDS", "99")
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/spool.db",
        extra={"SPOOL_TRACEBACK_BYTES": "0", "SPOOL_HEARTBEAT_SECONDS": "2"},
    )
    rt = build_runtime(settings)
    try:
        worker = rt.worker()
        try:
            assert (worker.config.traceback_bytes, worker.config.heartbeat_seconds) == (0, 2.0)
        finally:
            worker.close()
    finally:
        rt.close()


def test_a_stuck_thread_s_stack_is_read_with_the_collector_held_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython 3.11's sys._current_frames() holds its thread list's lock; a collection
    starting inside it that frees a threading.local asks for that lock again and hangs
    the process (a CI run hung so in a worker's timeout). The collector is off for the
    call and back on after it."""
    import gc
    import sys

    from chalicelib import attempt_record

    seen: list[bool] = []
    real = sys._current_frames

    def frames() -> dict[int, Any]:
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", frames)
    assert gc.isenabled()
    stack = attempt_record.stack_of(threading.get_ident(), 4096)
    assert seen == [False] and gc.isenabled()
    assert stack is not None and "test_a_stuck_thread_s_stack" in stack
