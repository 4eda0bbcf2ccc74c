"""The memory store's queue_totals, kept as jobs move rather than folded per scrape.

Folding a full reading (queue_totals.fold) made one key per counter of every queue
name ever used and ranked every name, at every scrape: 20,000 names cost the
scrape ~0.1 s of Python (docs/benchmarks.md). The ledger keeps what the rule needs
(chalicelib/storage/queue_totals.py): each queue's counters and counts, their totals
over every queue, and the queues ranked by jobs ever enqueued. A scrape then reads
the named queues and subtracts them from the totals: its work grows with the named
queues and the job types, not with the names. MemoryStore updates it under its lock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence

from chalicelib.models import OTHER_QUEUE, CounterKey, JobState
from chalicelib.storage.queue_totals import QueueTotals, kept


class QueueLedger:
    """Counters and counts by queue and in total, and the queues by volume."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[str, str], int]] = {}  # queue -> (type, event)
        self._counter_totals: dict[tuple[str, str], int] = {}
        self._counts: dict[str, dict[JobState, int]] = {}
        self._count_totals: dict[JobState, int] = {}
        self._volume: dict[str, int] = {}  # jobs ever enqueued, per known queue
        self._ranked: list[tuple[int, str]] = []  # (-volume, queue), ascending

    def bumped(self, queue: str, type_: str, event: str) -> None:
        """A counter of `queue` went up by one."""
        mine = self._counters.get(queue)
        if mine is None:  # known from now on: ranked, with no volume yet
            mine = self._counters[queue] = {}
            self._volume[queue] = 0
            insort(self._ranked, (0, queue))
        key = (type_, event)
        mine[key] = mine.get(key, 0) + 1
        self._counter_totals[key] = self._counter_totals.get(key, 0) + 1
        if event == "enqueued":
            was = self._volume[queue]
            del self._ranked[bisect_left(self._ranked, (-was, queue))]
            self._volume[queue] = was + 1
            insort(self._ranked, (-was - 1, queue))

    def moved(self, queue: str, was: JobState | None, now: JobState | None) -> None:
        """A job of `queue` left state `was` for `now` (None: added, or deleted)."""
        if was is now:
            return
        mine = self._counts.setdefault(queue, {})
        for state, step in ((was, -1), (now, 1)):
            if state is not None:
                mine[state] = mine.get(state, 0) + step
                self._count_totals[state] = self._count_totals.get(state, 0) + step

    def totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        """queue_totals by the rule, from the named queues' entries and the totals."""
        always = [q for q in kept(keep) if q in self._counters]
        named = set(always)
        wanted = max(0, busiest)
        if wanted:
            for _, queue in self._ranked:
                if queue not in named and queue != OTHER_QUEUE:
                    named.add(queue)
                    wanted -= 1
                    if not wanted:
                        break
        counters: dict[CounterKey, int] = {}
        rest = dict(self._counter_totals)
        counts: dict[tuple[str, JobState], int] = {}
        rest_counts = dict(self._count_totals)
        for queue in named:
            for (type_, event), n in self._counters[queue].items():
                rest[(type_, event)] -= n
                if n > 0:
                    counters[CounterKey(queue, type_, event)] = n
            for state, n in self._counts.get(queue, {}).items():
                rest_counts[state] -= n
                if n > 0:
                    counts[(queue, state)] = n
        for (type_, event), n in rest.items():
            if n > 0:
                counters[CounterKey(OTHER_QUEUE, type_, event)] = n
        for state, n in rest_counts.items():
            if n > 0:
                counts[(OTHER_QUEUE, state)] = n
        # Every job's queue has a counter (its enqueue), so a queue holding jobs is known.
        return QueueTotals(frozenset(named), counters, counts, len(self._counters) > len(named))
