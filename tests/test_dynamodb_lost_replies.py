"""S3 objects behind a DynamoDB write whose reply was lost.

A payload or result too big for its record goes to S3 first, then the record that
points at it is written. When that write fails, the object is deleted again: the
record never pointed at it. But a write that fails without an answer (the reply
lost: a read timeout, a reset connection, after botocore's retries) may have been
applied, and a completion written again after such a failure (the worker holds it
through an outage and writes it once the store is back) is refused because the
first write did land. Deleting the object then left a job whose record names an
object that is gone: a succeeded job whose result reads `result_missing`, a
created job that is buried as `payload_missing` when claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable, UncertainWrite
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import DynamoConfig
from tests.factories import new_job, stored, token
from tests.test_dynamodb import LEASE, Aws


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        yield Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket"))


def big(store: DynamoStore, what: str) -> dict[str, str]:
    return {what: "x" * (store.config.offload_bytes + 10)}


def lost_reply(store: DynamoStore, replayed: bool) -> Callable[[], None]:
    """The next TransactWriteItems is applied, and then either its reply is lost for
    good (ReadTimeoutError: botocore gave up) or botocore sends it again and the
    resend is refused (moto does not match ClientRequestToken as DynamoDB does).
    Returns what puts the client back."""
    real = store._tx.ddb.transact_write_items
    used: list[bool] = []

    def applied_reply_lost(**kwargs: Any) -> Any:
        if used:
            return real(**kwargs)
        used.append(True)
        real(**kwargs)  # applied
        if replayed:
            return real(**kwargs)
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    store._tx.ddb.transact_write_items = applied_reply_lost  # type: ignore[method-assign]

    def restore() -> None:
        store._tx.ddb.transact_write_items = real  # type: ignore[method-assign]

    return restore


@pytest.mark.parametrize("replayed", [False, True], ids=["reply-lost", "resent-and-refused"])
def test_a_finish_whose_reply_was_lost_keeps_its_result_object(
    aws: Aws, clock: FakeClock, replayed: bool
) -> None:
    store = aws.store(clock)
    job_id = store.add([new_job(clock)])[0].job.id
    [job] = store.claim(1, LEASE)
    result = big(store, "out")
    done = Completion(job_id, token(job), JobState.SUCCEEDED, result)
    restore = lost_reply(store, replayed)
    try:
        if replayed:
            store.finish([done])
        else:
            with pytest.raises(StoreUnavailable):
                store.finish([done])
    finally:
        restore()
    # The worker writes a completion it could not write again once the store answers:
    # refused now, since the first write landed.
    assert store.finish([done]) == [False]
    finished = stored(store, job_id)
    assert finished.state is JobState.SUCCEEDED
    assert finished.result == result
    assert len(aws.objects()) == 1


def test_an_add_whose_reply_was_lost_keeps_its_payload_object(aws: Aws, clock: FakeClock) -> None:
    """The client was answered 503 and sends the enqueue again with its idempotency key
    (spool_client always sends one): it gets the job the first add made, which runs."""
    store = aws.store(clock)
    payload = big(store, "blob")
    first = new_job(clock, payload=payload, idempotency_key="k-1")
    restore = lost_reply(store, replayed=False)
    try:
        with pytest.raises(StoreUnavailable):
            store.add([first])
    finally:
        restore()
    [again] = store.add([new_job(clock, payload=payload, idempotency_key="k-1")])
    assert not again.created and again.job.id == first.id
    assert stored(store, first.id).payload == payload
    [job] = store.claim(1, LEASE)
    assert job.id == first.id and job.payload == payload


def test_a_write_refused_outright_still_leaves_no_object(aws: Aws, clock: FakeClock) -> None:
    """What the read-back must not undo: a finish refused because another worker owns
    the job, and an add whose transaction DynamoDB answered with an error, leave no
    object behind."""
    store = aws.store(clock)
    job_id = store.add([new_job(clock)])[0].job.id
    store.claim(1, LEASE)
    stale = Completion(job_id, "not-the-lease", JobState.SUCCEEDED, big(store, "out"))
    assert store.finish([stale]) == [False]
    assert aws.objects() == []


def answered(code: str, status: int, operation: str) -> Callable[..., Any]:
    """A client call that fails as AWS answers `code` with `status` (after botocore's
    retries: the last answer is what the caller sees)."""

    def call(**_: Any) -> Any:
        error: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(error, operation)

    return call


# A server error leaves a write's outcome unknown; a throttle or a conflict is AWS
# saying it did not apply it (the one exception: TransactionInProgressException, a
# resend of the same ClientRequestToken that met the first still running).
UNCERTAIN = [("InternalServerError", 500), ("ServiceUnavailable", 503)]
UNCERTAIN += [("TransactionInProgressException", 400)]
REFUSED = [("ThrottlingException", 400), ("ProvisionedThroughputExceededException", 400)]
REFUSED += [("RequestLimitExceeded", 400), ("LimitExceededException", 400)]


@pytest.mark.parametrize(("code", "status"), UNCERTAIN + REFUSED)
def test_an_add_answered_with_an_error_may_have_been_applied_only_after_a_server_error(
    aws: Aws, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    store = aws.store(clock)
    failing = answered(code, status, "TransactWriteItems")
    monkeypatch.setattr(store.ddb, "transact_write_items", failing)
    with pytest.raises(StoreUnavailable) as raised:
        store.add([new_job(clock)])
    if (code, status) in UNCERTAIN:
        assert isinstance(raised.value, UncertainWrite), raised.value
        assert str(raised.value).startswith(f"DynamoDB answered {code}, so this")
        assert "may have been applied" in str(raised.value)
    else:
        assert not isinstance(raised.value, UncertainWrite), raised.value
        assert str(raised.value) == f"DynamoDB is unavailable: {code}"


@pytest.mark.parametrize("failure", ["server", "lost"])
def test_a_read_that_fails_stays_a_plain_503(
    aws: Aws, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Nothing a read sends changes the table: its 503 never says "may have been
    applied", however it failed."""
    store = aws.store(clock)
    job_id = store.add([new_job(clock)])[0].job.id

    def lost(**_: Any) -> Any:
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    reading = answered("InternalServerError", 500, "GetItem") if failure == "server" else lost
    monkeypatch.setattr(store.ddb, "get_item", reading)
    with pytest.raises(StoreUnavailable) as raised:
        store.get(job_id)
    assert not isinstance(raised.value, UncertainWrite), raised.value


def test_each_aws_call_of_the_store_says_whether_it_writes() -> None:
    """Every JobStore method DynamoStore maps AWS errors for is a read or a write: a
    new one must say which (aws_errors(write=...)), and these are the writes."""
    kinds = {
        name: getattr(method, "aws_call", None)
        for name, method in vars(DynamoStore).items()
        if callable(method) and hasattr(method, "__wrapped__")
    }
    writes = {name for name, kind in kinds.items() if kind == "write"}
    assert writes == {
        "add", "claim", "reap_expired", "start", "finish", "extend_lease", "cancel",
        "redrive", "purge", "discard", "release_due", "take_tokens", "beat",
        "forget_worker", "claim_webhooks", "finish_webhook",
    }  # fmt: skip
    assert {kind for kind in kinds.values()} == {"read", "write"}
    assert kinds["get"] == kinds["cache_epoch"] == "read"


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_keyless_add_whose_resend_was_refused_is_the_add_that_landed(
    aws: Aws, clock: FakeClock, jobs: int
) -> None:
    """Botocore sends a transaction again after its answer was lost; a stand-in that
    does not match ClientRequestToken (moto_server, for one) refuses the resend, every
    fresh job id being taken by the first try. A keyed add found its own key; a
    keyless one wrote again five times and answered 503 "idempotency keys kept
    changing under this add", the jobs stored, so a client that retried made them
    twice. The add now sees its own records and answers them, created."""
    store = aws.store(clock)
    news = [new_job(clock, payload={"n": i}) for i in range(jobs)]
    restore = lost_reply(store, replayed=True)
    try:
        results = store.add(news)
    finally:
        restore()
    assert [(r.job.id, r.created) for r in results] == [(j.id, True) for j in news]
    assert sorted(j.id for j in store.list_jobs(JobQuery()).jobs) == sorted(j.id for j in news)
