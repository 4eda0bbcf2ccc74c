"""The backlog quota's check reads the tenant's waiting jobs, not its history.

Each enqueue (and redrive) of a tenant with a `backlog` in SPOOL_TENANT_LIMITS asks
the store how many of its jobs wait. On DynamoDB that was `state_counts(tenant)`,
which reads the tenant index's entry of every job the tenant has, finished ones
included: a tenant with a million kept results paid a million index reads per
enqueue, on the store docs/handlers.md sends AWS users to cap tenants with. The
count now comes from the tenant's waiting index, whose entries are only its waiting
jobs (at most about the quota).
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api.throttle import EnqueueGate, RateLimited
from chalicelib.clock import FakeClock
from chalicelib.limit_settings import TenantLimit, TenantLimits
from chalicelib.models import Completion, JobState
from chalicelib.storage.dynamodb import DynamoStore
from tests import test_dynamodb
from tests.factories import new_job
from tests.test_dynamodb import Aws

aws = test_dynamodb.aws

# Finished jobs the old count read an index entry for, each: 30 (with 3 waiting, 33
# entries read where the check allows 6) tell the two counts apart as surely as the
# 120 it was written with, whose claim and finish on moto took most of each test's
# 13 s (the three together: 4.6 s alone, not 38.8).
FINISHED = 30
WAITING = 3


def _entries_read(aws: Aws) -> list[int]:
    """Index entries DynamoDB reads for each Query made from now on (ScannedCount)."""
    read: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        read.append(int(parsed.get("ScannedCount", 0)))

    aws.ddb.meta.events.register("after-call.dynamodb.Query", count)
    return read


def _tenant_with_history(store: DynamoStore, clock: FakeClock) -> None:
    """FINISHED succeeded jobs of tenant t, then WAITING queued ones (one delayed)."""
    store.add([new_job(clock, tenant="t") for _ in range(FINISHED)])
    claimed = store.claim(FINISHED, 60)
    assert len(claimed) == FINISHED
    done = [Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in claimed]
    assert all(store.finish(done))
    store.add([new_job(clock, tenant="t") for _ in range(WAITING - 1)])
    store.add([new_job(clock, tenant="t", delay=3600)])


@pytest.mark.timeout(120)
def test_the_backlog_check_reads_no_finished_jobs(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock)
    _tenant_with_history(store, clock)
    gate = EnqueueGate(store, TenantLimits(TenantLimit(), {"t": TenantLimit(backlog=10)}))
    read = _entries_read(aws)
    with gate.admitted("t", [None]):
        pass
    with gate.redrive_room("t") as room:
        assert room == 10 - WAITING
    assert sum(read) <= 2 * WAITING, f"{sum(read)} index entries read for {WAITING} waiting jobs"


@pytest.mark.timeout(120)
def test_the_backlog_still_refuses_when_full(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock)
    _tenant_with_history(store, clock)
    gate = EnqueueGate(store, TenantLimits(TenantLimit(), {"t": TenantLimit(backlog=WAITING)}))
    with pytest.raises(RateLimited) as refused, gate.admitted("t", [None]):
        pytest.fail("admitted past a full backlog")
    assert refused.value.details == {"waiting": WAITING, "backlog": WAITING}


@pytest.mark.timeout(120)
def test_a_table_without_the_waiting_index_is_counted_the_old_way(
    aws: Aws, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table made before the fair indexes answers a query of one with a
    ValidationException naming the index: the count falls back to the tenant index."""
    from botocore.exceptions import ClientError

    from chalicelib.storage import dynamodb

    store = aws.store(clock)
    _tenant_with_history(store, clock)

    def no_index(call: Any, request: dict[str, Any]) -> int:
        message = "The table does not have the specified index: tenant_due"
        raise ClientError({"Error": {"Code": "ValidationException", "Message": message}}, "Query")

    monkeypatch.setattr(dynamodb, "counted", no_index)
    assert store.waiting_count("t") == WAITING
