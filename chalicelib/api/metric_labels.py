"""Which queue names may become Prometheus label values.

Queue names are free-form and chosen by tenants. Every distinct name used to
become a label value in every family, forever (the store's counters outlive
the jobs), so a tenant that made up 300 names grew /metrics to 14,000 lines.
The label set is bounded here:

- SPOOL_METRICS_QUEUES declared: those names, and no others, are labels.
- Otherwise at most SPOOL_METRICS_MAX_QUEUES names (default 50): for the
  system-wide totals, the busiest (most jobs ever enqueued, then by name, so
  a burst of new names cannot push out the queues that carry the work); for a
  process's own timings, the first it ran.

Unless SPOOL_METRICS_QUEUES is declared, the queues the handlers declare (and `default`)
keep their names besides the limit's, and one tenant may take at most a fifth
of a process's first-seen labels: one tenant's batch of 50 made-up queue names,
sent just after a restart, used to take every timing label for the life of the
process, leaving every other tenant's queues `_other`.

Every other queue is folded into the label value `_other` and its counts are
added there, never dropped, so sums across a family stay exact. When a queue
overtakes one of the kept ones, both move: their histories go into and out of
`_other`, whose counters then jump or fall with no job behind it (Prometheus
reads a fall as a reset, and increase() counts what follows as new). The
ranking is still taken from the store at every scrape, so every process and
Lambda container names the same queues; labels fixed per process flipped from
scrape to scrape under `spool serve --processes N`. The store ranks and folds
(JobStore.queue_totals, chalicelib/storage/queue_totals.py), so a scrape does
not receive a row per queue name ever used. What reads the totals sums
over `queue` first (deploy/prometheus/alerts.yml). A queue that is itself named
`_other` always folds, so no series is ever written twice.
Job types need no bound: only registered types can be enqueued, and state
and outcome labels are enum values.

The rule must be the same in every process, since Prometheus takes one copy of each
system-wide series (`max by (queue, ...)`): SPOOL_QUEUES, the queues one worker
claims from, is not part of it. It was, and a worker given SPOOL_QUEUES=emails
reported every other queue as `_other` where the API named it: the same jobs under
two labels, counted twice by the dashboard's sums, and the backlog alert raised for
`_other` too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.models import DEFAULT_QUEUE, OTHER_QUEUE

if TYPE_CHECKING:
    from chalicelib.config import Settings

OTHER = OTHER_QUEUE
# One tenant may name at most 1/TENANT_SHARE of a process's first-seen timing labels.
TENANT_SHARE = 5
MAX_QUEUES = "SPOOL_METRICS_MAX_QUEUES"
DECLARED_QUEUES = "SPOOL_METRICS_QUEUES"
DEFAULT_MAX_QUEUES = 50
# A ceiling on the ceiling: past this the exposition is the problem being fixed.
_MAX_MAX_QUEUES = 10_000


@dataclass(frozen=True)
class QueueLabels:
    """The rule: the declared queues, or the `limit` busiest ones."""

    declared: frozenset[str] | None = None
    limit: int = DEFAULT_MAX_QUEUES
    # The handlers' own queues: kept first, before any name a client made up.
    reserved: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, reserved: Iterable[str] = ()) -> QueueLabels:
        limit = settings.integer(MAX_QUEUES, DEFAULT_MAX_QUEUES, minimum=0, maximum=_MAX_MAX_QUEUES)
        named = settings.queue_list(DECLARED_QUEUES)
        declared = frozenset(named) if named else None
        return cls(declared, limit, tuple(sorted({DEFAULT_QUEUE, *reserved} - {OTHER})))

    def store_request(self) -> tuple[tuple[str, ...], int]:
        """What to ask JobStore.queue_totals for: the queues always named, and how many
        of the busiest others (none when SPOOL_METRICS_QUEUES is declared)."""
        if self.declared is not None:
            return tuple(sorted(self.declared)), 0
        return self.reserved, self.limit


class FirstSeen:
    """One process's timing labels: the first `limit` queues it ran keep their names.

    A histogram cannot be re-split once observed, so the busiest-first rule of
    the totals cannot apply; first-seen is fixed for the life of the process.
    """

    def __init__(self, rule: QueueLabels) -> None:
        self.rule = rule
        self._kept: set[str] = set(rule.reserved)
        self._by_tenant: dict[str, int] = {}
        self._share = max(1, rule.limit // TENANT_SHARE)  # what one tenant may name
        self._lock = threading.Lock()

    def label(self, queue: str, tenant: str = "") -> str:
        if queue == OTHER:
            return OTHER
        if self.rule.declared is not None:
            return queue if queue in self.rule.declared else OTHER
        if queue in self._kept:  # a set read: no lock once a queue is known
            return queue
        with self._lock:
            if queue in self._kept:
                return queue
            taken = self._by_tenant.get(tenant, 0)
            first_seen = len(self._kept) - len(self.rule.reserved)
            if first_seen < self.rule.limit and taken < self._share:
                self._kept.add(queue)
                self._by_tenant[tenant] = taken + 1
                return queue
        return OTHER


MAX_WORKERS = "SPOOL_METRICS_MAX_WORKERS"
DEFAULT_MAX_WORKERS = 50


def max_workers(settings: Settings) -> int:
    """How many live workers get a heartbeat series of their own.

    Worker ids are host:pid:tag (a new one per process start) or one per Lambda
    invocation, so they come and go; only live ones are reported, and at most
    this many (the most recent beats first). `spool_workers_live` still counts
    them all.
    """
    return settings.integer(MAX_WORKERS, DEFAULT_MAX_WORKERS, minimum=0, maximum=_MAX_MAX_QUEUES)
