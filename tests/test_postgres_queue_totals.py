"""Postgres: a scrape's work does not grow with the queue names ever used.

The ranking and the sums run in the server (JobStore.queue_totals, migration 0008's
summaries), so two things are counted, never timed: the rows every store call of
one scrape handed back to Python (through the store's own `_run`), and the rows the
server itself read for it (its statistics: tuples read by sequential scans and
index entries read, in every table and index of the schema), which is what grew
with every name ever used while the rows handed back did not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import OTHER_QUEUE, JobState
from chalicelib.storage.postgres import PostgresStore, from_url
from chalicelib.storage.queue_totals import fold
from tests.factories import new_job, token
from tests.pg_support import admin_connect, fresh_schema


@pytest.fixture
def store(clock: FakeClock) -> Iterator[PostgresStore]:
    with fresh_schema() as url:
        opened = from_url(url, clock)
        yield opened
        opened.close()


def rows_received(store: PostgresStore, call: Callable[[], Any]) -> int:
    """How many rows the store's calls handed back to Python during `call()`."""
    received = [0]
    run = store._run

    def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        out = run(fn, *args, **kwargs)
        if isinstance(out, list):
            received[0] += len(out)
        return out

    store._run = counted  # type: ignore[method-assign]
    try:
        call()
    finally:
        del store._run
    return received[0]


def test_a_scrape_receives_the_named_queues_rows_only(
    store: PostgresStore, clock: FakeClock
) -> None:
    # Not due for an hour: no queue has a due job, so oldest_due answers nothing.
    busy = [new_job(clock, queue=f"busy-{i}", delay=3600) for i in range(3) for _ in range(5)]
    store.add(busy)
    metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "3"}))
    before = rows_received(store, metrics.exposition)
    store.add([new_job(clock, queue=f"made-up-{i:04d}", delay=3600) for i in range(400)])
    after = rows_received(store, metrics.exposition)
    # The busy three and `_other`: one counter row and one count row more, not 800.
    assert after <= before + 2, (before, after)
    text = metrics.exposition().decode()
    assert f'spool_jobs_enqueued_total{{queue="{OTHER_QUEUE}",type="echo"}} 400.0' in text
    assert 'spool_jobs_enqueued_total{queue="busy-0",type="echo"} 5.0' in text


def rows_read(store: PostgresStore, call: Callable[[], Any]) -> int:
    """Live rows the server read (by sequential scans and by index scans, every table
    of the store's schema) during `call()`. The store has one connection, whose
    statistics are flushed before each count is taken.

    Live rows, not index entries: a fold leaves dead entries in the `dirty` index,
    which scans skip and mark dead only once no snapshot in the database can see
    them. Beside parallel test workers holding snapshots open, a scan walked the
    2,000 entries of each table again (CI: 17 -> 4,020), work bounded by the rows
    changed since the last vacuum, not by the names ever used."""
    schema = store.settings.schema
    text = (
        "SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables"
        " WHERE schemaname = %(s)s) + (SELECT coalesce(sum(idx_tup_fetch), 0)"
        " FROM pg_stat_user_tables WHERE schemaname = %(s)s)"
    )

    def total() -> int:
        # Sent by the store's own (only) connection: it reports its counts when idle.
        store._run(lambda conn: conn.execute("SELECT pg_stat_force_next_flush()"))
        with admin_connect() as admin:
            row = admin.execute(text, {"s": schema}).fetchone()
        return int(row[0]) if row else 0

    before = total()
    call()
    return total() - before


def test_a_scrape_reads_the_named_queues_rows_not_every_name_ever_used(clock: FakeClock) -> None:
    with fresh_schema(pool_min="1", pool_max="1") as url:
        store = from_url(url, clock)
        try:
            metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "3"}))
            # Not due for an hour: no queue has a due job, so oldest_due reads none.
            store.add([new_job(clock, queue=f"busy-{i % 3}", delay=3600) for i in range(15)])
            # The first folds what the enqueues changed, the second walks past the index
            # entries the fold left behind (once: it marks them dead, or VACUUM removes them).
            metrics.exposition()
            metrics.exposition()
            before = rows_read(store, metrics.exposition)
            for start in range(0, 2000, 500):
                names = [f"made-up-{i:04d}" for i in range(start, start + 500)]
                store.add([new_job(clock, queue=q, delay=3600) for q in names])
            # Work for the new names' rows, once: their fold, then walking past what it left.
            metrics.exposition()
            metrics.exposition()
            after = rows_read(store, metrics.exposition)
            # The same named queues, one `_other` row more per summary: not 2,000 names.
            assert after <= before + 10, (before, after)
            text = metrics.exposition().decode()
            assert f'spool_jobs_enqueued_total{{queue="{OTHER_QUEUE}",type="echo"}} 2000.0' in text
            assert f'spool_jobs{{queue="{OTHER_QUEUE}",state="queued"}} 2000.0' in text
            assert 'spool_jobs_enqueued_total{queue="busy-0",type="echo"} 5.0' in text
        finally:
            store.close()


def test_a_schema_of_0007_gets_exact_summaries_from_migrate(clock: FakeClock) -> None:
    """Counter and count rows an older Spool wrote (sharded, some counts back at zero)
    are summed once by migration 0008, and later writes are folded on top."""
    from chalicelib.errors import StoreNotMigrated
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import schema_at

    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 7)
            conn.execute(
                "INSERT INTO counters (queue, type, event, shard, n) VALUES"
                " ('big', 'echo', 'enqueued', 0, 4), ('big', 'echo', 'enqueued', 9, 3),"
                " ('big', 'echo', 'succeeded', 2, 7), ('aaa', 'echo', 'enqueued', 1, 2),"
                " ('zzz', 'fail', 'enqueued', 5, 2), ('zzz', 'fail', 'dead', 5, 2)"
            )
            conn.execute(
                "INSERT INTO job_counts (tenant, queue, state, shard, n) VALUES"
                " ('t', 'big', 'queued', 0, 1), ('t', 'big', 'queued', 3, -1),"
                " ('t', 'aaa', 'queued', 1, 2), ('u', 'zzz', 'dead', 4, 2)"
            )
        with pytest.raises(StoreNotMigrated):
            PostgresStore(settings, clock)
        with connect(settings) as conn:
            migrations.migrate(conn, settings.schema)
        store = PostgresStore(settings, clock)
        try:
            totals = store.queue_totals([], 1)
            assert totals == fold(store.counters(), store.counts(), [], 1)
            assert totals.named == {"big"}
            assert totals.counts == {
                (OTHER_QUEUE, JobState.QUEUED): 2,
                (OTHER_QUEUE, JobState.DEAD): 2,
            }
            # aaa and zzz tie at 2: by name, aaa first.
            assert store.queue_totals([], 2).named == {"big", "aaa"}
            store.add([new_job(clock, queue="zzz") for _ in range(8)])
            totals = store.queue_totals([], 1)
            assert totals == fold(store.counters(), store.counts(), [], 1)
            assert totals.named == {"zzz"}
            # A process of the previous release, still running during the rollout, bumps
            # counters with 0007's SQL (no pending, no dirty): the triggers catch it up.
            with connect(settings) as conn:
                for shard in (0, 0, 11):
                    conn.execute(
                        "INSERT INTO counters (queue, type, event, shard, n)"
                        " VALUES ('aaa', 'echo', 'enqueued', %s, 9) ON CONFLICT"
                        " (queue, type, event, shard) DO UPDATE SET n = counters.n + excluded.n",
                        (shard,),
                    )
            totals = store.queue_totals([], 1)
            assert totals == fold(store.counters(), store.counts(), [], 1)
            assert totals.named == {"aaa"}
        finally:
            store.close()


def test_enqueues_never_wait_on_a_summary_row(clock: FakeClock) -> None:
    """The summaries are written by scrapes only: with every summary row locked by
    another session, enqueues (into a known queue and a new one) still go through."""
    from chalicelib.storage.postgres import connect, parse_url

    with fresh_schema(statement_timeout="3") as url:
        store = from_url(url, clock)
        try:
            store.add([new_job(clock, queue="hot")])
            store.queue_totals([], 5)
            with connect(parse_url(url)) as holder:
                holder.autocommit = False
                for table in (
                    "queue_volume",
                    "counter_totals",
                    "queue_state_counts",
                    "state_totals",
                ):
                    assert holder.execute(f"SELECT * FROM {table} FOR UPDATE").fetchall()
                store.add([new_job(clock, queue="hot") for _ in range(3)])
                store.add([new_job(clock, queue="new")])
                holder.rollback()
            totals = store.queue_totals([], 5)
            assert totals.named == {"hot", "new"}
            assert totals == fold(store.counters(), store.counts(), [], 5)
        finally:
            store.close()


def test_scrapes_beside_enqueues_and_finishes_keep_the_sums_exact(clock: FakeClock) -> None:
    """Writers on several connections while scrapes fold: every scrape's sums match
    the counters it could have seen, and once the writers stop the fold is exact."""
    import threading

    from chalicelib.models import Completion

    with fresh_schema(pool_max="8") as url:
        store = from_url(url, clock)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for round_ in range(15):
                    added = store.add(
                        [new_job(clock, queue=f"q{(n + i + round_) % 7}") for i in range(5)]
                    )
                    ids = [a.job.id for a in added[:2]]
                    for job in store.claim(2, 30, ids=ids):
                        store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
            except BaseException as exc:
                errors.append(exc)

        try:
            writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
            for t in writers:
                t.start()
            while any(t.is_alive() for t in writers):
                totals = store.queue_totals(["q0"], 2)
                assert all(n > 0 for n in totals.counters.values())
                assert all(n > 0 for n in totals.counts.values())
            for t in writers:
                t.join()
            assert not errors, errors
            totals = store.queue_totals(["q0"], 2)
            assert totals == fold(store.counters(), store.counts(), ["q0"], 2)
            enqueued = sum(n for k, n in totals.counters.items() if k.event == "enqueued")
            assert enqueued == 4 * 15 * 5
        finally:
            store.close()
