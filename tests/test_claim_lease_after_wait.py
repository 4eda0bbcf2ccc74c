"""A lease written after a wait for the store runs from when it is written.

Found by a chaos run (helper F, stop 42): `spool serve` on Postgres behind a
forwarder that was cut for 10 s. A claim read the clock, then waited for a
connection (up to pool_timeout); the store came back, and the claim took jobs
with a lease dated from before the wait, already expired when it was written.
The worker dropped them unstarted (their lease was over), the next claim reaped
them, and an attempt was spent on each: with max_attempts=2, acknowledged jobs
ended dead without ever running. SQLite read its clock before waiting for the
turn to write, the same way; and a lease extension, on both, wrote an expiry
dated from before its wait (a lease over at once, the running job free to be
taken back by another worker).

Real waits: a forwarder cut and restored in front of the shared Postgres server
(never stopped), and the turn to write a SQLite file held by another (pretend) process.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import Job
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from tests.factories import new_job, token
from tests.pg_proxy import PgProxy
from tests.pg_support import fresh_schema, with_port

pytestmark = pytest.mark.timeout(60)

LEASE = 1.0  # shorter than the wait below: a lease dated from before it is over
WAIT = 2.0


def _claim_after_wait(store: JobStore, release: threading.Event) -> list[Job]:
    """Claim while the store is held up; `release` is set once it has waited WAIT."""
    got: list[Job] = []
    _after_wait(lambda: got.extend(store.claim(10, LEASE)), release)
    return got


def _extend_after_wait(store: JobStore, job: Job, release: threading.Event) -> list[Job]:
    """Extend `job`'s lease by LEASE while the store is held up; the job as it is then."""
    assert job.lease_token is not None
    extended: list[bool] = []
    _after_wait(lambda: extended.append(store.extend_lease(job.id, token(job), LEASE)), release)
    assert extended == [True]
    now = store.get(job.id)
    assert now is not None
    return [now]


def _after_wait(call: Callable[[], object], release: threading.Event) -> None:
    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(WAIT)  # the call is waiting now
    release.set()
    caller.join(30)
    assert not caller.is_alive()


def _assert_fresh_leases(store: JobStore, jobs: list[Job]) -> None:
    assert jobs, "the claim took nothing"
    now = store.clock.now()
    for job in jobs:
        assert job.lease_expires_at is not None and job.lease_expires_at > now, (
            f"lease {job.lease_expires_at} was over when handed out (now {now})"
        )


@pytest.mark.parametrize("call", ["claim", "extend_lease"])
def test_a_postgres_lease_written_after_a_wait_for_a_connection_runs_from_then(call: str) -> None:
    proxy = PgProxy()
    try:
        with fresh_schema() as direct:
            store = open_store(with_port(direct, proxy.port))
            try:
                store.add([new_job(SystemClock(), "echo")])
                claimed = store.claim(1, 60) if call == "extend_lease" else []
                proxy.cut()  # the pool's connection is gone; a new one is refused
                restored = threading.Event()

                def restore_when_set() -> None:
                    restored.wait(30)
                    proxy.restore()

                waiter = threading.Thread(target=restore_when_set)
                waiter.start()
                if claimed:
                    jobs = _extend_after_wait(store, claimed[0], restored)
                else:
                    jobs = _claim_after_wait(store, restored)
                waiter.join(30)
                _assert_fresh_leases(store, jobs)
            finally:
                store.close()
    finally:
        proxy.close()


@pytest.mark.parametrize("call", ["claim", "extend_lease"])
def test_a_sqlite_lease_written_after_a_wait_for_the_turn_runs_from_then(
    tmp_path: Path, call: str
) -> None:
    db = tmp_path / "spool.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.add([new_job(SystemClock(), "echo")])
        claimed = store.claim(1, 60) if call == "extend_lease" else []
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
        if claimed:
            jobs = _extend_after_wait(store, claimed[0], unlocked)
        else:
            jobs = _claim_after_wait(store, unlocked)
        opener.join(30)
        _assert_fresh_leases(store, jobs)
    finally:
        store.close()
