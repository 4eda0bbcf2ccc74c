"""A busy worker keeps the leases it holds: renewed early enough, all in one write.

Found from outside: three `spool worker` processes (concurrency 16, SPOOL_LEASE_SECONDS=2)
on one SQLite file, running 96 CPU-bound handlers of 4 s on a 2-core machine. Every
job's first outcome was refused (`lease_lost`), jobs ran up to five times, and five
went dead with their attempts spent by reaps while their handlers were running. The
dispatcher, starved of the interpreter lock by its pool and waiting its turn at the
file's write lock behind the other processes, renewed its 16 leases one write each:
one look took 2.9 s, longer than the whole lease. It also renewed only once half a
lease was left, looking every lease/6: with a 2 s lease a renewal could start with
0.67 s left, less than one slow write.

Now every lease due is renewed in one store write (JobStore.extend_leases), and a
lease is due once a third of it has passed (two thirds left), so a renewal starts
with at least half the lease in hand.

The store's writes are made slow with the test's clock (each write moves it on, as
waiting for a contended write turn would), so nothing here races a real clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.backends import open_backend
from tests.factories import new_job

LEASE = 2.0
# What one store write costs the dispatcher under load: its wait for the write turn.
WRITE = 0.25


class SlowWrites(MemoryStore):
    """A memory store whose every lease write first waits WRITE seconds of its clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.fake = clock
        self.writes = 0

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        self._wait_turn()
        return super().extend_lease(job_id, lease_token, lease_seconds)

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> Any:
        self._wait_turn()
        return super().extend_leases(leases, lease_seconds)

    def _wait_turn(self) -> None:
        self.writes += 1
        self.fake.advance(WRITE)


def _held_worker(jobs: int) -> tuple[SlowWrites, FakeClock, Worker, list[str]]:
    """A worker holding `jobs` claimed jobs (no pool threads: nothing runs them)."""
    clock = FakeClock()
    store = SlowWrites(clock)
    reg = Registry()

    @reg.handler("t.noop")
    def noop(payload: dict[str, object]) -> None:
        return None

    store.add([new_job(clock, "t.noop") for _ in range(jobs)])
    worker = Worker(store, reg, WorkerConfig(concurrency=jobs, lease_seconds=LEASE))
    claimed = store.claim(jobs, LEASE, started=False)
    worker._accept(claimed)
    return store, clock, worker, [j.id for j in claimed]


def _still_ours(store: MemoryStore, worker: Worker) -> list[str]:
    """The held jobs another worker's claim, made now, would not take from this one."""
    store.claim(100, LEASE)  # reaps every lapsed lease (and takes it), as another's does
    kept = []
    for attempt in worker._state.inbox:
        job = store.get(attempt.job.id)
        assert job is not None
        if job.state is JobState.RUNNING and job.lease_token == attempt.job.lease_token:
            kept.append(job.id)
    return kept


def test_a_busy_dispatcher_renews_all_its_leases_in_one_write() -> None:
    store, clock, worker, ids = _held_worker(8)
    clock.advance(LEASE / 2)  # half of each lease left: due however the worker judges
    worker._extend_leases()
    # One write for all eight: written one by one, the fifth waited until the leases
    # had ended and the last four were lost while their worker was there to renew them.
    assert _still_ours(store, worker) == ids
    assert store.writes == 1
    assert not any(a.lost for a in worker._state.inbox)


def test_a_lease_is_renewed_with_more_than_half_of_it_left() -> None:
    store, clock, worker, ids = _held_worker(1)
    # A look at the leases when 40% of the lease has passed (60% left) renews it, so
    # a dispatcher then held up for more than half a lease (its next look delayed by
    # a slow claim or flush) still finds the job its own.
    clock.advance(LEASE * 0.4)
    worker._extend_leases()
    clock.advance(LEASE * 0.65)
    assert _still_ours(store, worker) == ids


def test_the_next_renewal_is_planned_for_when_a_third_of_the_lease_has_passed() -> None:
    store, clock, worker, _ = _held_worker(1)
    worker._last_lease_check -= LEASE  # the look spacing does not hold it back here
    # Renewal falls due once two thirds of the lease are left, not half.
    assert abs(worker._next_renewal_in() - LEASE / 3) < 0.01
    clock.advance(LEASE / 3)
    worker._extend_leases()
    assert store.writes == 1


# The method each store makes one round trip (one write turn, one statement, one
# script call) through.
ROUND_TRIP = {"sqlite": "_write", "postgres": "_run", "redis": "_run"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", sorted(ROUND_TRIP))
def test_a_store_renews_many_leases_in_one_round_trip(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Per lease, each round trip of a starved dispatcher costs what one write costs:
    on Redis, 16 CPU-bound threads made one round trip take 0.5 s on average."""
    clock = FakeClock()
    with open_backend(backend, clock, tmp_path, request) as store:
        store.add([new_job(clock, "t.noop") for _ in range(8)])
        claimed = store.claim(8, LEASE)
        through = getattr(store, ROUND_TRIP[backend])
        trips = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal trips
            trips += 1
            return through(*args, **kwargs)

        setattr(store, ROUND_TRIP[backend], counted)
        clock.advance(LEASE / 2)
        kept = store.extend_leases([(j.id, j.lease_token or "") for j in claimed], LEASE)
        assert kept == [True] * 8
        assert trips == 1
