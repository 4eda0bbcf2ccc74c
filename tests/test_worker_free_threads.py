"""Jobs claimed for pool threads that are idle at the claim go to them started: no
start mark to write. Only what is claimed beyond them (the prefetch, which may wait)
is claimed unstarted and marked when a thread takes it (chalicelib/start_marks.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job
from tests.test_worker import WAIT, wait_until


def _counting_starts(store: MemoryStore) -> list[list[tuple[str, str]]]:
    """Every `start` call's leases, in order (the store still answers them)."""
    calls: list[list[tuple[str, str]]] = []
    real = store.start

    def start(leases: Sequence[tuple[str, str]]) -> list[bool]:
        calls.append(list(leases))
        return real(leases)

    store.start = start  # type: ignore[method-assign]
    return calls


def _idle_worker(store: MemoryStore, reg: Registry, concurrency: int) -> Worker:
    worker = Worker(store, reg, WorkerConfig(concurrency=concurrency))
    worker._ensure_threads()
    assert wait_until(lambda: worker._state.idle == concurrency)
    return worker


def test_a_job_for_an_idle_thread_is_claimed_started(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("noop")
    def noop(payload: dict[str, Any]) -> None:
        return None

    ids = [r.job.id for r in mem.add([new_job(clock, "noop") for _ in range(2)])]
    calls = _counting_starts(mem)
    worker = _idle_worker(mem, reg, concurrency=3)
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert stats.succeeded == 2
    assert calls == []  # one claim, no start mark written
    for job_id in ids:
        job = mem.get(job_id)
        assert job is not None and job.state is JobState.SUCCEEDED and job.attempts == 1


def test_jobs_claimed_beyond_the_idle_threads_are_marked_when_taken(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    entered = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    @reg.handler("slow_first")
    def slow_first(payload: dict[str, Any]) -> None:
        ran.append(payload["n"])
        if len(ran) == 1:
            entered.set()
            assert release.wait(WAIT)

    mem.add([new_job(clock, "slow_first", payload={"n": n}) for n in range(3)])
    calls = _counting_starts(mem)
    worker = _idle_worker(mem, reg, concurrency=1)
    try:
        assert worker._claim(3) == 3
        assert entered.wait(WAIT)
        (first,) = list(worker._state.running)  # the job the one thread runs
        release.set()
        assert wait_until(lambda: len(ran) == 3)
    finally:
        worker.close()
    marked = [job_id for call in calls for job_id, _ in call]
    assert len(marked) == 2 and first not in marked


def _drain_counting_way_given(
    monkeypatch: pytest.MonkeyPatch, seconds: float, jobs: int
) -> tuple[int, int]:
    """Drain `jobs` jobs whose handlers take `seconds`: (times the marks' writer gave
    way, start writes)."""
    given: list[int] = []
    monkeypatch.setattr("chalicelib.worker.give_way", lambda: given.append(1))
    reg = Registry()

    @reg.handler("work")
    def work(payload: dict[str, Any]) -> None:
        if seconds:
            threading.Event().wait(seconds)

    clock = FakeClock()
    store = MemoryStore(clock)
    store.add([new_job(clock, "work") for _ in range(jobs)])
    starts = _counting_starts(store)
    worker = Worker(store, reg, WorkerConfig(concurrency=4))
    try:
        stats = worker.drain()
    finally:
        worker.close()
    assert stats.succeeded == jobs
    return len(given), len(starts)


def test_the_marks_writer_gives_way_behind_quick_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No-op handlers: the threads are ready to ask together, so the writer gives way
    (once the worker has timed enough of them to know they are quick)."""
    given, writes = _drain_counting_way_given(monkeypatch, 0.0, 600)
    assert writes > 0 and given > 0


def test_the_marks_writer_does_not_give_way_behind_slow_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10 ms handlers: nobody is ready to join a write; giving way there only waits out
    another thread's turn with the interpreter lock before the handler starts."""
    given, writes = _drain_counting_way_given(monkeypatch, 0.01, 60)
    assert writes > 0  # marks were written, each without giving way
    assert given == 0
