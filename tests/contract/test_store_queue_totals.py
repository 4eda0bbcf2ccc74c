"""JobStore.queue_totals on every backend (the rule is in chalicelib/storage/queue_totals.py).

The named set, `_other`'s sums, tie order, and what happens as jobs move and go.
Each store's answer is compared with the reference fold of its own full reading
(counters(), counts()) as well as with numbers written out by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from chalicelib.clock import FakeClock
from chalicelib.models import OTHER_QUEUE, Completion, CounterKey, JobState
from chalicelib.storage.base import JobStore
from chalicelib.storage.queue_totals import QueueTotals, fold
from tests.factories import new_job, token

LEASE = 30.0
Q, R, S = JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED


def fill(store: JobStore, clock: FakeClock, volumes: dict[str, int], type_: str = "echo") -> None:
    store.add([new_job(clock, type_, queue=q) for q, n in volumes.items() for _ in range(n)])


def enqueued(totals: QueueTotals) -> dict[str, int]:
    """Jobs enqueued per label, summed over types."""
    out: dict[str, int] = {}
    for key, n in totals.counters.items():
        if key.event == "enqueued":
            out[key.queue] = out.get(key.queue, 0) + n
    return out


def same_as_reference(store: JobStore, keep: Iterable[str], busiest: int) -> QueueTotals:
    keep = list(keep)
    totals = store.queue_totals(keep, busiest)
    assert totals == fold(store.counters(), store.counts(), keep, busiest)
    return totals


def test_the_busiest_are_named_and_the_rest_summed_under_other(
    store: JobStore, clock: FakeClock
) -> None:
    fill(store, clock, {"big": 5, "mid": 3, "aaa": 1, "zzz": 1, "kept": 1, OTHER_QUEUE: 2})
    fill(store, clock, {"big": 1, "aaa": 1}, type_="fail")  # aaa: 2 in all, mid's 3 ahead
    totals = same_as_reference(store, ["kept", "never-used", OTHER_QUEUE], 2)
    # kept: asked for and known; never-used: unknown, so not a label; `_other` always folds.
    assert totals.named == {"kept", "big", "mid"}
    assert totals.other
    assert enqueued(totals) == {"big": 6, "mid": 3, "kept": 1, OTHER_QUEUE: 5}
    assert totals.counters[CounterKey("big", "fail", "enqueued")] == 1
    assert totals.counters[CounterKey(OTHER_QUEUE, "fail", "enqueued")] == 1
    assert totals.counters[CounterKey(OTHER_QUEUE, "echo", "enqueued")] == 4
    assert totals.counts == {("big", Q): 6, ("mid", Q): 3, ("kept", Q): 1, (OTHER_QUEUE, Q): 5}
    # Sums over queue are exact: the same as every counter summed.
    assert sum(totals.counters.values()) == sum(store.counters().values())


def test_ties_are_broken_by_name_whatever_the_order_of_arrival(
    store: JobStore, clock: FakeClock
) -> None:
    fill(store, clock, {"c": 2, "b": 2, "d": 1, "a": 2, "e": 1})
    assert same_as_reference(store, [], 2).named == {"a", "b"}
    assert same_as_reference(store, [], 4).named == {"a", "b", "c", "d"}
    assert same_as_reference(store, ["e"], 3).named == {"a", "b", "c", "e"}
    everything = same_as_reference(store, [], 50)
    assert everything.named == {"a", "b", "c", "d", "e"}
    assert not everything.other
    assert OTHER_QUEUE not in enqueued(everything)


def test_nothing_named_beyond_keep_when_busiest_is_zero(store: JobStore, clock: FakeClock) -> None:
    """SPOOL_QUEUES declared: only those names, however busy the others."""
    assert store.queue_totals(["emails"], 0) == QueueTotals(frozenset(), {}, {}, False)
    fill(store, clock, {"emails": 1, "busy": 9})
    totals = same_as_reference(store, ["emails"], 0)
    assert totals.named == {"emails"}
    assert enqueued(totals) == {"emails": 1, OTHER_QUEUE: 9}


def test_counts_follow_the_jobs_and_counters_stay(store: JobStore, clock: FakeClock) -> None:
    fill(store, clock, {"big": 3, "small": 1})
    claimed = store.claim(10, LEASE)
    assert len(claimed) == 4
    store.finish([Completion(j.id, token(j), S) for j in claimed if j.queue == "small"])
    totals = same_as_reference(store, [], 1)
    assert totals.named == {"big"}
    assert totals.counts == {("big", R): 3, (OTHER_QUEUE, S): 1}
    assert totals.counters[CounterKey(OTHER_QUEUE, "echo", "succeeded")] == 1

    store.finish([Completion(j.id, token(j), S) for j in claimed if j.queue == "big"])
    clock.advance(10)
    store.purge(clock.now(), 1000)
    totals = same_as_reference(store, [], 1)
    # No jobs left: no counts (none at zero), but the counters outlive the jobs.
    assert totals.counts == {}
    assert totals.other
    assert enqueued(totals) == {"big": 3, OTHER_QUEUE: 1}
    assert totals.counters[CounterKey("big", "echo", "succeeded")] == 3
    assert store.state_counts() == {}


def test_a_queue_that_overtakes_moves_its_history_out_of_other(
    store: JobStore, clock: FakeClock
) -> None:
    fill(store, clock, {"first": 2, "second": 1})
    before = same_as_reference(store, [], 1)
    assert before.named == {"first"}
    fill(store, clock, {"second": 2})
    after = same_as_reference(store, [], 1)
    assert after.named == {"second"}
    assert enqueued(after) == {"second": 3, OTHER_QUEUE: 2}
