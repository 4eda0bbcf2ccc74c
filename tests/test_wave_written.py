"""Worker.process() (an SQS wave) writes its jobs' finishes in one store write, whichever
of its jobs ends first and however long the wave's claim takes.

tests/test_aws_requests.py loosened its TransactWriteItems count (commit 2576049) on the
reading that a wave of two, claimed a job at a time on DynamoDB, could write apart when
its first job ended before the second's claim returned, the second not yet counting as
in flight. These tests play that order without timing: the wave's claim takes its jobs
one at a time, the first job ends at once, and the second is let go only once the
worker has decided, with the first job's finish in hand, whether to write it. No job
runs before the claim returns (process() hands the whole wave to the pool in one step,
under the lock), and a job waiting in the inbox or running counts as in flight, so the
first finish waits for the second.

What did write a wave twice in CI was the decision's timing: it was made before the
dispatcher's turn, on an outbox still empty, and a finish handed in during the turn was
then written alone. The last test plays that order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from chalicelib import worker as worker_module
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import Completion, Job, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.test_worker import add, get


class OneAtATime(MemoryStore):
    """A store whose claim of named jobs takes them one by one (as DynamoDB claims a
    wave of fewer than BATCH_CLAIM_FROM with an UpdateItem each), and that records
    what ran before each claim returned and the size of every finish."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.started: list[str] = []  # job ids, as handlers start
        self.started_during_claim: list[list[str]] = []
        self.finishes: list[int] = []

    def claim(self, limit: int, lease_seconds: float, *args: Any, **kwargs: Any) -> list[Job]:
        ids = kwargs.get("ids")
        if ids is None:
            return super().claim(limit, lease_seconds, *args, **kwargs)
        jobs: list[Job] = []
        for job_id in ids:
            jobs += super().claim(1, lease_seconds, *args, **{**kwargs, "ids": [job_id]})
            self.started_during_claim.append(list(self.started))
        return jobs

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        self.finishes.append(len(completions))
        return super().finish(completions)


class Watched(Worker):
    """Lets the wave's slow job go the first time the dispatcher has held the quick
    job's finish back (so the order is fixed: the quick one ended, the decision made,
    then the slow one ends); records every decision made with a finish in hand."""

    def __init__(self, *args: Any, release: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release
        self.decisions: list[tuple[int, int, bool]] = []  # outbox, in flight, write now

    def _wave_held(self) -> bool:  # called under the worker's lock
        held = super()._wave_held()
        if self._state.outbox:
            self.decisions.append((len(self._state.outbox), self._in_flight(), not held))
            if held:
                self.release.set()
        return held


@pytest.mark.parametrize("quick_first", [True, False], ids=["quick-claimed-first", "slow-first"])
def test_a_wave_whose_first_job_ends_while_the_other_waits_is_written_once(
    clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch, quick_first: bool
) -> None:
    # The hold's bound (WAVE_HOLD seconds) is what a slow job of the wave costs the
    # others' status; it must not decide here, however slow the machine.
    monkeypatch.setattr(worker_module, "WAVE_HOLD", 3600.0)
    store = OneAtATime(clock)
    release = threading.Event()

    @reg.handler("quick")
    def quick(payload: dict[str, Any]) -> str:
        store.started.append("quick")
        return "done"

    @reg.handler("slow")
    def slow(payload: dict[str, Any]) -> str:
        store.started.append("slow")
        assert release.wait(30), "the worker never decided on the quick job's finish"
        return "done"

    a, b = add(store, clock, "quick"), add(store, clock, "slow")
    wave = [a.id, b.id] if quick_first else [b.id, a.id]
    worker = Watched(store, reg, WorkerConfig(concurrency=2, start_marks=False), release=release)
    try:
        outcome = worker.process(wave)
    finally:
        release.set()
        worker.close()

    assert outcome == {a.id: "succeeded", b.id: "succeeded"}
    assert store.started_during_claim == [[], []]  # nothing ran before the claim returned
    assert worker.decisions[0] == (1, 1, False)  # the quick one's finish held for the slow
    assert store.finishes == [2]  # one write for the wave
    assert {get(store, i).state for i in wave} == {JobState.SUCCEEDED}


class LateFinish(Worker):
    """Lets the wave's quick job run only inside the dispatcher's turn, after the turn
    began and before it writes (its first step, the timeout reaping): the order that
    wrote a wave twice in CI, where a loaded machine left time between the two."""

    def __init__(self, *args: Any, go: threading.Event, ended: threading.Event, **kw: Any):
        super().__init__(*args, **kw)
        self.go, self.ended = go, ended

    def _reap_timeouts(self) -> None:
        if not self.go.is_set():
            self.go.set()
            assert self.ended.wait(30), "the quick job never ended"
            deadline = time.monotonic() + 30
            while not self._state.outbox and time.monotonic() < deadline:
                time.sleep(0.001)  # its pool thread hands its finish in just after
        super()._reap_timeouts()


def test_a_finish_handed_in_during_the_dispatchers_turn_waits_for_the_wave(
    clock: FakeClock, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision to write is made on the outbox as it is taken: made first, on an
    empty outbox, it let a finish handed in meanwhile be written alone."""
    monkeypatch.setattr(worker_module, "WAVE_HOLD", 3600.0)
    store = OneAtATime(clock)
    go, ended, release = threading.Event(), threading.Event(), threading.Event()

    @reg.handler("quick")
    def quick(payload: dict[str, Any]) -> str:
        assert go.wait(30), "the dispatcher never took a turn"
        ended.set()
        return "done"

    @reg.handler("slow")
    def slow(payload: dict[str, Any]) -> str:
        assert release.wait(30), "the wave never got past the quick job's finish"
        return "done"

    a, b = add(store, clock, "quick"), add(store, clock, "slow")
    worker = LateFinish(
        store, reg, WorkerConfig(concurrency=2, start_marks=False), go=go, ended=ended
    )
    threading.Timer(0.5, release.set).start()  # the slow job ends once the turn is over
    try:
        outcome = worker.process([a.id, b.id])
    finally:
        release.set()
        go.set()
        worker.close()

    assert outcome == {a.id: "succeeded", b.id: "succeeded"}
    assert store.finishes == [2]  # one write for the wave
