"""The memory store: a scrape's reads do not grow with every queue name ever used.

Was: queue_totals folded a copy of every counter and a pass over every job (one
CounterKey made per counter row of every name ever used, every name ranked), and
oldest_due answered one entry per queue holding a due job, for the exposition to
fold. Now the store keeps its per-queue counts, per-type totals and a ranking by
volume as jobs move, and answers the named queues and the sums of the rest
(`oldest_due_named`: the named queues' and the oldest other's).

The work is counted as Python calls (sys.setprofile), not timed: the assertion holds
on any machine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.models import OTHER_QUEUE, Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.storage.queue_totals import fold
from tests.factories import new_job

LEASE = 30.0


def calls(call: Callable[[], Any]) -> int:
    """Python and C calls `call()` makes."""
    counted = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            counted[0] += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return counted[0]


def run_all(store: MemoryStore, clock: FakeClock, queues: list[str]) -> None:
    """One job in each queue, run to success and purged: only counters are left."""
    for start in range(0, len(queues), 500):
        store.add([new_job(clock, queue=q) for q in queues[start : start + 500]])
    while claimed := store.claim(500, LEASE):
        store.finish([Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in claimed])
    clock.advance(10)
    while store.purge(clock.now(), 1000):
        pass


def busy(store: MemoryStore, clock: FakeClock) -> None:
    for queue, n in {"default": 5, "emails": 3, "images": 2}.items():
        store.add([new_job(clock, queue=queue) for _ in range(n)])
    store.add([new_job(clock, queue="later", delay=60)])


def test_queue_totals_and_the_oldest_due_read_do_not_grow_with_queue_names() -> None:
    keep, busiest = ["default"], 5
    clock = FakeClock()
    few = MemoryStore(clock)
    busy(few, clock)
    many = MemoryStore(clock)
    run_all(many, clock, [f"made-up-{i:05d}" for i in range(2000)])
    busy(many, clock)
    for store in (few, many):
        assert store.queue_totals(keep, busiest) == fold(
            store.counters(), store.counts(), keep, busiest
        )
    named = sorted(many.queue_totals(keep, busiest).named)

    def scrape(store: MemoryStore) -> Callable[[], Any]:
        return lambda: (store.queue_totals(keep, busiest), store.oldest_due_named(named))

    base = calls(scrape(few))
    assert calls(scrape(many)) <= base + 50, (base, calls(scrape(many)))


def test_due_queues_cost_the_scrape_one_entry_each_not_a_python_step() -> None:
    """2,000 queues holding a due job: the scrape's oldest-due read answers the named
    queues and the oldest other, and its counts read the kept ones."""
    keep, busiest = ["default"], 5
    clock = FakeClock()
    few = MemoryStore(clock)
    busy(few, clock)
    many = MemoryStore(clock)
    many.add([new_job(clock, queue=f"due-{i:05d}") for i in range(2000)])
    clock.advance(1)
    busy(many, clock)
    clock.advance(1)
    named = sorted(many.queue_totals(keep, busiest).named)
    answer = many.oldest_due_named(named)
    every = many.oldest_due()
    others = {q: at for q, at in every.items() if q not in named}
    oldest_other = min(others.items(), key=lambda item: (item[1], item[0]))
    assert answer == {
        **{q: every[q] for q in named if q in every},
        oldest_other[0]: oldest_other[1],
    }
    totals = many.queue_totals(keep, busiest)
    assert totals == fold(many.counters(), many.counts(), keep, busiest)
    assert totals.counts[(OTHER_QUEUE, JobState.QUEUED)] >= 2000 - busiest
    assert (
        calls(lambda: many.queue_totals(keep, busiest))
        <= calls(lambda: few.queue_totals(keep, busiest)) + 50
    )
