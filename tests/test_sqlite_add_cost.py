"""The SQLite store's per-state counts, made cheaper for every add (stop 40).

The counts delete a row at zero in the trigger that decremented it, not in a trigger
on `job_counts` that ran on every increment: counts stay exact, no row is kept at
zero, and a file made by the old code gets the new triggers on open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job, token
from tests.sqlite_stop39 import OLD_EMPTIED_TRIGGER, old_count_triggers, triggers

LEASE = 30.0
NEW_COUNT_TRIGGERS = {"jobs_count_insert", "jobs_count_moved", "jobs_count_removed"}


def _counts_match_the_jobs(store: SQLiteStore) -> None:
    """job_counts holds exactly the jobs' (tenant, queue, state) tallies, no zero rows."""
    db = store._db()
    truth = {
        (t, q, s): n
        for t, q, s, n in db.execute(
            "SELECT tenant, queue, state, COUNT(*) FROM jobs GROUP BY tenant, queue, state"
        )
    }
    kept = {(t, q, s): n for t, q, s, n in db.execute("SELECT * FROM job_counts")}
    assert kept == truth


def _ids(store: SQLiteStore, state: str) -> list[str]:
    rows = store._db().execute("SELECT id FROM jobs WHERE state = ? ORDER BY id", (state,))
    return [row[0] for row in rows]


def _lifecycle(store: SQLiteStore, clock: FakeClock) -> None:
    """Every path that moves a count: add, claim, finish (done, retry, dead), cancel,
    redrive, discard and purge, the counts checked after each."""
    store.add([new_job(clock, tenant=t, queue=q) for t in ("a", "b") for q in ("x", "y")])
    _counts_match_the_jobs(store)
    claimed = store.claim(3, LEASE)
    _counts_match_the_jobs(store)
    outcomes = (JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD)
    store.finish(
        [
            Completion(
                job.id,
                token(job),
                state,
                retry_at=clock.now() if state is JobState.RETRYING else None,
            )
            for job, state in zip(claimed, outcomes, strict=True)
        ]
    )
    _counts_match_the_jobs(store)
    store.cancel(_ids(store, "queued")[0])
    _counts_match_the_jobs(store)
    store.redrive(_ids(store, "dead"))
    _counts_match_the_jobs(store)
    again = store.claim(10, LEASE)
    store.finish([Completion(j.id, token(j), JobState.DEAD) for j in again])
    _counts_match_the_jobs(store)
    store.discard([j.id for j in again[:1]])
    _counts_match_the_jobs(store)
    clock.advance(3600)
    store.purge(clock.now())
    _counts_match_the_jobs(store)
    store.add([new_job(clock, tenant="a", queue="x")])
    _counts_match_the_jobs(store)


def test_no_trigger_runs_on_job_counts_and_counts_stay_exact(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    try:
        db = store._db()
        on_counts = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'job_counts'"
        ).fetchall()
        assert on_counts == []  # an add's increment runs no second trigger program
        assert triggers(db) >= NEW_COUNT_TRIGGERS
        _lifecycle(store, clock)
    finally:
        store.close()


def test_a_file_made_by_the_old_code_gets_the_new_count_triggers(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "spool.db")
    store = SQLiteStore(path, clock)
    store.add([new_job(clock, tenant="a", queue="x") for _ in range(3)])
    [job] = store.claim(1, LEASE)
    store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
    store.close()
    old_count_triggers(path)  # as stops 36-39 left it

    store = SQLiteStore(path, clock)
    try:
        names = triggers(store._db())
        assert names >= NEW_COUNT_TRIGGERS
        assert not names & {"jobs_count_update", "jobs_count_delete", "job_counts_emptied"}
        assert store.state_counts("a") == {
            ("x", JobState.QUEUED): 2,
            ("x", JobState.SUCCEEDED): 1,
        }
        _lifecycle(store, clock)
    finally:
        store.close()


def test_an_older_spool_opening_the_file_again_keeps_counts_right(tmp_path: Path) -> None:
    """The old code's install puts its job_counts_emptied back beside the new triggers
    (it looks for that trigger by name) while this Spool's processes keep writing:
    counts stay exact, and this Spool's next open takes it out again."""
    clock = FakeClock()
    path = str(tmp_path / "spool.db")
    store = SQLiteStore(path, clock)
    try:
        older = sqlite3.connect(path, isolation_level=None)
        older.execute(OLD_EMPTIED_TRIGGER)
        older.close()
        assert "job_counts_emptied" in triggers(store._db())
        _lifecycle(store, clock)
    finally:
        store.close()
    reopened = SQLiteStore(path, clock)
    try:
        assert "job_counts_emptied" not in triggers(reopened._db())
        _counts_match_the_jobs(reopened)
    finally:
        reopened.close()
