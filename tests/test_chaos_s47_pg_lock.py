"""A Postgres claim that waited on a lock hands out a lease that is still live.

The claim read its clock once it held a pooled connection, then sent its statements;
if they waited on a lock (a migration's ALTER TABLE, a CREATE INDEX without
CONCURRENTLY, an operator's LOCK TABLE) longer than the lease, the lease they wrote
was over before the claim returned: the next worker's claim reaped the job while its
handler ran, so it ran twice and its first run's outcome was refused as a lost lease.
A lease extension could wait the same way and write an end already past.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.handlers import Registry
from chalicelib.models import Job
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.postgres import PostgresStore, from_url, parse_url
from tests.factories import new_job
from tests.pg_support import admin_connect, fresh_schema, wait_until_blocked_by

pytestmark = pytest.mark.postgres

LEASE = 2.0  # seconds; the lock below is held past it


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as migrated:
        yield migrated


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    """On the server's clock, as `spool worker` runs: no test clock."""
    opened = from_url(url)
    yield opened
    opened.close()


def _behind_a_table_lock(
    url: str, call: Callable[[], Any], table: str = "jobs"
) -> tuple[Any, datetime]:
    """Run `call` while another session holds `table` locked for longer than LEASE;
    answer what it returned and when it returned."""
    holder = admin_connect()
    watcher = admin_connect()
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["value"] = call()
        answer["at"] = datetime.now(UTC)

    try:
        holder.execute(f"SET search_path = {parse_url(url).schema}")
        with holder.transaction():
            holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            [(pid,)] = holder.execute("SELECT pg_backend_pid()").fetchall()
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            wait_until_blocked_by(watcher, pid)
            time.sleep(LEASE * 1.5)  # the lock outlasts the lease: the point of the test
        thread.join(30)
        assert not thread.is_alive()
    finally:
        holder.close()
        watcher.close()
    return answer["value"], answer["at"]


@pytest.mark.timeout(60)
def test_a_claim_that_waited_on_a_lock_returns_a_live_lease(
    store: PostgresStore, url: str, handlers: Registry
) -> None:
    Service(store, handlers).enqueue([EnqueueRequest(type="echo")], "t")
    jobs, returned = _behind_a_table_lock(url, lambda: store.claim(1, LEASE))
    [job] = jobs
    assert isinstance(job, Job) and job.lease_expires_at is not None
    assert job.lease_expires_at > returned
    # and no other claim can take it while that lease runs
    assert store.claim(1, LEASE) == []


@pytest.mark.timeout(60)
def test_a_lease_extension_that_waited_on_a_lock_writes_a_live_end(
    store: PostgresStore, url: str, handlers: Registry
) -> None:
    Service(store, handlers).enqueue([EnqueueRequest(type="echo")], "t")
    [job] = store.claim(1, 30.0)
    assert job.lease_token is not None
    token = job.lease_token
    extended, returned = _behind_a_table_lock(url, lambda: store.extend_lease(job.id, token, LEASE))
    assert extended
    lease_end = store.get(job.id)
    assert lease_end is not None and lease_end.lease_expires_at is not None
    assert lease_end.lease_expires_at > returned


@pytest.mark.timeout(60)
def test_a_webhook_claim_that_waited_on_a_lock_returns_a_live_lease(
    store: PostgresStore, url: str
) -> None:
    """A delivery whose lease is over when claimed is claimed again by the next
    worker while the first still sends it: the receiver gets it twice."""
    [added] = store.add([new_job(store.clock, callback_url="https://example.com/hook")])
    store.cancel(added.job.id)  # one pending delivery
    claimed, returned = _behind_a_table_lock(
        url, lambda: store.claim_webhooks(10, LEASE), table="webhook_deliveries"
    )
    [delivery] = claimed
    assert delivery.lease_expires_at is not None
    assert delivery.lease_expires_at > returned
    assert store.claim_webhooks(10, LEASE) == []
