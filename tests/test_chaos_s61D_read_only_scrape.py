"""/metrics on a Postgres that takes no writes (a standby, default_transaction_read_only).

Such a database is an outage for writes (503 "the database is read-only now"), but
everything Spool reads still answers: /jobs, /status, the dashboard's overview.
/metrics did not: its scrape first folds the counter rows changed since the last
scrape (migration 0008's spool_fold_* functions, which write), so the refused fold
made every scrape 503 and Prometheus lost the queue's depth for exactly the outage
it should show. Now a refused fold is skipped and the scrape reads the counter and
count rows as they stand: the same numbers the fold would have given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from chalicelib.clock import SystemClock
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.storage.queue_totals import fold
from tests.factories import new_job
from tests.pg_support import fresh_schema
from tests.procs import guarded_env, serving_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

READ_ONLY = "&options=" + quote("-c default_transaction_read_only=on")
KEY = "s61d-operator-key-0123456789"


@pytest.fixture
def stores() -> Iterator[tuple[str, JobStore, JobStore]]:
    """A migrated schema, a store that writes to it and one that may only read it."""
    with fresh_schema() as url:
        writer = open_store(url, SystemClock())
        reader = open_store(url + READ_ONLY, SystemClock())
        try:
            yield url, writer, reader
        finally:
            reader.close()
            writer.close()


def _fill(store: JobStore) -> None:
    """Jobs in two queues, one of them run: counter and count rows left unfolded."""
    store.add([new_job(store.clock, queue="mail") for _ in range(3)])
    store.add([new_job(store.clock, queue="reports") for _ in range(2)])
    assert len(store.claim(1, lease_seconds=30, queues=["reports"])) == 1


def test_a_read_only_scrape_reads_the_totals_as_they_stand(
    stores: tuple[str, JobStore, JobStore],
) -> None:
    _, writer, reader = stores
    _fill(writer)
    expected = fold(writer.counters(), writer.counts(), ["mail"], 0)
    # Before: StoreUnavailable "the database is read-only now" from the fold.
    assert reader.queue_totals(["mail"], 0) == expected
    assert writer.queue_totals(["mail"], 0) == expected  # the fold gives the same


def test_metrics_answers_from_a_read_only_database(
    stores: tuple[str, JobStore, JobStore],
) -> None:
    url, writer, _ = stores
    _fill(writer)
    env = guarded_env(
        SPOOL_STORE_URL=url + READ_ONLY,
        SPOOL_API_KEYS=f"{KEY}=default",
        SPOOL_METRICS_KEYS=KEY,
    )
    with serving_url("--threads", "4", "--no-worker", env=env) as served:
        refused = httpx.post(
            f"{served}/enqueue", json={"type": "echo"}, headers={"X-API-Key": KEY}, timeout=30
        )
        assert refused.status_code == 503, refused.text  # writes are still an outage
        answer = httpx.get(f"{served}/metrics", headers={"X-API-Key": KEY}, timeout=30)
        assert answer.status_code == 200, answer.text
        gauges = dict(
            re.findall(r'^spool_jobs\{(queue="[^"]+",state="\w+")\} (\S+)$', answer.text, re.M)
        )
        assert float(gauges['queue="mail",state="queued"']) == 3
        assert float(gauges['queue="reports",state="running"']) == 1
