"""A claim under a policy on Postgres sends its lock, reap and reads in one round trip
before it knows it holds the limits' lock (postgres_limits.try_lock), and its
transaction in one pipeline (pg_pipeline.pipelined_transaction).

What was sent before the lock was known must not act without it: a claim that then
waits for the lock holds no job and no counter meanwhile (the reap and the first read
are gated on the lock), so a claim without a policy goes on taking and reaping jobs
as it did while the waiting claim queued for the lock alone. And a pipelined
transaction that fails leaves nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.models import Job, JobState, NewJob
from chalicelib.storage.pg_pipeline import pipelined_transaction
from chalicelib.storage.postgres import PostgresStore, connect, from_url, parse_url
from chalicelib.storage.postgres_limits import LOCK_SPACE, locked, try_lock
from tests.pg_support import admin_connect, fresh_schema, wait_until_blocked_by

pytestmark = pytest.mark.postgres

POLICIES = {
    "fair": ClaimPolicy(fair=True),
    "limits": ClaimPolicy((Limit("type", "other", concurrency=1),)),
    "both": ClaimPolicy((Limit("queue", "default", concurrency=5),), fair=True),
}


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as migrated:
        yield migrated


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_claim_waiting_for_the_lock_holds_no_job_and_reaps_nothing(url: str, name: str) -> None:
    clock = FakeClock()
    store: PostgresStore = from_url(url, clock)
    holder = admin_connect()
    watcher = admin_connect()
    lock_args = (LOCK_SPACE, parse_url(url).schema)
    try:
        due = clock.now() - timedelta(seconds=1)
        store.add([NewJob(id="j_late", type="r", payload={}, run_at=due, tenant="t1")])
        (late,) = store.claim(1, 1)  # its lease runs out below, unfinished
        store.add([NewJob(id="j_due", type="r", payload={}, run_at=due, tenant="t2")])
        clock.advance(5)
        holder.execute("SELECT pg_advisory_lock(%s::int, hashtext(%s::text))", lock_args)
        got: list[Job] = []
        claiming = threading.Thread(
            target=lambda: got.extend(store.claim(5, 30, policy=POLICIES[name]))
        )
        claiming.start()
        wait_until_blocked_by(watcher, holder.info.backend_pid)  # it waits for the lock
        # Meanwhile a claim without a policy reaps the expired lease and takes both jobs:
        # the waiting claim locked neither (nor a counter the reap and the claim move).
        taken = store.claim(5, 30)
        assert sorted(j.id for j in taken) == ["j_due", "j_late"]
        assert all(j.state is JobState.RUNNING for j in taken)
        assert next(j for j in taken if j.id == "j_late").attempts == late.attempts + 1
        holder.execute("SELECT pg_advisory_unlock(%s::int, hashtext(%s::text))", lock_args)
        claiming.join(20)
        assert not claiming.is_alive()
        assert got == []  # nothing was left for it
    finally:
        holder.close()
        watcher.close()
        store.close()


def test_a_pipelined_transaction_that_fails_leaves_nothing(url: str) -> None:
    conn = connect(parse_url(url))
    try:
        with pytest.raises(psycopg.errors.DivisionByZero), pipelined_transaction(conn):
            conn.execute("INSERT INTO fair_passes (tenant, pass) VALUES ('a', 1)")
            conn.execute("SELECT 1 / 0").fetchone()
        with pytest.raises(RuntimeError), pipelined_transaction(conn):
            conn.execute("INSERT INTO fair_passes (tenant, pass) VALUES ('b', 1)")
            raise RuntimeError("the block gave up")
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pipelined_transaction(conn):
            conn.execute("INSERT INTO fair_passes (tenant, pass) VALUES ('c', 1)")
        rows = conn.execute("SELECT tenant FROM fair_passes ORDER BY tenant").fetchall()
        assert rows == [("c",)]
    finally:
        conn.close()


@pytest.mark.parametrize("sync_off", [True, False])
def test_the_try_lock_turns_the_commits_wait_off_for_its_transaction_only(
    url: str, sync_off: bool
) -> None:
    conn = connect(parse_url(url))
    try:
        with pipelined_transaction(conn):
            taken = try_lock(conn, parse_url(url).schema, sync_off=sync_off)
            assert locked(taken)
            row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row == (("off",) if sync_off else ("on",))
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        conn.close()
