"""Stores made before the dashboard get its counts right on upgrade: a SQLite file
opened by this Spool, a Postgres schema migrated from 0003 to 0004 with jobs in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.storage.sqlite_dashboard import DDL
from tests.factories import new_job, token


def test_an_old_sqlite_file_is_counted_once_when_opened(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path, clock)
    store.add([new_job(clock, tenant="a", queue="mail") for _ in range(3)])
    [job] = store.claim(1, 30)
    store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
    store.close()
    # What a file from before the dashboard looks like: no triggers, tables or indexes.
    db = sqlite3.connect(path)
    for statement in DDL:
        kind = statement.split()[1]
        if kind in ("TABLE", "TRIGGER", "INDEX"):
            name = statement.split("IF NOT EXISTS ")[1].split()[0]
            db.execute(f"DROP {kind} {name}")
    db.commit()
    db.close()
    reopened = SQLiteStore(path, clock)
    assert reopened.state_counts("a") == {
        ("mail", JobState.QUEUED): 2,
        ("mail", JobState.SUCCEEDED): 1,
    }
    reopened.close()
    again = SQLiteStore(path, clock)  # a second open counts nothing twice
    again.add([new_job(clock, tenant="a", queue="mail")])
    assert again.state_counts("a")[("mail", JobState.QUEUED)] == 3
    again.close()


@pytest.mark.postgres
def test_postgres_0004_counts_the_jobs_already_there() -> None:
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    clock = FakeClock()
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 3)
            for i, state in enumerate(["queued", "queued", "dead", "succeeded"]):
                conn.execute(
                    "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state,"
                    " max_attempts, run_at, created_at, updated_at) VALUES"
                    " (%s, 'a', 'echo', 'mail', 0, '{}', %s, 3, now(), now(), now())",
                    (f"j_{i:032x}", state),
                )
            migrations.migrate(conn, settings.schema)
        store = PostgresStore(settings, clock)
        try:
            assert store.state_counts("a") == {
                ("mail", JobState.QUEUED): 2,
                ("mail", JobState.DEAD): 1,
                ("mail", JobState.SUCCEEDED): 1,
            }
            store.add([new_job(clock, tenant="a", queue="mail")])
            assert store.state_counts("a")[("mail", JobState.QUEUED)] == 3
        finally:
            store.close()
