"""The Postgres store's batch enqueue sends a column once when every job of the batch
holds the same value in it (postgres.add_sql: a batch's tenant is always one, its
unkeyed part has no keys), and a batch without keys reads no ids back
(PostgresStore._add_keyless: its answer is built from what was sent). These check
which columns go once, that each job is stored with its own values whichever columns
were shared, that the keyless answer is the stored job field for field, and that a
keyless batch is counted once, or not at all when it fails (the contract suite covers
the rest)."""

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


def test_columns_every_job_shares_are_sent_once(store: Any) -> None:
    clock = store.clock
    now = clock.now()
    # The times differ (an array); the rest is one value each.
    jobs = [new_job(clock, queue="mail", payload={"n": i}, delay=i) for i in range(3)]
    shared, params = store._add_params(jobs, now)
    assert shared == {"tenant", "type", "queue", "priority", "max_attempt", "key", "callback_url"}
    assert params["queue"] == "mail" and params["key"] is None and "queues" not in params
    assert len(params["ids"]) == len(params["payloads"]) == len(params["run_ats"]) == 3


def test_each_job_is_stored_with_its_own_values_whatever_was_shared(store: Any) -> None:
    clock = store.clock
    later = (clock.now() + timedelta(seconds=90)).astimezone(timezone(timedelta(hours=5)))
    # Every column varies in one batch, and each alone in another: arrays and scalars
    # mixed in every way the statement can be built.
    varied: dict[str, list[Any]] = {
        "queue": ["a", "b\ud800"],
        "priority": [3, -4],
        "max_attempts": [2, 9],
        "run_at": [clock.now(), later],
        "callback_url": [None, "http://127.0.0.1:9/done"],
        "type_": ["echo", "other"],
    }
    batches = [[new_job(clock, payload={"k": "a\x00b"}, **{f: v[i] for f, v in varied.items()})
                for i in range(2)]]  # fmt: skip
    for name, values in varied.items():
        one_each = [new_job(clock, payload={"n": n}, **{name: v}) for n, v in enumerate(values)]
        batches.append(one_each)
    for batch in batches:
        added = store.add(batch)
        assert [r.job.id for r in added] == [n.id for n in batch]
        for new, result in zip(batch, added, strict=True):
            stored = store.get(new.id)
            assert result.created and stored == result.job
            assert (stored.queue, stored.priority, stored.max_attempts, stored.type) == (
                new.queue, new.priority, new.max_attempts, new.type,
            )  # fmt: skip
            assert stored.run_at == new.run_at and stored.payload == new.payload


def test_a_keyless_batch_is_counted_once(store: Any) -> None:
    clock = store.clock
    store.add([new_job(clock, queue="mail") for _ in range(3)])
    store.add([new_job(clock, queue="mail"), new_job(clock, queue="news")])
    assert store.state_counts()[("mail", JobState.QUEUED)] == 4
    assert store.counters()[CounterKey("mail", "echo", "enqueued")] == 4
    assert store.counters()[CounterKey("news", "echo", "enqueued")] == 1


def test_a_keyless_batch_reusing_a_stored_id_stores_nothing(store: Any) -> None:
    import psycopg

    clock = store.clock
    first = new_job(clock, queue="mail")
    store.add([first])
    again = [new_job(clock, queue="mail"), first, new_job(clock, queue="mail")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        store.add(again)
    assert store.get(again[0].id) is None and store.get(again[2].id) is None
    assert store.state_counts()[("mail", JobState.QUEUED)] == 1
    assert store.counters()[CounterKey("mail", "echo", "enqueued")] == 1
