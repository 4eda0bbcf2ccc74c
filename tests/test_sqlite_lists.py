"""A tenant's list on SQLite walks one state's index per state and merges (stop 40).

The add no longer writes an index on (tenant, created_at, id): the lists it served
(every state of one tenant) are a merge of the walks of `jobs_by_state`. These tests
pin that every walk is an index walk in list order (no sort of the tenant's jobs),
that the merged pages are exactly the jobs in (created_at, id) order in both
directions across cursors, and that a file made before loses the old index on open.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.storage import sqlite_lists
from chalicelib.storage.base import encode_cursor
from chalicelib.storage.sqlite import COLUMNS, SQLiteStore
from tests.factories import new_job, token


def _plan(db: sqlite3.Connection, sql: str, params: list[object]) -> str:
    rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 11]).fetchall()
    return " | ".join(row[-1] for row in rows)


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("cursor", [None, datetime(2030, 1, 1, tzinfo=UTC)])
@pytest.mark.parametrize("state", [None, *JobState])
def test_every_walk_of_a_tenant_list_is_an_index_walk_in_order(
    tmp_path: Path, newest_first: bool, cursor: datetime | None, state: JobState | None
) -> None:
    store = SQLiteStore(str(tmp_path / "spool.db"), FakeClock())
    # A cursor of the list's own order (one of the other is refused before any SQL).
    given = None if cursor is None else encode_cursor(cursor, "j_01", newest_first)
    try:
        query = JobQuery(tenant="a", limit=10, cursor=given, newest_first=newest_first)
        for walk in [state] if state is not None else list(JobState):
            sql, params = sqlite_lists.select(COLUMNS, query, walk)
            plan = _plan(store._db(), sql, params)
            assert "USING INDEX jobs_by_state (tenant=? AND state=?" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


def _reference(store: SQLiteStore, tenant: str, newest_first: bool) -> list[str]:
    order = " DESC" if newest_first else ""
    rows = store._db().execute(
        f"SELECT id FROM jobs WHERE tenant = ? ORDER BY created_at{order}, id{order}", (tenant,)
    )
    return [row[0] for row in rows]


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("limit", [1, 3, 7, 100])
def test_a_tenant_list_of_every_state_pages_through_the_jobs_in_order(
    tmp_path: Path, newest_first: bool, limit: int
) -> None:
    clock = FakeClock()
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    try:
        for round_ in range(4):
            # Several jobs share each created_at: the id breaks the tie, across states.
            store.add([new_job(clock, tenant=t) for t in ("a", "a", "a", "b") for _ in (0, 1)])
            claimed = store.claim(4, 30)
            # Ids are random and fair turns mix tenants, so which tenant a claimed job
            # belongs to is chance: six of the eight are a's, so at least two of the four
            # are. One of them stays running; the rest finish, an a first, whose state
            # alternates by round so that tenant a has both a success and a death.
            mine = [j for j in claimed if j.tenant == "a"]
            assert len(mine) >= 2, claimed
            rest = sorted((j for j in claimed if j is not mine[0]), key=lambda j: j.tenant != "a")
            first = JobState.DEAD if round_ % 2 else JobState.SUCCEEDED
            states = (first, JobState.SUCCEEDED, JobState.DEAD)
            store.finish([Completion(j.id, token(j), s) for j, s in zip(rest, states, strict=True)])
            if round_ % 2:
                clock.advance(1)
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_jobs(
                JobQuery(tenant="a", limit=limit, cursor=cursor, newest_first=newest_first)
            )
            assert all(job.tenant == "a" for job in page.jobs)
            seen.extend(job.id for job in page.jobs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == _reference(store, "a", newest_first)
        assert {job.state for job in store.list_jobs(JobQuery(tenant="a")).jobs} >= {
            JobState.QUEUED,
            JobState.RUNNING,
            JobState.SUCCEEDED,
            JobState.DEAD,
        }
    finally:
        store.close()


def test_a_file_made_before_loses_the_index_the_add_no_longer_writes(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "spool.db")
    store = SQLiteStore(path, clock)
    store.add([new_job(clock, tenant="a") for _ in range(3)])
    store.close()
    db = sqlite3.connect(path, isolation_level=None)  # as stops up to 39 made every file
    db.execute("CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at, id)")
    db.close()
    store = SQLiteStore(path, clock)
    try:
        assert not sqlite_lists.has_retired(store._db())
        assert len(store.list_jobs(JobQuery(tenant="a")).jobs) == 3
    finally:
        store.close()


def test_a_job_that_changes_state_between_walks_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each state's walk is a statement of its own. Read outside a transaction, a job a
    worker claimed and finished between two walks was in the queued walk and again in
    the succeeded one: `GET /jobs` listed 3 or 4 jobs where 2 existed (seen in
    tests/test_server_abuse.py, with the emulator running the jobs it listed)."""
    clock = FakeClock()
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    worker = SQLiteStore(str(tmp_path / "spool.db"), clock)  # another connection
    try:
        [added] = store.add([new_job(clock, tenant="a")])
        walked: list[JobState | None] = []
        rows = sqlite_lists._rows

        def walk(db: sqlite3.Connection, columns: str, query: JobQuery, state, limit, until=None):
            walked.append(state)
            if state is JobState.QUEUED:  # the worker runs the job right after this walk
                found = rows(db, columns, query, state, limit, until)
                [claimed] = worker.claim(1, 30)
                done = Completion(claimed.id, token(claimed), JobState.SUCCEEDED)
                assert worker.finish([done]) == [True]
                return found
            return rows(db, columns, query, state, limit, until)

        monkeypatch.setattr(sqlite_lists, "_rows", walk)
        page = store.list_jobs(JobQuery(tenant="a", limit=10))
        assert JobState.QUEUED in walked and JobState.SUCCEEDED in walked
        assert [job.id for job in page.jobs] == [added.job.id]
    finally:
        worker.close()
        store.close()
