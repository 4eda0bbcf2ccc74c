"""The Postgres enqueue counts its jobs in `enqueued_log` (migration 0010), a table it
only appends to, instead of upserting a `counters` row: no counter row is locked or
probed in the enqueue's transaction, and the rows are still written in it, so a crash
never counts a job that was not stored. Readers see counters + log in one snapshot;
the scrape's fold and each worker's beat move the log into `counters`."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import CounterKey
from tests import test_postgres_enqueue_counts
from tests.factories import new_job

pytestmark = pytest.mark.postgres

MAIL = CounterKey("mail", "echo", "enqueued")

# A store on a fresh schema and a connection of its own: the count tests' fixture.
pg = test_postgres_enqueue_counts.pg


def _enqueue_rows(conn: Any) -> tuple[int, int]:
    """`enqueued` counted in counters rows, and in the log not yet folded."""
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(n), 0) FROM counters WHERE event = 'enqueued'),"
        " (SELECT coalesce(sum(n), 0) FROM enqueued_log)"
    ).fetchone()
    return int(row[0]), int(row[1])


def _enqueue_some(store: Any) -> None:
    clock = store.clock
    store.add([new_job(clock, queue="mail")])
    store.add([new_job(clock, queue="mail") for _ in range(4)])
    store.add([new_job(clock, queue="mail", idempotency_key="k")])
    store.add([new_job(clock, queue="mail", idempotency_key="k")])  # repeated: no job
    store.add([new_job(clock, queue="mail", idempotency_key="k"), new_job(clock, queue="mail")])


def test_an_enqueue_appends_to_the_log_and_locks_no_counter_row(pg: tuple[Any, Any]) -> None:
    store, conn = pg
    _enqueue_some(store)
    assert _enqueue_rows(conn) == (0, 7)
    assert store.counters()[MAIL] == 7


def test_the_scrape_folds_the_log_into_the_counters(pg: tuple[Any, Any]) -> None:
    store, conn = pg
    _enqueue_some(store)
    totals = store.queue_totals(["mail"], 10)
    assert totals.counters[MAIL] == 7
    assert _enqueue_rows(conn) == (7, 0)
    store.add([new_job(store.clock, queue="mail")])
    assert store.counters()[MAIL] == 8
    assert store.queue_totals(["mail"], 10).counters[MAIL] == 8
    assert _enqueue_rows(conn) == (8, 0)


def test_a_worker_beat_folds_the_log(pg: tuple[Any, Any]) -> None:
    """Without scrapes the log would grow by a row a job for good: each worker's beat
    folds it too."""
    store, conn = pg
    _enqueue_some(store)
    store.beat("w1", None, store.clock.now())
    assert _enqueue_rows(conn) == (7, 0)
    assert store.counters()[MAIL] == 7


def test_an_upgrade_to_0010_keeps_the_counters() -> None:
    """Rows an earlier release wrote stay counted, and an earlier release's enqueue
    (which upserts counters itself) still counts after the upgrade."""
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import UPSERT_COUNTERS, PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    clock = FakeClock()
    earlier = UPSERT_COUNTERS.format(
        source="(VALUES ('mail', 'echo', 'enqueued')) AS e (queue, type, event)"
    )
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 9)
            conn.execute(earlier, {"shard": 3})
            conn.execute(earlier, {"shard": 5})
            ran = [m.version for m in migrations.migrate(conn, settings.schema)]
            assert ran == list(range(10, migrations.latest_version() + 1))
            store = PostgresStore(settings, clock)
            try:
                assert store.counters()[MAIL] == 2
                store.add([new_job(clock, queue="mail") for _ in range(2)])
                conn.execute(earlier, {"shard": 3})  # a process of the earlier release
                assert store.counters()[MAIL] == 5
                assert store.queue_totals(["mail"], 10).counters[MAIL] == 5
                assert _enqueue_rows(conn) == (5, 0)
            finally:
                store.close()


def test_two_folds_at_once_count_each_enqueue_once(pg: tuple[Any, Any]) -> None:
    """A fold that meets log rows another fold is deleting waits for it, then finds
    them gone: the jobs are counted by the first fold only."""
    from chalicelib.storage.postgres import FOLD_ENQUEUED_SQL, connect
    from tests.pg_support import wait_until_blocked_by

    store, conn = pg
    _enqueue_some(store)
    with connect(store.settings) as other, connect(store.settings) as watcher:
        with conn.transaction():
            conn.execute(FOLD_ENQUEUED_SQL)
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            second = threading.Thread(target=other.execute, args=(FOLD_ENQUEUED_SQL,))
            second.start()
            wait_until_blocked_by(watcher, pid)
        second.join(20)
        assert not second.is_alive()
    assert _enqueue_rows(conn) == (7, 0)
    assert store.counters()[MAIL] == 7
