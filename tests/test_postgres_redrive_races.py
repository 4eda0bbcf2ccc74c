"""Redrives racing each other (and anything else holding dead jobs' rows) on Postgres.

Found by a race hunt (two server processes, workers killed, clients cancelling and
redriving the same jobs at once): two bulk redrives of overlapping dead
jobs deadlocked and one answered 503 ("may have been applied") after Postgres's
deadlock_timeout, although a deadlock rolls back whole and is meant to be retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

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


def test_batches_sharing_keys_in_other_orders_do_not_deadlock(
    store: PostgresStore, url: str
) -> None:
    """Found by a race hunt: batches of the same keyed jobs sent in shuffled orders
    deadlocked on the unique key index (each had inserted a key the other waited for),
    and under load most answered 503 after half a minute of retries. Here another
    writer holds the first key (in key order) uncommitted; the batch, sent in reverse
    order, must wait on that key before inserting any other, so the writer's insert of
    the last key does not wait on the batch."""
    keys = [f"k{n:03d}" for n in range(100)]
    now = store.clock.now()
    batch = [
        NewJob(id=f"j_{n + 1:032x}", type="echo", payload={}, run_at=now, idempotency_key=key)
        for n, key in reversed(list(enumerate(keys)))
    ]
    admin = _connect(url)
    other = _connect(url)
    other.autocommit = False
    other.execute("SET lock_timeout = '20s'")
    insert = (
        "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, max_attempts,"
        " run_at, idempotency_key, created_at, updated_at)"
        " VALUES (%s, 'default', 'echo', 'default', 0, '{}', 'queued', 3, now(), %s, now(), now())"
    )
    other.execute(insert, ("j_" + "f" * 32, keys[0]))

    outcome: dict[str, object] = {}
    tries = []
    getconn = store._pool.getconn  # _run takes one connection per try

    def counted(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)  # a deadlock rolls the add back whole, and _run tries it again
        return getconn(*args, **kwargs)

    store._pool.getconn = counted  # type: ignore[method-assign]

    def add_batch() -> None:
        try:
            outcome["results"] = store.add(batch)
        except Exception as exc:  # the assertion below names it
            outcome["error"] = exc

    thread = threading.Thread(target=add_batch)
    thread.start()
    wait_until_blocked_by(admin, other.info.backend_pid)
    try:
        other.execute(insert, ("j_" + "e" * 32, keys[-1]))
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
    assert len(tries) == 1  # one transaction: it waited, never deadlocked
    results = outcome["results"]
    assert isinstance(results, list) and len(results) == len(keys)
    # The two keys the other writer stored answer with its jobs; the rest are new.
    taken = {r.job.idempotency_key: r.job.id for r in results if not r.created}
    assert taken == {keys[0]: "j_" + "f" * 32, keys[-1]: "j_" + "e" * 32}
