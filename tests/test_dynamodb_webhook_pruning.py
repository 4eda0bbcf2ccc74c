"""DynamoDB's pruning of a job's webhook deliveries beyond the contract: the job
item's `hooks` set (which must stay far from the 400 KB item limit) lists exactly
the deliveries kept, and a job that piled up deliveries before pruning existed
sheds them over its next transitions, MAX_DROPS at a time (against moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import DynamoConfig
from chalicelib.storage.dynamodb_webhooks import MAX_DROPS
from chalicelib.webhooks import outbox
from tests.factories import new_job, token
from tests.test_dynamodb import Aws

LEASE = 30.0
URL = "https://hooks.example.com/spool"


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        yield Aws(DynamoConfig(table="jobs"))


@pytest.fixture
def store(aws: Aws, clock: FakeClock) -> DynamoStore:
    return aws.store(clock)


def die_and_deliver(store: DynamoStore, clock: FakeClock, job_ids: list[str]) -> None:
    """Each job claimed and finished dead in one batch; its delivery delivered."""
    clock.advance(1)
    running = store.claim(len(job_ids), LEASE)
    assert sorted(j.id for j in running) == sorted(job_ids)
    done = [Completion(j.id, token(j), JobState.DEAD, error="x") for j in running]
    assert all(store.finish(done))
    for d in store.claim_webhooks(10, LEASE):
        assert store.finish_webhook(d.id, token(d), "delivered")
    assert len(store.redrive(job_ids)) == len(job_ids)


def hooks(aws: Aws, job_id: str) -> list[str]:
    return sorted(aws.item(job_id).get("hooks", {}).get("SS", []))


def test_the_hooks_set_lists_exactly_the_kept_deliveries(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    jobs = [store.add([new_job(clock, callback_url=URL, max_attempts=1)])[0].job.id for _ in "ab"]
    for _ in range(outbox.KEPT_FINISHED + 4):
        die_and_deliver(store, clock, jobs)  # both in one finish: one read of both sets
    for job_id in jobs:
        kept = store.webhooks(job_id)
        assert len(kept) == outbox.KEPT_FINISHED + 1
        assert hooks(aws, job_id) == sorted(d.id for d in kept)
    stored = aws.ddb.scan(
        TableName="jobs",
        FilterExpression="begins_with(pk, :h)",
        ExpressionAttributeValues={":h": {"S": "H#"}},
    )["Items"]
    assert len(stored) == 2 * len(kept)  # the dropped deliveries' items are gone


def test_a_piled_up_job_sheds_its_old_deliveries_a_few_at_a_time(
    aws: Aws, store: DynamoStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.add([new_job(clock, callback_url=URL, max_attempts=1)])[0].job.id
    piled = outbox.KEPT_FINISHED + MAX_DROPS + 10
    with monkeypatch.context() as before_pruning:
        before_pruning.setattr(store, "webhook_history", 10_000)  # a store of before pruning
        for _ in range(piled):
            die_and_deliver(store, clock, [job])
    assert len(hooks(aws, job)) == piled
    die_and_deliver(store, clock, [job])  # drops MAX_DROPS, then its own is delivered
    assert len(hooks(aws, job)) == piled + 1 - MAX_DROPS
    die_and_deliver(store, clock, [job])  # caught up
    assert len(hooks(aws, job)) == outbox.KEPT_FINISHED + 1
    assert hooks(aws, job) == sorted(d.id for d in store.webhooks(job))
