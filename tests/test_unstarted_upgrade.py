"""Stores made before claims could be unstarted (JobStore.start) keep working after an
upgrade: a SQLite file gets the column when opened, and a Postgres schema of
migration 0010 gets it from `spool db migrate` (0011). A job an earlier release
claimed counts as started: its lapsed lease spends the attempt, as it did then."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.storage.base import JobStore
from tests.factories import new_job, stored, token

LEASE = 30.0


def _unstarted_lapse_gives_back(store: JobStore, clock: FakeClock) -> None:
    [added] = store.add([new_job(clock, max_attempts=1)])
    [claimed] = store.claim(1, LEASE, ids=[added.job.id], started=False)
    clock.advance(LEASE + 1)
    [again] = store.claim(1, LEASE, ids=[added.job.id], started=False)
    assert again.attempts == 1
    assert store.start([(again.id, token(again))]) == [True]
    clock.advance(LEASE + 1)
    store.claim(1, LEASE, ids=[added.job.id])
    assert stored(store, claimed.id).state is JobState.DEAD


def test_an_old_sqlite_file_gets_the_mark_and_its_running_jobs_count_as_started(
    tmp_path: Path,
) -> None:
    from chalicelib.storage.sqlite import SQLiteStore

    clock = FakeClock()
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path, clock)
    [old] = store.add([new_job(clock, max_attempts=1)])
    store.claim(1, LEASE)  # as the previous release claimed
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER jobs_unstarted_cleared")  # a file from before the column
    db.execute("ALTER TABLE jobs DROP COLUMN unstarted")
    db.commit()
    db.close()
    store = SQLiteStore(path, clock)
    try:
        clock.advance(LEASE + 1)
        store.claim(1, LEASE, started=False)
        assert stored(store, old.job.id).state is JobState.DEAD  # its attempt was spent
        _unstarted_lapse_gives_back(store, clock)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_schema_of_0010_gets_the_mark_from_migrate() -> None:
    from chalicelib.errors import StoreNotMigrated
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    clock = FakeClock()
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 10)
            # A job the previous release claimed, as it left the row.
            conn.execute(
                "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts,"
                " max_attempts, run_at, created_at, updated_at, lease_token,"
                " lease_expires_at, started_at)"
                " VALUES ('old', 'default', 'echo', 'default', 0, '{}', 'running', 1, 1,"
                " %(now)s, %(now)s, %(now)s, 'tok', %(now)s, %(now)s)",
                {"now": clock.now()},
            )
        with pytest.raises(StoreNotMigrated):
            PostgresStore(settings, clock)
        with connect(settings) as conn:
            migrations.migrate(conn, settings.schema)
        store = PostgresStore(settings, clock)
        try:
            clock.advance(1)
            store.claim(1, LEASE, started=False)
            assert stored(store, "old").state is JobState.DEAD  # claimed before: started
            _unstarted_lapse_gives_back(store, clock)
        finally:
            store.close()
