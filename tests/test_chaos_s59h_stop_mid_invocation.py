"""A stop of `spool serve`'s emulated worker that lands inside an invocation, before
its drain has a worker (s59, helper H).

events.shutdown() stops the kept worker and drops it; an invocation already past its
start but not yet at worker_for (firing periodic ticks: the first one after a start
enqueues every due tick) then built a fresh worker and drained the whole backlog.
Found from outside: 200 queued 0.2 s jobs and 500 schedules, SIGTERM as the banner
printed: "stopping: finishing running requests and jobs", then all 200 ran (7.7 s);
a backlog longer than the emulator's 30 s join left jobs `running` as it exited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import app as spool_app
from chalicelib import events, periodic
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from local.emulator import Emulator
from tests.apikit import TENANT_A

pytestmark = pytest.mark.timeout(60)

JOBS = 12


def gate_first_tick_firing(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event]:
    """Hold the next invocation inside periodic.fire_due until released."""
    entered, release = threading.Event(), threading.Event()
    real: Callable[..., Any] = periodic.fire_due

    def gated(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(periodic, "fire_due", gated)
    return entered, release


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `condition` came true within `seconds` (polled)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_stop_while_ticks_fire_claims_nothing_more(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = Emulator(spool_app.app, rt)
    emulator.start()
    stopper = threading.Thread(target=emulator.stop)
    try:
        # A warm emulator: its first invocation made the worker events keeps.
        assert wait_until(lambda: events._cached is not None)
        entered, release = gate_first_tick_firing(monkeypatch)
        assert entered.wait(10), "the emulator never invoked drain_due again"
        jobs = [EnqueueRequest.model_validate({"type": "echo"}) for _ in range(JOBS)]
        ids = [made.job.id for made in rt.service.enqueue(jobs, TENANT_A)]
        stopper.start()
        # The stop has dropped the kept worker while the invocation is held.
        assert wait_until(lambda: events._cached is None)
    finally:
        release.set()
    stopper.join(30)
    assert not stopper.is_alive()
    states = {rt.store.get(job_id).state for job_id in ids}  # type: ignore[union-attr]
    assert states == {JobState.QUEUED}
