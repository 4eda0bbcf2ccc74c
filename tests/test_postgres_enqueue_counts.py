"""The Postgres enqueue keeps the dashboard's `queued` counts in its own statement
(migration 0009), and every other insert into jobs is still counted by 0004's trigger:
each job exactly once, whoever inserted it, before and after the upgrade."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from tests.factories import new_job

pytestmark = pytest.mark.postgres

QUEUED = ("mail", JobState.QUEUED)


def _hand_insert(conn: Any, job_id: str) -> None:
    """An insert by another writer: a process of an earlier release, SQL by hand."""
    conn.execute(
        "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state,"
        " max_attempts, run_at, created_at, updated_at) VALUES"
        " (%s, 'a', 'echo', 'mail', 0, '{}', 'queued', 3, now(), now(), now())",
        (job_id,),
    )


def _counted_and_stored(conn: Any) -> tuple[int, int]:
    """The kept `queued` count of tenant a's queue mail, and its jobs counted."""
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(n), 0) FROM job_counts WHERE tenant = 'a'"
        " AND queue = 'mail' AND state = 'queued'),"
        " (SELECT count(*) FROM jobs WHERE tenant = 'a' AND queue = 'mail'"
        " AND state = 'queued')"
    ).fetchone()
    return int(row[0]), int(row[1])


@pytest.fixture
def pg() -> Iterator[tuple[Any, Any]]:
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema

    with fresh_schema() as url:
        settings = parse_url(url)
        store = PostgresStore(settings, FakeClock())
        try:
            with connect(settings) as conn:
                yield store, conn
        finally:
            store.close()


def test_the_enqueue_counts_its_jobs_without_the_insert_trigger(pg: tuple[Any, Any]) -> None:
    store, conn = pg
    conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_counted_insert")
    clock = store.clock
    store.add([new_job(clock, tenant="a", queue="mail")])
    store.add([new_job(clock, tenant="a", queue="mail") for _ in range(5)])
    keyed = new_job(clock, tenant="a", queue="mail", idempotency_key="k")
    store.add([keyed])
    # A key seen before inserts no row, so counts none.
    store.add([new_job(clock, tenant="a", queue="mail", idempotency_key="k")])
    store.add([new_job(clock, tenant="a", queue="mail", idempotency_key="k"), new_job(clock)])
    assert _counted_and_stored(conn) == (7, 7)
    assert store.state_counts("a")[QUEUED] == 7


def test_each_job_is_counted_once_whoever_inserts_it(pg: tuple[Any, Any]) -> None:
    store, conn = pg
    clock = store.clock
    store.add([new_job(clock, tenant="a", queue="mail")])
    _hand_insert(conn, "j_" + "1" * 32)
    store.add([new_job(clock, tenant="a", queue="mail") for _ in range(3)])
    with conn.transaction():  # the store's flag is its own transaction's, never this one's
        _hand_insert(conn, "j_" + "2" * 32)
    assert _counted_and_stored(conn) == (6, 6)
    # The flag lasts as long as the enqueue's transaction: an insert after one, on the
    # same session, is counted by the trigger.
    with conn.transaction():
        conn.execute("SELECT set_config('spool.inserts_counted', 'on', true)")
    _hand_insert(conn, "j_" + "3" * 32)
    assert _counted_and_stored(conn) == (7, 7)
    assert store.state_counts("a")[QUEUED] == 7


def test_an_upgrade_to_0009_keeps_the_counts() -> None:
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    clock = FakeClock()
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 8)
            _hand_insert(conn, "j_" + "1" * 32)
            _hand_insert(conn, "j_" + "2" * 32)
            ran = [m.version for m in migrations.migrate(conn, settings.schema)]
            assert ran == list(range(9, migrations.latest_version() + 1))
            assert _counted_and_stored(conn) == (2, 2)
            store = PostgresStore(settings, clock)
            try:
                store.add([new_job(clock, tenant="a", queue="mail") for _ in range(2)])
                store.add([new_job(clock, tenant="a", queue="mail")])
                _hand_insert(conn, "j_" + "3" * 32)  # a process of the earlier release
                assert _counted_and_stored(conn) == (6, 6)
            finally:
                store.close()


def test_a_single_enqueue_stores_every_field_as_a_batch_does(pg: tuple[Any, Any]) -> None:
    """The single enqueue builds its own parameters (PostgresStore._one_params): each
    column comes back as the batch's path stores it, odd text and all."""
    store, _ = pg
    clock = store.clock
    odd = "nul\x00, lone \ud800, \ufffe, h\xe9llo \U0001f600"
    fields: dict[str, Any] = {
        "tenant": "t " + odd,
        "queue": "q " + odd,
        "priority": 7,
        "max_attempts": 9,
        "payload": {"text": odd, "n": [1, 2.5, None]},
        "callback_url": "https://example.invalid/hook?x=" + odd,
    }
    one = new_job(clock, "type " + odd, idempotency_key="k1 " + odd, delay=30, **fields)
    pair = [new_job(clock, "type " + odd, idempotency_key=f"k{i} " + odd, delay=30, **fields)
            for i in (2, 3)]  # fmt: skip
    [single] = store.add([one])
    batch = store.add(pair)
    assert single.created and all(r.created for r in batch)
    stored = store.get(one.id)
    from_batch = store.get(pair[0].id)
    assert stored is not None and from_batch is not None
    assert stored == single.job
    for name in ("tenant", "type", "queue", "priority", "max_attempts", "payload", "run_at"):
        assert getattr(stored, name) == getattr(from_batch, name), name
    assert store.get_by_key(one.tenant, "k1 " + odd) == stored
    assert [r.callback_url for r in store.add([one])] == [fields["callback_url"]]


def _plan_nodes(plan: dict[str, Any]) -> Iterator[str]:
    yield plan["Node Type"]
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_a_single_enqueue_counts_its_one_row_without_grouping(pg: tuple[Any, Any]) -> None:
    """The single enqueue inserts at most one row, so its counter and count upserts
    take that row as it is: no sort and no aggregate in front of either (the batch's
    GROUP BY and ORDER BY cost the single statement about 20 us of server time)."""
    from chalicelib.storage.postgres import ADD_ONE_SQL

    store, conn = pg
    params = store._one_params(new_job(store.clock, tenant="a", queue="mail"), store.clock.now())
    [[plan]] = conn.execute("EXPLAIN (FORMAT JSON) " + ADD_ONE_SQL, params).fetchone()
    nodes = set(_plan_nodes(plan["Plan"]))
    assert "ModifyTable" in nodes
    assert not nodes & {"Sort", "Aggregate", "Incremental Sort"}, nodes
