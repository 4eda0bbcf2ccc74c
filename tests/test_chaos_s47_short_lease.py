"""A running job's lease is renewed before it lapses, whenever the dispatcher last woke.

The worker renews a lease once half of it is left, but its idle dispatcher slept until
the next job or lease fell due (or `idle_poll`, 1 s): woken just before a lease reached
its half (a completion, a new job), it found nothing to renew and slept on until about
when the lease ended. With SPOOL_LEASE_SECONDS=2 (the least the setting takes) another
worker's claim reaped such jobs while their handlers ran: in a chaos run of two idle
workers on 30 five-second jobs, 8 ran twice and their first outcomes were refused.
Now the dispatcher also wakes when the next renewal is due.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig

LEASE = 2.0
release = threading.Event()


@pytest.fixture
def registry() -> Iterator[Registry]:
    own = Registry()

    @own.handler("hold", max_attempts=1, timeout=30)
    def hold(payload: dict[str, object]) -> str:
        release.wait(20)
        return "held"

    @own.handler("quick", max_attempts=1)
    def quick(payload: dict[str, object]) -> str:
        return "quick"

    release.clear()
    yield own
    release.set()


def _wait(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    pytest.fail("the worker never got there")


@pytest.mark.timeout(60)
def test_a_lease_is_renewed_though_the_dispatcher_woke_just_before_its_half(
    registry: Registry,
) -> None:
    store = MemoryStore()
    service = Service(store, registry)
    worker = Worker(store, registry, WorkerConfig(concurrency=2, lease_seconds=LEASE))
    runner = threading.Thread(target=worker.run, daemon=True)
    [held] = service.enqueue([EnqueueRequest(type="hold")], "t")
    runner.start()
    try:
        _wait(lambda: (store.get(held.job.id) or held.job).state is JobState.RUNNING)
        claimed = store.get(held.job.id)
        assert claimed is not None and claimed.lease_expires_at is not None
        first_end = claimed.lease_expires_at
        lease_start = first_end - timedelta(seconds=LEASE)
        # Wake the dispatcher just before half the lease is over: nothing to renew yet.
        _sleep_until(lease_start + timedelta(seconds=LEASE / 2 - 0.05))
        [quick] = service.enqueue([EnqueueRequest(type="quick")], "t")
        _wait(lambda: (store.get(quick.job.id) or quick.job).state is JobState.SUCCEEDED)
        # Well before the lease's end, it must have been renewed.
        _sleep_until(first_end - timedelta(seconds=LEASE / 10))
        now_held = store.get(held.job.id)
        assert now_held is not None and now_held.lease_expires_at is not None
        assert now_held.lease_expires_at > first_end
    finally:
        release.set()
        worker.stop()
        runner.join(30)
    done = store.get(held.job.id)
    assert done is not None and done.state is JobState.SUCCEEDED


def _sleep_until(moment: datetime) -> None:
    left = (moment - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left)
