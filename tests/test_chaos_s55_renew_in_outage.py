"""A worker whose finishes fail still renews the leases of the handlers it runs.

Found by looping tests/test_chaos_s50b_lapsed_lease.py under load (3 failures in 71):
after the write lock was let go, a worker took the job again and never renewed that
2 s lease; the other worker claimed it at the lapse and both ran it under
concurrency 1. Two things let a held lease lapse while the store answered renewals:

- each dispatcher step wrote the held completions before it looked at leases, and a
  write that failed ended the step, so the renewal never ran while finishes failed;
- a failed step slept the outage's backoff, up to store_outage.CAP (5 s), longer
  than a short lease, without waking for the renewal due meanwhile.

Here only `finish` fails, so one completion is held the whole time and the outage
stays on (its backoff growing to the cap), while `extend_leases` works: a second
handler, still running, must keep its lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.handlers import JobContext, Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

LEASE = 1.0
RUN = 4.0  # the long handler's length: four leases, the outage's backoff past the lease


class FinishesFail(MemoryStore):
    """Renewals and claims answered; every finish refused until `back` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.back = threading.Event()
        self.renewed: list[float] = []

    def finish(self, completions: Sequence[Any]) -> list[bool]:
        if not self.back.is_set():
            raise StoreUnavailable("finishes fail (test)")
        return super().finish(completions)

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> Any:
        self.renewed.append(time.monotonic())
        return super().extend_leases(leases, lease_seconds)


@pytest.mark.timeout(60)
def test_a_running_handlers_lease_is_renewed_while_finishes_fail() -> None:
    store = FinishesFail()
    reg = Registry()
    long_began = threading.Event()
    outcome: dict[str, Any] = {}

    @reg.handler("t.quick")
    def quick(payload: dict[str, object], ctx: JobContext) -> None:
        return None

    @reg.handler("t.long", timeout=30)
    def long(payload: dict[str, object], ctx: JobContext) -> None:
        long_began.set()
        outcome["cancelled"] = ctx.cancelled.wait(RUN)

    _quick, added = store.add([new_job(store.clock, "t.quick"), new_job(store.clock, "t.long")])
    worker = Worker(store, reg, WorkerConfig(concurrency=2, lease_seconds=LEASE))
    runner = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    runner.start()
    try:
        assert long_began.wait(10)
        began = time.monotonic()
        while "cancelled" not in outcome and time.monotonic() < began + RUN + 5:
            time.sleep(0.05)
        store.back.set()
    finally:
        worker.stop()
        runner.join(30)
    assert outcome.get("cancelled") is False, (
        "the running handler was told its lease lapsed while only finishes failed; "
        f"renewals at {[round(t - began, 2) for t in store.renewed]} s"
    )
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.SUCCEEDED, job


@pytest.mark.timeout(60)
def test_a_handler_that_outlasts_its_lease_after_a_stop_keeps_its_lease() -> None:
    """A graceful stop waits for running handlers (each up to its timeout): their leases
    are renewed while it waits, or another worker runs the job beside the one
    finishing."""
    store = FinishesFail()
    store.back.set()
    reg = Registry()
    began = threading.Event()
    outcome: dict[str, Any] = {}

    @reg.handler("t.long", timeout=30)
    def long(payload: dict[str, object], ctx: JobContext) -> None:
        began.set()
        outcome["cancelled"] = ctx.cancelled.wait(RUN)

    [added] = store.add([new_job(store.clock, "t.long")])
    worker = Worker(store, reg, WorkerConfig(concurrency=1, lease_seconds=LEASE))
    runner = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    runner.start()
    try:
        assert began.wait(10)
        worker.stop()
    finally:
        runner.join(30)
    assert outcome.get("cancelled") is False, (
        f"told its lease lapsed during the stop; renewals at {store.renewed}"
    )
    job = store.get(added.job.id)
    assert job is not None and job.state is JobState.SUCCEEDED, job
