"""A claim under limits on DynamoDB strands none of the jobs it wrote `running`.

Two ways it did (stop 42): the claim's transaction committed and the read of the
claimed jobs that followed failed five times, and a claim of more than one
transaction's worth of jobs (98 under one limit: 100 actions less the limit item and
the turns item) failed in a later transaction after the earlier ones had committed.
Either way the claim raised, so no worker ran the jobs it had claimed: each sat
`running` with an attempt spent until its lease lapsed and the reaper spent
another. Against moto in-process, one claim at a time (docs/testing.md on why
claims that race through transactions are not tested against moto).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.models import JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_txn import TRANSACTION_ACTIONS
from tests import test_dynamodb
from tests.factories import new_job, stored
from tests.test_dynamodb import Aws

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixture.
aws = test_dynamodb.aws


def throttled(operation: str) -> ClientError:
    code = "ProvisionedThroughputExceededException"
    return ClientError({"Error": {"Code": code, "Message": "slow down"}}, operation)


def add_many(store: DynamoStore, clock: FakeClock, count: int, **fields: Any) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 100):
        batch = [new_job(clock, **fields) for _ in range(min(100, count - start))]
        ids += [r.job.id for r in store.add(batch)]
    return ids


def states(store: DynamoStore, ids: list[str]) -> Counter[str]:
    return Counter(stored(store, i).state.value for i in ids)


def watch_transactions(aws: Aws) -> list[int]:
    """The number of actions of every TransactWriteItems sent from now on."""
    sizes: list[int] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["TransactItems"]))

    aws.ddb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", seen)
    return sizes


def test_reads_failing_after_the_claim_commits_strand_nothing(aws: Aws, clock: FakeClock) -> None:
    """Every BatchGetItem after the claim's transaction is throttled (more than the
    five tries the read-back had): the jobs claimed still reach the worker."""
    store = aws.store(clock)
    ids = add_many(store, clock, 3, type_="resize")
    policy = ClaimPolicy(limits=(Limit("type", "resize", concurrency=3),))
    committed: list[bool] = []

    def refuse_reads(**_: Any) -> None:
        if committed:
            raise throttled("BatchGetItem")

    aws.ddb.meta.events.register(
        "after-call.dynamodb.TransactWriteItems", lambda **_: committed.append(True)
    )
    aws.ddb.meta.events.register("before-call.dynamodb.BatchGetItem", refuse_reads)

    claimed = store.claim(3, 30, policy=policy)

    assert committed  # the claim did write its jobs
    assert sorted(j.id for j in claimed) == sorted(ids)  # and handed every one over
    assert all(j.state is JobState.RUNNING and j.attempts == 1 for j in claimed)
    assert all(j.lease_token == stored(store, j.id).lease_token for j in claimed)
    aws.ddb.meta.events.unregister("before-call.dynamodb.BatchGetItem", refuse_reads)
    assert store.claim(3, 30, policy=policy) == []  # the limit counts them: full


def test_a_claim_whose_read_before_the_write_fails_claims_nothing(
    aws: Aws, clock: FakeClock
) -> None:
    """The reads a claim needs come before its write: failing, they leave every job
    waiting with no attempt spent and no limit slot taken."""
    store = aws.store(clock)
    ids = add_many(store, clock, 3, type_="resize")
    policy = ClaimPolicy(limits=(Limit("type", "resize", concurrency=3),))

    def refuse_reads(**_: Any) -> None:
        raise throttled("BatchGetItem")

    aws.ddb.meta.events.register("before-call.dynamodb.BatchGetItem", refuse_reads)
    with pytest.raises(Exception):  # noqa: B017 - the store's own error for a throttle
        store.claim(3, 30, policy=policy)
    aws.ddb.meta.events.unregister("before-call.dynamodb.BatchGetItem", refuse_reads)
    assert states(store, ids) == Counter({"queued": 3})
    assert {stored(store, i).attempts for i in ids} == {0}
    assert len(store.claim(3, 30, policy=policy)) == 3


@pytest.mark.parametrize("fair", [False, True], ids=["limits", "limits+fair"])
def test_a_large_limited_claim_fits_each_transaction_and_keeps_the_limit(
    aws: Aws, clock: FakeClock, fair: bool
) -> None:
    """250 due jobs under a concurrency limit of 230 and a rate: a claim of 250 takes
    230 in transactions of at most 100 actions (jobs, limit items, turns)."""
    store = aws.store(clock)
    ids: list[str] = []
    for tenant in ("t1", "t2"):
        ids += add_many(store, clock, 125, type_="resize", tenant=tenant)
    limits = (
        Limit("type", "resize", concurrency=230),
        Limit("queue", "default", rate=Rate(1000, 60.0)),
    )
    policy = ClaimPolicy(limits=limits, fair=fair)
    sizes = watch_transactions(aws)

    claimed = store.claim(250, 30, policy=policy)

    assert len(claimed) == len({j.id for j in claimed}) == 230
    assert sizes and max(sizes) <= TRANSACTION_ACTIONS and len(sizes) >= 3
    assert states(store, ids) == Counter({"running": 230, "queued": 20})
    assert store.claim(250, 30, policy=policy) == []  # full: nothing more starts


def _refuse_from_the_second_transaction(aws: Aws) -> tuple[list[int], Any]:
    """Throttle every TransactWriteItems after the first; the sizes of those sent, and
    the hook (to unregister)."""
    sent: list[int] = []

    def second_refused(params: dict[str, Any], **_: Any) -> None:
        sent.append(len(params["TransactItems"]))
        if len(sent) >= 2:
            raise throttled("TransactWriteItems")

    aws.ddb.meta.events.register(
        "provide-client-params.dynamodb.TransactWriteItems", second_refused
    )
    return sent, second_refused


def test_a_later_transaction_failing_keeps_the_earlier_ones_claims(
    aws: Aws, clock: FakeClock
) -> None:
    """A claim of 150 under a limit: the first transaction (98 jobs) commits, the
    second is throttled. The 98 reach the worker; the other 52 wait, no attempt spent."""
    store = aws.store(clock)
    ids = add_many(store, clock, 150, type_="resize")
    policy = ClaimPolicy(limits=(Limit("type", "resize", concurrency=500),))
    sent, second_refused = _refuse_from_the_second_transaction(aws)

    claimed = store.claim(150, 30, policy=policy)

    assert len(claimed) == 98 and len(sent) >= 2
    running = {i for i in ids if stored(store, i).state is JobState.RUNNING}
    assert running == {j.id for j in claimed}
    waiting = [stored(store, i) for i in ids if i not in running]
    assert {(j.state, j.attempts) for j in waiting} == {(JobState.QUEUED, 0)}
    aws.ddb.meta.events.unregister(
        "provide-client-params.dynamodb.TransactWriteItems", second_refused
    )
    assert len(store.claim(150, 30, policy=policy)) == 52  # the rest, later


def test_a_named_claim_cut_short_sends_the_unclaimed_ids_again(aws: Aws, clock: FakeClock) -> None:
    """An SQS batch of 150 ids under a limit, the second transaction throttled: the
    caller acknowledges the messages of jobs it did not claim as redundant, so those
    jobs' ids are sent again (as the claim without a policy does)."""
    store = aws.store(clock)
    ids = add_many(store, clock, 150, type_="resize")
    aws.messages()  # the enqueue's messages, received: out of the way
    policy = ClaimPolicy(limits=(Limit("type", "resize", concurrency=500),))
    _refuse_from_the_second_transaction(aws)

    claimed = store.claim(150, 30, ids=ids, policy=policy)

    assert len(claimed) == 98
    again = set(aws.messages())
    assert again == set(ids) - {j.id for j in claimed}
