"""A periodic tick whose job the store's retention deleted must not fire again.

The proof that a tick fired is its job (the idempotency key `periodic:<name>:<tick>`).
On DynamoDB a finished job and its key expire `retention_days` after the job finished
(30 by default, as low as 1 in the template), while a schedule's latest tick stays the
latest for a whole period: a @monthly job expired on the 31st, a @yearly one every 30
days, and the next scheduler that asked the store (a new Lambda container, a restarted
worker) found no key and enqueued the same tick again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto import mock_aws
from pydantic import BaseModel, ConfigDict

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.periodic import SYSTEM_TENANT, Schedule, Scheduler
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import DynamoConfig, create_resources, make_clients

T0 = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
DAY = 86400


class Kind(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str


@pytest.fixture
def handlers() -> Registry:
    local = Registry()

    @local.handler("report", payload=Kind)
    def report(payload: Kind) -> dict[str, str]:
        return {"kind": payload.kind}

    return local


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        config = DynamoConfig(table="jobs", retention_days=30)
        ddb, sqs, s3 = make_clients(config)
        create_resources(config, ddb, sqs, s3)
        yield config, ddb


def _store(aws: Any, clock: FakeClock) -> DynamoStore:
    config, ddb = aws
    return DynamoStore(config, clock, ddb=ddb)


def _expire(ddb: Any, clock: FakeClock) -> int:
    """What DynamoDB's TTL does (moto does not): delete every item past its expires_at."""
    now = clock.now().timestamp()
    gone = 0
    for item in ddb.scan(TableName="jobs")["Items"]:
        if "expires_at" in item and int(item["expires_at"]["N"]) < now:
            ddb.delete_item(TableName="jobs", Key={"pk": item["pk"], "sk": item["sk"]})
            gone += 1
    return gone


def _run_all(store: DynamoStore) -> None:
    for job in store.claim(10, 30):
        assert job.lease_token is not None
        store.finish([Completion(job.id, job.lease_token, JobState.SUCCEEDED)])


@pytest.mark.timeout(60)
def test_a_monthly_tick_whose_job_expired_is_not_fired_again(aws: Any, handlers: Registry) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    store = _store(aws, clock)
    monthly = Schedule(name="monthly", type="report", cron="@monthly", payload={"kind": "m"})
    [first] = Scheduler(store, handlers, [monthly]).fire_due()
    assert (first.outcome, first.tick) == ("enqueued", T0)
    _run_all(store)
    # January has 31 days: on the 31st the job (finished on the 1st) has expired, and
    # January 1st is still the latest tick. A new scheduler (a fresh container) asks.
    clock.set(T0 + timedelta(days=30, hours=1))
    assert _expire(aws[1], clock) >= 2  # the job and its key
    fired = Scheduler(_store(aws, clock), handlers, [monthly]).fire_due()
    assert [f.outcome for f in fired if f.outcome == "enqueued"] == []
    assert store.list_jobs(JobQuery(tenant=SYSTEM_TENANT, limit=10)).jobs == []
    # The next tick still fires, on time.
    clock.set(T0 + timedelta(days=31, seconds=3))
    [february] = Scheduler(_store(aws, clock), handlers, [monthly]).fire_due()
    assert (february.outcome, february.tick) == ("enqueued", T0 + timedelta(days=31))


@pytest.mark.timeout(60)
def test_a_yearly_schedule_fires_once_a_year_though_its_jobs_expire_monthly(
    aws: Any, handlers: Registry
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    yearly = Schedule(name="yearly", type="report", cron="@yearly", payload={"kind": "y"})
    enqueued = 0
    for day in range(0, 365, 7):  # a fresh scheduler every week, the store expiring daily
        clock.set(T0 + timedelta(days=day, seconds=5))
        _expire(aws[1], clock)
        store = _store(aws, clock)
        fired = Scheduler(store, handlers, [yearly]).fire_due()
        enqueued += sum(1 for f in fired if f.outcome == "enqueued")
        _run_all(store)
    assert enqueued == 1
