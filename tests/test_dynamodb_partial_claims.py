"""A claim of several jobs that DynamoDB throttles part-way keeps what it claimed.

Found driving app.py's SQS handler against moto_server with a fault-injecting
botocore hook (throttling on a quarter of the calls): a batch's claim wrote some
jobs `running` (an attempt spent on each), then a later write of the same claim
was throttled and the claim raised. The worker never saw the jobs it had
claimed: their handlers did not run, their redelivered messages were dropped as
leased, and each sat until its lease expired, when the reaper spent the attempt
(dead at the last one, its handler never run). Against moto in-process, as
tests/test_dynamodb.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.storage.dynamodb import DynamoStore
from tests import test_dynamodb
from tests.test_dynamodb import Aws, add

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixture.
aws = test_dynamodb.aws


def throttle_update(aws: Aws, nth: int) -> None:
    """Refuse the nth UpdateItem from now on as DynamoDB throttles one (once)."""
    seen = {"n": 0}

    def refuse(model: Any, **_: Any) -> None:
        if model.name != "UpdateItem":
            return
        seen["n"] += 1
        if seen["n"] == nth:
            code = "ProvisionedThroughputExceededException"
            raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, "UpdateItem")

    aws.ddb.meta.events.register("before-call.dynamodb.UpdateItem", refuse)


def test_a_throttled_second_claim_keeps_the_first_job_claimed(aws: Aws, clock: FakeClock) -> None:
    """Two ids (one conditional UpdateItem each): the second is throttled."""
    store: DynamoStore = aws.store(clock)
    first, second = add(store, clock), add(store, clock)
    aws.messages()  # the enqueue's messages, received: out of the way
    throttle_update(aws, 2)

    claimed = store.claim(2, 30, ids=[first, second])

    assert [j.id for j in claimed] == [first]  # handed to the worker, to run now
    job = store.get(second)
    assert job is not None and job.state == JobState.QUEUED and job.attempts == 0
    # The caller acknowledges the messages of jobs it did not claim (they look
    # redundant), so the store sends the one it could not claim again.
    assert aws.messages() == [second]


def test_a_throttled_claim_after_the_batch_transaction_keeps_the_batch(
    aws: Aws, clock: FakeClock
) -> None:
    """Three ids: two claimed in one transaction, then a job whose lease expired
    takes the one-at-a-time path, and that UpdateItem is throttled."""
    store: DynamoStore = aws.store(clock, reap_every=3600.0)  # no sweep inside this claim
    expired = add(store, clock)
    assert [j.id for j in store.claim(1, 5, ids=[expired])] == [expired]
    clock.advance(10)  # its lease has lapsed; the reaper has not run since
    ready = [add(store, clock), add(store, clock)]
    aws.messages()
    throttle_update(aws, 1)

    claimed = store.claim(3, 30, ids=[*ready, expired])

    assert sorted(j.id for j in claimed) == sorted(ready)
    for job_id in ready:
        job = store.get(job_id)
        assert job is not None and job.state == JobState.RUNNING and job.attempts == 1
    assert aws.messages() == [expired]


def test_a_claim_throttled_before_it_claims_anything_still_raises(
    aws: Aws, clock: FakeClock
) -> None:
    """Nothing claimed: the error is the caller's (its messages come back)."""
    from chalicelib.errors import StoreUnavailable

    store: DynamoStore = aws.store(clock)
    first, second = add(store, clock), add(store, clock)
    throttle_update(aws, 1)
    with pytest.raises(StoreUnavailable):
        store.claim(2, 30, ids=[first, second])
    for job_id in (first, second):
        job = store.get(job_id)
        assert job is not None and job.state == JobState.QUEUED and job.attempts == 0
