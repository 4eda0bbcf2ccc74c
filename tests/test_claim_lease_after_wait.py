"""A claim that waited for the store hands out a lease that starts when it is taken.

Found by a chaos run (helper F, stop 42): `spool serve` on Postgres behind a
forwarder that was cut for 10 s. A claim read the clock, then waited for a
connection (up to pool_timeout); the store came back, and the claim took jobs
with a lease dated from before the wait, already expired when it was written.
The worker dropped them unstarted (their lease was over), the next claim reaped
them, and an attempt was spent on each: with max_attempts=2, acknowledged jobs
ended dead without ever running. SQLite read its clock before waiting for the
turn to write, the same way.

Real waits: a forwarder cut and restored in front of the shared Postgres server
(never stopped), and the turn to write a SQLite file held by another (pretend) process.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import Job
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from tests.factories import new_job
from tests.pg_proxy import PgProxy
from tests.pg_support import fresh_schema, with_port

pytestmark = pytest.mark.timeout(60)

LEASE = 1.0  # shorter than the wait below: a lease dated from before it is over
WAIT = 2.0


def _claim_after_wait(store: JobStore, release: threading.Event) -> list[Job]:
    """Claim while the store is held up; `release` is set once it has waited WAIT."""
    got: list[Job] = []
    claimer = threading.Thread(target=lambda: got.extend(store.claim(10, LEASE)))
    claimer.start()
    time.sleep(WAIT)  # the claim is waiting now
    release.set()
    claimer.join(30)
    assert not claimer.is_alive()
    return got


def _assert_fresh_leases(store: JobStore, jobs: list[Job]) -> None:
    assert jobs, "the claim took nothing"
    now = store.clock.now()
    for job in jobs:
        assert job.lease_expires_at is not None and job.lease_expires_at > now, (
            f"lease {job.lease_expires_at} was over when handed out (now {now})"
        )


def test_a_postgres_claim_that_waited_for_a_connection_leases_from_when_it_ran() -> None:
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            store = open_store(with_port(direct, proxy.port))
            try:
                store.add([new_job(SystemClock(), "echo")])  # type: ignore[arg-type]
                proxy.cut()  # the pool's connection is gone; a new one is refused
                restored = threading.Event()
                waiter = threading.Thread(target=lambda: (restored.wait(30), proxy.restore()))
                waiter.start()
                jobs = _claim_after_wait(store, restored)
                waiter.join(30)
                _assert_fresh_leases(store, jobs)
            finally:
                store.close()
    finally:
        proxy.close()


def test_a_sqlite_claim_that_waited_for_the_file_leases_from_when_it_ran(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.add([new_job(SystemClock(), "echo")])  # type: ignore[arg-type]
        # Another Spool process holding the turn to write (sqlite_gate: a flock).
        gate = os.open(f"{db}.writer", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(gate, fcntl.LOCK_EX)
        unlocked = threading.Event()

        def unlock() -> None:
            unlocked.wait(30)
            fcntl.flock(gate, fcntl.LOCK_UN)
            os.close(gate)

        opener = threading.Thread(target=unlock)
        opener.start()
        jobs = _claim_after_wait(store, unlocked)
        opener.join(30)
        _assert_fresh_leases(store, jobs)
    finally:
        store.close()
