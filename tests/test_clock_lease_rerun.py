"""A worker that takes back a job it is still running keeps both attempts apart.

The wall clock stepping forward (NTP, a VM resumed, a process paused longer than
its lease) lapses the lease of an attempt whose handler is still running. The
worker's own next claim reaps the job and claims it again, so a second attempt of
the same job runs beside the first in the same worker. When the first handler
returns, its outcome is refused (the lease is gone); the second attempt must go
on under its own lease, extended as any other, and its outcome count.

The worker tracked running attempts by job id only: the first attempt's end
removed the second's entry, the second's lease was never extended, and the job
lapsed and ran again, once per lease, until its attempts were spent (a handler
that does not watch ctx.cancelled ran max_attempts times for one clock step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

WAIT = 10.0
LEASE = 2.0


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_job_taken_back_while_its_first_attempt_runs_keeps_its_second_lease() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    reg = Registry()
    calls: list[int] = []
    release = [threading.Event(), threading.Event()]

    @reg.handler("stubborn", max_attempts=5, timeout=600)
    def stubborn(payload: dict[str, Any]) -> dict[str, Any]:
        n = len(calls)
        calls.append(n)
        if n < len(release):
            release[n].wait(WAIT)  # ignores ctx.cancelled, as most handlers do
        return {"call": n}

    job = store.add([new_job(clock, "stubborn", max_attempts=5)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=2, lease_seconds=LEASE, idle_poll=0.02))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _until(lambda: len(calls) == 1, "the first attempt to start")
        clock.advance(LEASE + 1)  # the wall clock steps forward: the lease lapses
        _until(lambda: len(calls) == 2, "the job to be taken back and started again")
        release[0].set()  # the first handler returns; its outcome is refused
        _until(lambda: worker.stats.lost_lease >= 1, "the first outcome to be refused")
        # Time goes on normally while the second attempt runs: its lease is renewed.
        for _ in range(8):
            clock.advance(LEASE / 4)

            def renewed() -> bool:
                current = store.get(job.id)
                assert current is not None
                expires = current.lease_expires_at
                return (
                    current.state is not JobState.RUNNING
                    or expires is None
                    or (expires - clock.now()).total_seconds() > LEASE / 2
                )

            _until(renewed, "the second attempt's lease to be renewed")
        release[1].set()
        _until(
            lambda: (j := store.get(job.id)) is not None and j.state is JobState.SUCCEEDED,
            "the job to succeed",
        )
    finally:
        for event in release:
            event.set()
        worker.stop()
        thread.join(WAIT)
    final = store.get(job.id)
    assert final is not None
    assert calls == [0, 1]
    assert final.attempts == 2
    assert final.result == {"call": 1}
