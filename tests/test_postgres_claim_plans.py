"""The plain claim and the start marks on Postgres find their rows the cheap way,
whatever the planner believes about the jobs table (stop 54).

A no-op drain of 10,000 jobs ran at ~2,000 jobs/s on Postgres, slower than the same
drain under a policy. Three plans were the cause, each asserted here by its shape (a
plan, not a time): the plain claim sorted the whole backlog until the table was next
analyzed (the claim under a policy analyzed it first: postgres_limits.refresh_statistics),
its UPDATE hashed the picked ids and scanned the whole table for them, and a start mark,
with statistics taken before the jobs were claimed, scanned every running job through
the partial index jobs_leases for its few ids. The marks are the drain's critical path.
The finish and the lease extension had the third plan's shape too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, Job, JobState, NewJob
from chalicelib.storage import postgres
from chalicelib.storage.postgres import PostgresStore, from_url
from tests.pg_support import fresh_schema

pytestmark = pytest.mark.postgres

BACKLOG = 3000


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    with fresh_schema() as url:
        opened = from_url(url, FakeClock())
        try:
            yield opened
        finally:
            opened.close()


def _backlog(store: PostgresStore, n: int = BACKLOG) -> None:
    due = store.clock.now() - timedelta(seconds=1)
    for start in range(0, n, 1000):
        jobs = [
            NewJob(id=f"j_{i:06d}", type="t", payload={}, run_at=due, tenant="a")
            for i in range(start, min(n, start + 1000))
        ]
        store.add(jobs)


def _reltuples(store: PostgresStore) -> float:
    def read(conn: Any) -> float:
        row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass").fetchone()
        return float(row[0])

    return store._run(read)


def _plan(store: PostgresStore, sql: str, params: dict[str, Any]) -> str:
    """EXPLAIN ANALYZE of one statement, as the store sends it, rolled back."""

    def explain(conn: Any) -> str:
        conn.execute("BEGIN")
        try:
            rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params).fetchall()
        finally:
            conn.execute("ROLLBACK")
        return "\n".join(r[0] for r in rows)

    return store._run(explain)


def test_a_plain_claim_refreshes_stale_planner_statistics(store: PostgresStore) -> None:
    """As a claim under a policy does: without it, every claim of a burst read and
    sorted the whole backlog until autovacuum's next analyze."""
    _backlog(store)
    assert _reltuples(store) < BACKLOG / 2  # nothing has analyzed the burst yet
    assert len(store.claim(5, 30, started=False)) == 5
    assert _reltuples(store) >= BACKLOG / 2


def test_a_plain_claim_walks_the_due_index_and_updates_by_primary_key(
    store: PostgresStore,
) -> None:
    _backlog(store)
    store.claim(5, 30)  # analyzes the burst (above)
    now = store.clock.now()
    params = {
        "now": now,
        "unstarted": True,
        "limit": 55,
        "token": "t",
        "expires": now + timedelta(seconds=30),
        "late": 0,
        "worker": "w",
    }
    plan = _plan(store, postgres.CLAIM_SQL.format(filters=""), params)
    assert "Index Scan using jobs_due" in plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
    assert "Index Scan using jobs_pkey on jobs j" in plan, plan


def test_a_start_mark_finds_its_jobs_by_primary_key_beside_many_running(
    store: PostgresStore,
) -> None:
    """Statistics taken before the claims (the claim's own analyze of the burst) say
    almost nothing runs; the marks must not scan the running jobs for their ids."""
    _backlog(store)
    running: list[Job] = []
    while len(running) < 2000:
        running += store.claim(100, 300, started=False)
    leases = running[1000:1005]
    params = {
        "ids": [j.id for j in leases],
        "tokens": [j.lease_token for j in leases],
        "now": store.clock.now(),
    }
    for sql in (postgres.START_FAST_SQL, postgres.START_SQL):  # durability normal, full
        plan = _plan(store, sql, params)
        assert "jobs_leases" not in plan, plan
        assert "Index Scan using jobs_pkey on jobs j" in plan, plan
    assert store.start([(j.id, j.lease_token or "") for j in leases]) == [True] * 5


def test_a_start_mark_commits_without_waiting_for_the_flush(store: PostgresStore) -> None:
    """As durable as a claim (SYNC_OFF): the one statement turns the wait off for its
    own transaction, and for that transaction only."""
    _backlog(store, 2)
    (job,) = store.claim(1, 300, started=False)
    params = {"ids": [job.id], "tokens": [job.lease_token], "now": store.clock.now()}

    def mark(conn: Any) -> tuple[Any, ...]:
        before = conn.execute("SHOW synchronous_commit").fetchone()[0]
        conn.execute("BEGIN")
        try:
            rows = conn.execute(postgres.START_FAST_SQL, params).fetchall()
            inside = conn.execute("SHOW synchronous_commit").fetchone()[0]
        finally:
            conn.execute("ROLLBACK")
        after = conn.execute("SHOW synchronous_commit").fetchone()[0]
        return rows, inside, after == before

    rows, inside, unchanged = store._run(mark)
    assert rows == [(job.id, "running")]
    assert inside == "off" and unchanged


def test_a_start_mark_refuses_a_job_moved_out_of_running_by_hand(store: PostgresStore) -> None:
    """The mark reads `running` from the row it wrote, not from its WHERE (START_SQL):
    a job another writer moved on without clearing its lease is still refused."""
    _backlog(store, 3)
    a, b, c = store.claim(3, 300, started=False)

    def by_hand(conn: Any) -> None:
        conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = %s", (b.id,))

    store._run(by_hand)
    marks = [(j.id, j.lease_token or "") for j in (a, b, c)]
    assert store.start(marks) == [True, False, True]
    after = store.get(b.id)
    assert after is not None and after.state.value == "cancelled"


def _running(store: PostgresStore, n: int = 2000) -> list[Job]:
    _backlog(store)
    running: list[Job] = []
    while len(running) < n:
        running += store.claim(100, 300, started=False)
    return running


def test_a_finish_and_a_lease_extension_find_their_jobs_by_primary_key(
    store: PostgresStore,
) -> None:
    """Their `running` guard stays in the WHERE (a finish moves the job, an extension
    writes its lease), as a join clause the partial index's predicate does not follow
    from: with the statistics as above, both scanned every running job."""
    leases = _running(store)[1000:1020]
    now = store.clock.now()
    ids, tokens = [j.id for j in leases], [j.lease_token for j in leases]
    extend = {"ids": ids, "tokens": tokens, "now": now, "late": 0}
    extend["expires"] = now + timedelta(seconds=300)
    finish = {
        "now": now,
        "ids": ids,
        "tokens": tokens,
        "states": ["succeeded"] * 20,
        "results": [None] * 20,
        "errors": [None] * 20,
        "retry_ats": [None] * 20,
        "attempts": [None] * 20,
        "keep": 25,
        "hooks_kept": 25,
        "shard": 0,
    }
    for sql, params in ((postgres.EXTEND_SQL, extend), (postgres.FINISH_SQL, finish)):
        plan = _plan(store, sql, params)
        assert "jobs_leases" not in plan, plan
        assert "Index Scan using jobs_pkey on jobs j" in plan, plan


def test_a_finish_and_an_extension_refuse_a_job_moved_out_of_running_by_hand(
    store: PostgresStore,
) -> None:
    _backlog(store, 2)
    a, b = store.claim(2, 300)

    def by_hand(conn: Any) -> None:
        conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = %s", (b.id,))

    store._run(by_hand)
    leases = [(j.id, j.lease_token or "") for j in (a, b)]
    assert store.extend_leases(leases, 300) == [True, False]
    done = [Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in (a, b)]
    assert store.finish(done) == [True, False]
    after = store.get(b.id)
    assert after is not None and after.state is JobState.CANCELLED
