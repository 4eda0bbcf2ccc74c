"""The Postgres store's single enqueue without an idempotency key (the common call)
takes a path of its own, without add's batch bookkeeping (PostgresStore._add_one): its
answer is built from what was sent, not read back. These check that the answer is the
stored job field for field, text that needs the store's escaping included, and that
the job is counted once, as on the batch path (the contract suite covers the rest)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from chalicelib.models import CounterKey, JobState
from tests.factories import new_job

pytestmark = pytest.mark.postgres


@pytest.fixture
def store() -> Iterator[Any]:
    from tests.pg_support import fresh_store

    with fresh_store() as pg:
        yield pg


def test_the_answer_of_a_single_unkeyed_add_is_the_stored_job(store: Any) -> None:
    clock = store.clock
    # A run_at in another offset, text the store escapes (a NUL, a lone surrogate), a
    # callback URL and a priority: every field the answer carries comes from the call.
    later = (clock.now() + timedelta(seconds=90)).astimezone(timezone(timedelta(hours=5)))
    new = new_job(
        clock,
        payload={"to": "a\x00b", "n": [1, {"x": None}], "s": "\ud800"},
        run_at=later,
        tenant="t\x00\u00e9",
        queue="q\ud800",
        priority=-4,
        max_attempts=9,
        callback_url="http://127.0.0.1:9/done",
    )
    [added] = store.add([new])
    assert added.created and added.callback_url is None
    stored = store.get(new.id)
    assert stored == added.job
    assert stored.run_at == later and stored.state is JobState.QUEUED
    texts = (stored.tenant, stored.queue, stored.payload["s"])
    assert texts == ("t\x00\u00e9", "q\ud800", "\ud800")


def test_a_single_unkeyed_add_is_counted_once(store: Any) -> None:
    clock = store.clock
    for _ in range(3):
        store.add([new_job(clock, queue="mail")])
    assert store.state_counts()[("mail", JobState.QUEUED)] == 3
    assert store.counters()[CounterKey("mail", "echo", "enqueued")] == 3
    assert store.queue_totals(["mail"], 10).counts[("mail", JobState.QUEUED)] == 3


def test_a_single_add_reusing_a_stored_id_stores_nothing_more(store: Any) -> None:
    """An id is unique: a second unkeyed add of the same id fails as the batch's does,
    and counts nothing (its counts are written in the same statement as its row)."""
    import psycopg

    clock = store.clock
    new = new_job(clock, queue="mail")
    store.add([new])
    with pytest.raises(psycopg.errors.UniqueViolation):
        store.add([new])
    assert store.state_counts()[("mail", JobState.QUEUED)] == 1
    assert store.counters()[CounterKey("mail", "echo", "enqueued")] == 1


def test_a_single_unkeyed_add_reads_nothing_back(store: Any, monkeypatch: Any) -> None:
    """Without a key nothing can conflict, so the statement inserts its row without an
    ON CONFLICT arbiter and counts it from the call's own values: no RETURNING read
    back through a CTE scan (about 20 us of server time a call, stop 43)."""
    from chalicelib.storage import postgres

    sent: list[tuple[str, dict[str, Any]]] = []
    kept = postgres._kept_cursor

    class Recording:
        def __init__(self, cursor: Any) -> None:
            self.cursor = cursor

        def execute(self, sql: str, params: dict[str, Any]) -> Any:
            sent.append((sql, params))
            return self.cursor.execute(sql, params)

    monkeypatch.setattr(postgres, "_kept_cursor", lambda conn: Recording(kept(conn)))
    store.add([new_job(store.clock, queue="mail")])
    [(sql, params)] = sent
    with postgres.connect(store.settings) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
        assert row is not None
        [[plan]] = row
    nodes = list(_nodes(plan["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "CTE Scan"], nodes
    inserts = [n for n in nodes if n.get("Relation Name") == "jobs"]
    assert inserts and all("Conflict Resolution" not in n for n in inserts), inserts


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)
