"""A SQLite file made before the claim broke exact ties by id gets its claim indexes
made again with the id on open (sqlite_limits.DUE_INDEX), and claims in id order
without sorting the waiting jobs (the contract suite checks the order itself:
tests/contract/test_store_agreement.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy
from chalicelib.storage import sqlite_limits
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job


def _columns(db: sqlite3.Connection, index: str) -> list[str]:
    return [row[2] for row in db.execute(f"PRAGMA index_info({index})")]


def test_a_file_made_before_gets_its_claim_indexes_with_the_id(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "spool.db")
    store = SQLiteStore(path, clock)
    store.add([new_job(clock, tenant="a")])
    store.claim(1, 30, policy=ClaimPolicy(fair=True))  # makes jobs_fair
    store.close()
    db = sqlite3.connect(path, isolation_level=None)  # as stops up to 44 made them
    db.execute("DROP INDEX jobs_due")
    db.execute("DROP INDEX jobs_fair")
    waiting = "WHERE state IN ('queued', 'retrying')"
    db.execute(f"CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at) {waiting}")
    db.execute(
        f"CREATE INDEX jobs_fair ON jobs (tenant, priority DESC, run_at, created_at) {waiting}"
    )
    db.close()
    # Added one at a time in descending id order: insertion order is not id order.
    later = sorted((new_job(clock, tenant="a") for _ in range(3)), key=lambda j: j.id)
    store = SQLiteStore(path, clock)
    try:
        for job in reversed(later):
            store.add([job])
        db = store._db()
        assert sqlite_limits.tie_blind_indexes(db) == []
        assert _columns(db, "jobs_due") == ["priority", "run_at", "created_at", "id"]
        assert _columns(db, "jobs_fair") == []  # made again by the next fair claim
        [claimed] = store.claim(1, 30, policy=ClaimPolicy(fair=True))
        assert _columns(db, "jobs_fair") == ["tenant", "priority", "run_at", "created_at", "id"]
        assert claimed.id == later[0].id
        assert [j.id for j in store.claim(2, 30)] == [later[1].id, later[2].id]
    finally:
        store.close()


def test_the_claim_walks_jobs_due_in_order_without_a_sort(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "spool.db"), FakeClock())
    try:
        plan = " | ".join(
            row[-1]
            for row in store._db().execute(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state IN ('queued', 'retrying')"
                f" AND run_at <= 0 {sqlite_limits.ORDER} LIMIT 5"
            )
        )
        assert "USING INDEX jobs_due" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.close()
