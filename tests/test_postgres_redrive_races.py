"""Redrives racing each other (and anything else holding dead jobs' rows) on Postgres.

Found by a race hunt (two server processes, workers killed, clients cancelling and
redriving the same jobs at once): two bulk redrives of overlapping dead
jobs deadlocked and one answered 503 ("may have been applied") after Postgres's
deadlock_timeout, although a deadlock rolls back whole and is meant to be retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors as pg_errors

from chalicelib.errors import StoreUnavailable
from chalicelib.models import NewJob
from chalicelib.storage.postgres import PostgresStore, from_url, parse_url
from tests.pg_support import admin_connect, fresh_schema, wait_until_blocked_by

pytestmark = pytest.mark.postgres


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as migrated:
        yield migrated


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = from_url(url)
    yield opened
    opened.close()


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    conn: psycopg.Connection[tuple[object, ...]] = admin_connect()
    conn.execute(f'SET search_path TO "{parse_url(url).schema}"')
    return conn


def test_a_redrive_beside_another_holder_of_the_same_dead_jobs_does_not_fail(
    store: PostgresStore, url: str
) -> None:
    # Stored in descending id order, so a scan of the table meets them largest id first.
    ids = sorted((f"j_{n:032x}" for n in range(1, 1201)), reverse=True)
    now = store.clock.now()
    store.add([NewJob(id=i, type="echo", payload={}, run_at=now) for i in ids])
    admin = _connect(url)
    admin.execute("UPDATE jobs SET state = 'dead', finished_at = now(), updated_at = now()")
    smallest, largest = ids[-1], ids[0]

    # Another writer (a second redrive, a discard) holds the smallest id's row ...
    other = _connect(url)
    other.autocommit = False
    other.execute("SET lock_timeout = '20s'")
    other.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (smallest,))

    outcome: dict[str, object] = {}

    def redrive_all() -> None:
        try:
            outcome["moved"] = len(store.redrive(ids))
        except Exception as exc:  # the assertion below names it
            outcome["error"] = exc

    thread = threading.Thread(target=redrive_all)
    thread.start()
    wait_until_blocked_by(admin, other.info.backend_pid)  # ... until the redrive waits for it
    # ... then wants another of those rows: the redrive must not be holding it.
    try:
        other.execute("UPDATE jobs SET updated_at = updated_at WHERE id = %s", (largest,))
        other.commit()
        other_error = None
    except pg_errors.DeadlockDetected as exc:
        other.rollback()
        other_error = exc
    thread.join(30)
    other.close()
    admin.close()
    assert not thread.is_alive()
    assert other_error is None and "error" not in outcome, (other_error, outcome.get("error"))
    assert outcome["moved"] == len(ids)


def test_a_deadlock_or_serialization_failure_is_retried(store: PostgresStore) -> None:
    # Postgres rolled the transaction back whole: running it again is safe, and the
    # caller must not get a 503 saying the write "may have been applied".
    for error in (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
        calls: list[object] = []

        def write(conn: object, error: type[Exception] = error, calls: list[object] = calls) -> str:
            calls.append(conn)
            if len(calls) == 1:
                raise error("rolled back")
            return "done"

        assert store._run(write) == "done"
        assert len(calls) == 2


def test_a_write_rolled_back_every_time_is_a_503_that_says_nothing_applied(
    store: PostgresStore,
) -> None:
    def write(conn: object) -> str:
        raise pg_errors.DeadlockDetected("rolled back")

    with pytest.raises(StoreUnavailable, match="nothing was applied") as caught:
        store._run(write)
    assert caught.value.retry_after == 1
