"""JobStore.queue_totals: the counters and counts of a scrape, already folded by queue.

Every queue name ever used keeps its counter rows for good (a counter that
vanished would read as a reset), and tenants choose queue names freely. A
scrape that read every row and ranked them in Python grew with every name ever
used (200,000 names: seconds per scrape). So the store answers the question
the exposition asks: the named queues' own rows, and everything else summed
under `_other` (models.OTHER_QUEUE), ranked and summed where the rows are.

The rule, the same on every store (`fold` is its reference, and what the stores
whose reads are a scan anyway use):
- a queue is known once it has a counter row (an enqueue writes one in the
  transaction that stores the job);
- named: the known queues among `keep`, plus the `busiest` known queues outside
  `keep` by jobs ever enqueued (descending), ties by name in code point order;
  `_other` itself is never named;
- counters and counts of every other queue are summed under `_other`, so sums
  over queue are exact; zero counts are absent; `other` says whether any queue
  was folded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.models import OTHER_QUEUE, CounterKey, JobState


@dataclass(frozen=True)
class QueueTotals:
    """What one scrape needs of the counters and the counts, folded by queue."""

    named: frozenset[str]
    counters: dict[CounterKey, int]  # queue: a named one or OTHER_QUEUE; zeros absent
    counts: dict[tuple[str, JobState], int]  # likewise
    other: bool  # some known queue (or one holding jobs) was folded into OTHER_QUEUE


def kept(keep: Sequence[str]) -> list[str]:
    """`keep` without `_other` (which always folds) and repeats, in order."""
    return sorted(set(keep) - {OTHER_QUEUE})


def fold(
    counters: Mapping[CounterKey, int],
    counts: Mapping[tuple[str, JobState], int],
    keep: Sequence[str],
    busiest: int,
) -> QueueTotals:
    """The rule applied to a full reading (every counter and count)."""
    volume: dict[str, int] = {}
    for key, n in counters.items():
        volume[key.queue] = volume.get(key.queue, 0) + (n if key.event == "enqueued" else 0)
    always = set(kept(keep))
    ranked = sorted(
        (q for q in volume if q not in always and q != OTHER_QUEUE),
        key=lambda q: (-volume[q], q),
    )
    named = frozenset({q for q in volume if q in always} | set(ranked[: max(0, busiest)]))
    return folded(named, counters, counts)


def folded(
    named: frozenset[str],
    counters: Mapping[CounterKey, int],
    counts: Mapping[tuple[str, JobState], int],
) -> QueueTotals:
    """Every queue outside `named` summed under OTHER_QUEUE."""
    other = False
    out_counters: dict[CounterKey, int] = {}
    for key, n in counters.items():
        queue = key.queue if key.queue in named else OTHER_QUEUE
        other = other or queue == OTHER_QUEUE
        into = CounterKey(queue, key.type, key.event)
        out_counters[into] = out_counters.get(into, 0) + n
    out_counts: dict[tuple[str, JobState], int] = {}
    for (queue, state), n in counts.items():
        label = queue if queue in named else OTHER_QUEUE
        other = other or label == OTHER_QUEUE
        out_counts[(label, state)] = out_counts.get((label, state), 0) + n
    return QueueTotals(
        named,
        {key: n for key, n in out_counters.items() if n > 0},
        {key: n for key, n in out_counts.items() if n > 0},
        other,
    )
