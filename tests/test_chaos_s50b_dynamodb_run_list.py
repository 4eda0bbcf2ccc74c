"""DynamoDB: a concurrency limit far above what runs must not fill its limit item.

A limit item (`L#type:...`) keeps `run`, the ids its claims started that may still
be running; finish never touches it, and a claim dropped the finished ids only when
the limit was nearly full (`len(run) + want > concurrency`). Under a high limit (a
safety valve such as `{"queue:default": {"concurrency": 50000}}`) that never came:
every claim appended its ids (a retried job's again), the item grew by 37 bytes a
start, and at about 10,600 starts it passed DynamoDB's 400 KB item size. From then
every claim under the limit failed (ValidationException "Item size to update has
exceeded the maximum allowed size"): none of its jobs ever started again.

Now `run` is also pruned once it holds RUN_PRUNE_AT ids, whatever the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.ids import new_job_id
from chalicelib.limits import ClaimPolicy, Limit
from chalicelib.models import Completion, JobState
from chalicelib.storage import dynamodb_limits
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import DynamoConfig, create_resources, make_clients
from chalicelib.storage.dynamodb_schema import limit_item_key
from tests.factories import new_job

POLICY = ClaimPolicy(limits=(Limit("type", "echo", concurrency=50_000),))


@pytest.fixture
def aws() -> Iterator[tuple[DynamoStore, Any, FakeClock]]:
    with mock_aws():
        config = DynamoConfig(table="jobs")
        ddb, sqs, s3 = make_clients(config)
        create_resources(config, ddb, sqs, s3)
        clock = FakeClock()
        yield DynamoStore(config, clock, ddb=ddb), ddb, clock


def _run_ids(ddb: Any) -> list[str]:
    item = ddb.get_item(TableName="jobs", Key=limit_item_key("type:echo"), ConsistentRead=True)
    return list(json.loads(item["Item"]["run"]["S"]))


def _claim_and_finish(store: DynamoStore, clock: FakeClock, n: int) -> None:
    jobs = store.claim(n, 30, policy=POLICY)
    assert len(jobs) == n
    store.finish([Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in jobs])


@pytest.mark.timeout(120)
def test_a_limit_item_full_of_finished_ids_still_lets_claims_through(
    aws: tuple[DynamoStore, Any, FakeClock],
) -> None:
    """The state ~10,600 starts under a high limit leave: ids of jobs long finished,
    the item just under 400 KB. The next claim must still start jobs."""
    store, ddb, clock = aws
    stale = 10_600
    while True:  # as many finished ids as the item holds (moto counts its size)
        try:
            ddb.put_item(
                TableName="jobs",
                Item={
                    **limit_item_key("type:echo"),
                    "run": {"S": json.dumps([new_job_id() for _ in range(stale)])},
                    "starts": {"S": "[]"},
                    "ver": {"N": "1"},
                },
            )
            break
        except Exception:
            stale -= 100
    assert stale > 9000
    store.add([new_job(clock, "echo") for _ in range(20)])
    _claim_and_finish(store, clock, 20)
    assert len(_run_ids(ddb)) <= 20


@pytest.mark.timeout(120)
def test_finished_ids_are_dropped_from_a_high_limit_as_claims_go_on(
    aws: tuple[DynamoStore, Any, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ddb, clock = aws
    monkeypatch.setattr(dynamodb_limits, "RUN_PRUNE_AT", 30)
    store.add([new_job(clock, "echo") for _ in range(80)])
    for _ in range(8):
        _claim_and_finish(store, clock, 10)
        assert len(_run_ids(ddb)) <= 30 + 10
