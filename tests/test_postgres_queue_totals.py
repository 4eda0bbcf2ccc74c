"""Postgres: a scrape receives the named queues' rows, not one per queue name ever used.

The ranking and the sums run in the server (JobStore.queue_totals), so what
Python receives is counted here: the rows every store call of one scrape
returned, through the store's own `_run`. A count, not a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import OTHER_QUEUE
from chalicelib.storage.postgres import PostgresStore, from_url
from tests.factories import new_job
from tests.pg_support import fresh_schema


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
