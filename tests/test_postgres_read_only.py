"""A Postgres that takes no writes, or ends a paused transaction, is a store outage.

A standby (a failover not yet promoted, a URL pointing at a replica) or
`default_transaction_read_only` refuses every write with SQLSTATE 25006. That was
raised as it came: every enqueue answered 500, the CLI said "unexpected error",
and `spool worker` exited at its first claim. Now it is StoreUnavailable (503
with Retry-After; the worker waits and goes on once writes are taken again).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.clock import SystemClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from tests.factories import new_job
from tests.pg_support import fresh_schema
from tests.worker_outages import assert_worker_rides_out

pytestmark = pytest.mark.timeout(120)

READ_ONLY = "&options=" + quote("-c default_transaction_read_only=on")


@pytest.fixture
def read_only() -> Iterator[JobStore]:
    with fresh_schema() as url:
        store = open_store(url + READ_ONLY, SystemClock())
        try:
            yield store
        finally:
            store.close()


def test_a_write_to_a_read_only_database_is_a_store_outage(read_only: JobStore) -> None:
    with pytest.raises(StoreUnavailable) as refused:
        read_only.add([new_job(read_only.clock)])
    assert refused.value.status == 503
    assert "read-only" in refused.value.message


def test_the_worker_waits_out_a_read_only_database_and_stops_cleanly(
    read_only: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert_worker_rides_out(read_only, caplog)


def test_a_transaction_ended_for_sitting_idle_is_a_store_outage() -> None:
    """A process paused inside a transaction (SIGSTOP, a frozen VM) past the server's
    idle_in_transaction_session_timeout finds its session ended and the transaction
    rolled back: an outage to retry, not an error that ends `spool worker`."""
    with fresh_schema(statement_timeout="1") as url:
        store = open_store(url, SystemClock())
        try:

            def paused_inside(conn: Any) -> None:
                with conn.transaction():
                    conn.execute("SELECT 1")
                    time.sleep(2.5)  # idle in the transaction past the 1 s timeout
                    conn.execute("SELECT 1")

            with pytest.raises(StoreUnavailable, match="nothing was applied"):
                store._run(paused_inside)  # type: ignore[attr-defined]
            assert store.counts() == {}  # the next call gets a live connection
        finally:
            store.close()
