"""The DynamoDB store beyond the contract: its URL, delivery to SQS, S3 offload,
conditional writes under racing deliveries, TTL, and its failure modes. All
against moto in-process (tests/contract/ runs the contract itself)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.errors import PayloadTooLarge, StoreNotMigrated, StoreUnavailable
from chalicelib.models import Completion, CounterKey, JobState
from chalicelib.storage import open_store
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_aws import (
    INLINE_LIMIT,
    RECORD_LIMIT,
    DynamoConfig,
    create_resources,
    make_clients,
)
from chalicelib.storage.dynamodb_schema import idem_key, job_key
from chalicelib.storage.sqs_dispatch import MAX_DELAY_SECONDS, Unsent, delay_for
from tests.factories import new_job, stored, token

LEASE = 30.0


class Aws:
    """moto's clients, plus a count of the calls made through them by operation."""

    def __init__(self, config: DynamoConfig) -> None:
        self.config = config
        self.ddb, self.sqs, self.s3 = make_clients(config)
        create_resources(config, self.ddb, self.sqs, self.s3)
        self.calls: Counter[str] = Counter()
        for client in (self.ddb, self.sqs, self.s3):
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def store(self, clock: FakeClock, **overrides: Any) -> DynamoStore:
        fields = {**self.config.__dict__, **overrides}
        config = DynamoConfig(**fields)
        queue = self.sqs if config.queue else None
        bucket = self.s3 if config.bucket else None
        return DynamoStore(config, clock, ddb=self.ddb, sqs=queue, s3=bucket)

    @property
    def queue_url(self) -> str:
        return self.sqs.get_queue_url(QueueName="jobs")["QueueUrl"]

    def messages(self, wait: int = 0) -> list[str]:
        """Every visible message body, received (and so hidden) for the queue's timeout."""
        bodies: list[str] = []
        for _ in range(20):
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            ).get("Messages", [])
            if not got:
                break
            bodies += [m["Body"] for m in got]
        return bodies

    def item(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.ddb.get_item(
            TableName="jobs", Key=job_key(job_id), ConsistentRead=True
        ).get("Item", {})
        return found

    def objects(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket="jobs-bucket").get("Contents", [])
        return sorted(o["Key"] for o in listed)


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        yield Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket"))


@pytest.fixture
def atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each request atomically; moto in-process does not lock, so
    racing threads could interleave inside one request. Serialize requests (not
    the store's logic): the races left are the ones DynamoDB allows."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.Lock()
    real = BotocoreStubber.__call__

    def one_at_a_time(self: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return real(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", one_at_a_time)


@pytest.fixture
def store(aws: Aws, clock: FakeClock) -> DynamoStore:
    return aws.store(clock)


def record_sends(store: DynamoStore, really: bool = True) -> list[tuple[str, float]]:
    """What the store hands its dispatcher, (id, delay) pairs; sent on to SQS if really."""
    sent: list[tuple[str, float]] = []
    assert store.dispatch is not None
    real = store.dispatch.send_sorted

    def send(items: Any) -> Unsent:
        sent.extend((job_id, delay) for job_id, delay, _ in items)
        return real(items) if really else Unsent([], [])

    store.dispatch.send_sorted = send  # type: ignore[method-assign]
    return sent


def add(store: DynamoStore, clock: FakeClock, **fields: Any) -> str:
    return store.add([new_job(clock, **fields)])[0].job.id


# -- configuration -------------------------------------------------------------------


def test_url_names_table_queue_bucket_endpoint_and_options() -> None:
    config = DynamoConfig.from_url(
        "dynamodb://spool-jobs?queue=https://sqs.eu-west-1.amazonaws.com/123/q&bucket=b"
        "&endpoint=http://127.0.0.1:5000&region=eu-west-1&shards=4&reap_every=30"
    )
    assert config.table == "spool-jobs"
    assert config.queue == "https://sqs.eu-west-1.amazonaws.com/123/q"
    assert (config.bucket, config.endpoint, config.region) == (
        "b",
        "http://127.0.0.1:5000",
        "eu-west-1",
    )
    assert (config.shards, config.reap_every, config.create) == (4, 30.0, False)
    bare = DynamoConfig.from_url("dynamodb://t")
    assert (bare.queue, bare.bucket, bare.shards) == (None, None, 1)


@pytest.mark.parametrize(
    "url", ["dynamodb://", "dynamodb://t?shards=0", "dynamodb://t?offload_bytes=999999999"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        DynamoConfig.from_url(url)


def test_open_store_routes_dynamodb_urls_and_creates_resources(clock: FakeClock) -> None:
    with mock_aws():
        store = open_store("dynamodb://made?queue=made&bucket=made-bucket&create=1", clock)
        assert isinstance(store, DynamoStore)
        job = store.add([new_job(clock)])[0].job
        assert store.get(job.id) == job
        assert store.dispatch is not None and store.blobs is not None
        store.close()


def test_boto3_is_imported_only_when_the_dynamodb_store_is_chosen() -> None:
    code = (
        "import sys, app, chalicelib.events, chalicelib.runtime, chalicelib.storage, "
        "local.sqs_poller\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'too early'\n"
        "import chalicelib.storage.dynamodb\n"
        "assert 'boto3' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_missing_table_is_store_not_migrated(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock, table="no-such-table")
    with pytest.raises(StoreNotMigrated):
        store.get("j_" + "0" * 32)


def test_an_unreachable_endpoint_is_store_unavailable(clock: FakeClock) -> None:
    config = DynamoConfig(table="t", endpoint="http://127.0.0.1:9")  # a closed port
    store = DynamoStore(config, clock)
    with pytest.raises(StoreUnavailable):
        store.get("j_" + "0" * 32)
    store.close()


# -- delivery ------------------------------------------------------------------------------


def test_add_sends_ids_ten_to_a_request(aws: Aws, store: DynamoStore, clock: FakeClock) -> None:
    ids = {j.job.id for j in store.add([new_job(clock) for _ in range(25)])}
    assert aws.calls["SendMessageBatch"] == 3
    assert aws.calls["TransactWriteItems"] == 1  # 25 jobs and their counter: one transaction
    assert set(aws.messages()) == ids


def test_delays_up_to_fifteen_minutes_ride_on_the_message(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    sent = record_sends(store)
    soon = add(store, clock, delay=90)
    later = add(store, clock, delay=MAX_DELAY_SECONDS + 60)
    assert [(i, delay_for(d)) for i, d in sent] == [(soon, 90)]
    assert aws.messages() == []  # the 90 s delay is SQS's now
    assert "msg_at" in aws.item(soon) and "msg_at" not in aws.item(later)

    # The scheduled release sends the long wait once it falls within SQS's reach.
    assert store.release_due() == 0
    clock.advance(61)
    assert store.release_due() == 1
    assert sent[-1][0] == later and delay_for(sent[-1][1]) == MAX_DELAY_SECONDS - 1
    assert store.release_due() == 0  # marked as sent: not sent twice


def test_a_retry_sends_the_id_with_its_backoff(store: DynamoStore, clock: FakeClock) -> None:
    sent = record_sends(store, really=False)
    job_id = add(store, clock)
    [job] = store.claim(1, LEASE)
    retry_at = clock.now() + timedelta(seconds=42)
    store.finish([Completion(job.id, token(job), JobState.RETRYING, retry_at=retry_at)])
    assert [(i, delay_for(d)) for i, d in sent] == [(job_id, 0), (job_id, 42)]


def test_lost_messages_are_sent_again_by_the_release(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock)
    aws.sqs.purge_queue(QueueUrl=aws.queue_url)  # the message is gone
    assert store.release_due() == 0  # not overdue yet: the message may be in a backlog
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 1
    assert aws.messages() == [job_id]
    assert store.release_due() == 0


def test_a_backlog_still_on_the_queue_is_not_sent_again(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Jobs waiting long past their message because the queue is behind, not because
    the message was lost: re-sending each doubled the backlog every lost_after."""
    ids = {add(store, clock) for _ in range(6)}
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 0  # six messages for six jobs: none lost
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 0
    # Two messages go missing: two jobs, the longest waiting, are sent again.
    got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=2)["Messages"]
    for message in got:
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert store.release_due() == 2
    # (SQS cannot say which: the oldest planned go, and a job may now have two.)
    assert len(aws.messages()) == 6 and len(ids) == 6


def test_without_the_queue_s_depth_every_overdue_job_is_sent_again(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    add(store, clock)
    add(store, clock)
    assert store.dispatch is not None
    store.dispatch.depth = lambda: None  # type: ignore[method-assign]
    clock.advance(store.config.lost_after + 1)
    assert store.release_due() == 2


def test_a_queue_that_refuses_ids_is_counted_retried_and_shown_on_health(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    store.check_writable()  # nothing failed yet
    job_id = add(store, clock, delay=MAX_DELAY_SECONDS + 30)  # released later, not now
    queue_url = aws.queue_url
    aws.sqs.delete_queue(QueueUrl=queue_url)
    clock.advance(60)
    assert store.release_due() == 0  # nothing was sent: not counted as released
    assert "msg_at" not in aws.item(job_id)  # its mark taken back: tried again next run
    with pytest.raises(StoreUnavailable, match="sending job ids to the SQS queue failed"):
        store.check_writable()
    aws.sqs.create_queue(QueueName="jobs")
    assert store.release_due() == 1  # the next run, not lost_after later
    store.check_writable()  # a send went through: healthy again


def test_expired_leases_are_reaped_and_sent_by_the_release(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock, max_attempts=3)
    assert aws.messages() == [job_id]
    store.claim(1, LEASE)
    clock.advance(LEASE + 1)
    assert store.release_due() == 1  # reaped and sent: counted as released
    job = store.get(job_id)
    assert job is not None and job.state is JobState.RETRYING
    assert aws.messages() == [job_id]


def test_an_early_message_is_sent_again_for_when_the_job_is_due(
    store: DynamoStore, clock: FakeClock
) -> None:
    sent = record_sends(store, really=False)
    job_id = add(store, clock, delay=30)
    clock.advance(10)
    assert store.claim(5, LEASE, ids=[job_id]) == []
    assert (sent[-1][0], delay_for(sent[-1][1])) == (job_id, 20)


def test_without_a_queue_nothing_is_sent(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock, queue=None)
    add(store, clock)
    assert store.dispatch is None and store.release_due() == 0
    assert aws.calls["SendMessageBatch"] == 0


# -- conditional writes: racing deliveries ------------------------------------------------


@pytest.mark.usefixtures("atomic_requests")
def test_two_deliveries_of_one_message_never_both_finish(aws: Aws, clock: FakeClock) -> None:
    first, second = aws.store(clock), aws.store(clock)  # two Lambda containers
    job_id = add(first, clock)
    results: list[list[Any]] = []
    barrier = threading.Barrier(2)

    def deliver(store: DynamoStore) -> None:
        barrier.wait()
        results.append(store.claim(1, LEASE, ids=[job_id]))

    threads = [threading.Thread(target=deliver, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r) for r in results) == [0, 1]
    [winner] = [r[0] for r in results if r]
    done = [
        s.finish([Completion(job_id, winner.lease_token, JobState.SUCCEEDED, result=i)])[0]
        for i, s in enumerate((first, second))
    ]
    assert done == [True, False]
    assert first.counters()[CounterKey("default", "echo", "succeeded")] == 1
    assert stored(first, job_id).attempts == 1


def test_a_redelivered_message_reaps_an_expired_lease_itself(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock, reap_every=3600)  # no sweep: only the message can reap
    job_id = add(store, clock, max_attempts=3)
    [first] = store.claim(1, LEASE, ids=[job_id])
    clock.advance(LEASE + 1)
    [second] = store.claim(1, LEASE, ids=[job_id])
    assert second.attempts == 2 and second.lease_token != first.lease_token
    totals = {k.event: v for k, v in store.counters().items()}
    assert totals == {"enqueued": 1, "failed": 1, "retried": 1}


@pytest.mark.usefixtures("atomic_requests")
def test_many_workers_claim_each_job_once(aws: Aws, clock: FakeClock) -> None:
    stores = [aws.store(clock) for _ in range(4)]
    ids = {r.job.id for r in stores[0].add([new_job(clock) for _ in range(12)])}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(store: DynamoStore) -> None:
        while jobs := store.claim(2, LEASE):
            with lock:
                claimed.extend(j.id for j in jobs)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)


# -- idempotency keys ---------------------------------------------------------------------------


@pytest.mark.usefixtures("atomic_requests")
def test_two_stores_adding_one_key_at_once_store_one_job(aws: Aws, clock: FakeClock) -> None:
    stores = [aws.store(clock) for _ in range(3)]
    results: list[Any] = []
    barrier = threading.Barrier(3)

    def enqueue(store: DynamoStore) -> None:
        barrier.wait()
        results.append(store.add([new_job(clock, idempotency_key="once")])[0])

    threads = [threading.Thread(target=enqueue, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.created for r in results) == [False, False, True]
    assert len({r.job.id for r in results}) == 1
    assert sum(stores[0].counts().values()) == 1


def test_a_purged_jobs_key_can_be_used_again(store: DynamoStore, clock: FakeClock) -> None:
    first = store.add([new_job(clock, idempotency_key="k")])[0].job
    [claimed] = store.claim(1, LEASE)
    store.finish([Completion(first.id, token(claimed), JobState.SUCCEEDED)])
    clock.advance(10)
    assert store.purge(clock.now()) == 1
    again = store.add([new_job(clock, idempotency_key="k")])[0]
    assert again.created and again.job.id != first.id


def test_a_key_whose_job_vanished_is_taken_over(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """TTL may delete a finished job before its key item: the key is then free."""
    first = store.add([new_job(clock, idempotency_key="k")])[0].job
    aws.ddb.delete_item(TableName="jobs", Key=job_key(first.id))
    again = store.add([new_job(clock, idempotency_key="k")])[0]
    assert again.created and again.job.id != first.id
    replay = store.add([new_job(clock, idempotency_key="k")])[0]
    assert not replay.created and replay.job.id == again.job.id


def test_a_batch_too_big_for_one_transaction_dedupes_against_stored_keys(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    old = store.add([new_job(clock, idempotency_key="k7")])[0].job
    batch = [new_job(clock, idempotency_key=f"k{i}") for i in range(80)]  # 160 writes
    results = store.add(batch)
    assert [r.created for r in results] == [i != 7 for i in range(80)]
    assert results[7].job.id == old.id
    assert aws.calls["TransactWriteItems"] >= 3
    assert store.counters()[CounterKey("default", "echo", "enqueued")] == 80


def test_a_failed_multi_transaction_add_leaves_nothing(
    aws: Aws, store: DynamoStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = aws.ddb.transact_write_items
    calls = {"n": 0}

    def second_fails(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "x"}}, "Tw")
        return real(**kwargs)

    monkeypatch.setattr(aws.ddb, "transact_write_items", second_fails)
    with pytest.raises(ClientError):
        store.add([new_job(clock, idempotency_key=f"k{i}") for i in range(80)])
    monkeypatch.setattr(aws.ddb, "transact_write_items", real)
    assert store.counts() == {}
    assert store.counters().get(CounterKey("default", "echo", "enqueued"), 0) == 0
    assert store.add([new_job(clock, idempotency_key="k3")])[0].created  # key was released


DAY = 86400


def expire_items(aws: Aws, clock: FakeClock) -> list[str]:
    """What DynamoDB's TTL does (moto does not): delete every item whose expires_at
    has passed. Returns the partition keys deleted."""
    now = clock.now().timestamp()
    gone: list[str] = []
    for item in aws.ddb.scan(TableName="jobs")["Items"]:
        if "expires_at" in item and int(item["expires_at"]["N"]) < now:
            aws.ddb.delete_item(TableName="jobs", Key={"pk": item["pk"], "sk": item["sk"]})
            gone.append(item["pk"]["S"])
    return gone


def key_item(aws: Aws, key: str, tenant: str = "default") -> dict[str, Any]:
    found: dict[str, Any] = aws.ddb.get_item(
        TableName="jobs", Key=idem_key(tenant, key), ConsistentRead=True
    ).get("Item", {})
    return found


def test_a_key_outlives_its_job_s_wait_and_its_retries(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Was: the key item expired retention after the job was due, whatever became of
    the job; a job still waiting (or retrying) then lost its key to TTL and the same
    enqueue made a second job. Now a key has no TTL until its job finishes."""
    first = store.add([new_job(clock, idempotency_key="k")])[0].job
    clock.advance(45 * DAY)  # never claimed: no worker serves its type
    expire_items(aws, clock)
    again = store.add([new_job(clock, idempotency_key="k")])[0]
    assert not again.created and again.job.id == first.id
    assert "expires_at" not in key_item(aws, "k")


def test_a_redriven_job_keeps_its_key_until_it_finishes_again(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Was (a tester's report): redrive removed the job's TTL but not its key's, so
    TTL deleted the key under a live job and a retried enqueue made a duplicate.
    The key item's expires_at now moves with the job's, in the same transaction."""
    first = store.add([new_job(clock, idempotency_key="k")])[0].job
    [job] = store.claim(1, LEASE)
    store.finish([Completion(first.id, token(job), JobState.DEAD, error="x")])
    assert key_item(aws, "k")["expires_at"] == aws.item(first.id)["expires_at"]
    clock.advance(20 * DAY)
    store.redrive([first.id])
    clock.advance(15 * DAY)  # past the first finish's retention
    expire_items(aws, clock)
    again = store.add([new_job(clock, idempotency_key="k")])[0]
    assert not again.created and again.job.id == first.id
    assert "expires_at" not in key_item(aws, "k")
    [job] = store.claim(1, LEASE)
    store.finish([Completion(first.id, token(job), JobState.SUCCEEDED)])
    assert key_item(aws, "k")["expires_at"] == aws.item(first.id)["expires_at"]
    again = store.add([new_job(clock, idempotency_key="k")])[0]
    assert not again.created and again.job.id == first.id
    clock.advance(30 * DAY + 1)  # both go together: the key is then free
    gone = [pk for pk in expire_items(aws, clock) if pk[:2] in ("I#", "J#")]
    assert sorted(gone) == ["I#default", f"J#{first.id}"]
    assert store.add([new_job(clock, idempotency_key="k")])[0].created


def test_every_end_of_a_keyed_job_dates_its_key_with_it(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Cancel, a reap of the last attempt and a batch of finishes set the key's TTL
    to the job's; an unkeyed job's finish writes no key item."""
    cancelled = store.add([new_job(clock, idempotency_key="c")])[0].job
    store.cancel(cancelled.id)
    assert key_item(aws, "c")["expires_at"] == aws.item(cancelled.id)["expires_at"]
    reaped = store.add([new_job(clock, idempotency_key="r", max_attempts=1)])[0].job
    store.claim(1, LEASE)
    clock.advance(LEASE + 1)
    assert store.reap_expired() == 1
    assert aws.item(reaped.id)["state"]["S"] == "dead"
    assert key_item(aws, "r")["expires_at"] == aws.item(reaped.id)["expires_at"]
    batch = store.add([new_job(clock, idempotency_key=f"b{i}") for i in range(3)])
    plain = add(store, clock)
    claimed = store.claim(4, LEASE)
    assert {j.id for j in claimed} == {*(r.job.id for r in batch), plain}
    written: list[str] = []

    def keys_written(params: dict[str, Any], **_: Any) -> None:
        for action in params.get("TransactItems", []):
            for kind in action.values():
                written.append(kind["Key"]["pk"]["S"] if "Key" in kind else "")

    aws.ddb.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", keys_written)
    store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    assert written.count("I#default") == 3  # one per keyed job, none for the plain one
    for i, r in enumerate(batch):
        assert key_item(aws, f"b{i}")["expires_at"] == aws.item(r.job.id)["expires_at"]


def test_a_key_item_gone_or_held_by_another_job_never_fails_the_finish(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Keys from before the fix could be TTL'd under their job, and the key then taken
    by a second job: the first job's finish still applies, and leaves that key to its
    holder; a key item simply gone is written back, naming its job."""
    first = store.add([new_job(clock, idempotency_key="k")])[0].job
    aws.ddb.delete_item(TableName="jobs", Key=idem_key("default", "k"))
    second = store.add([new_job(clock, idempotency_key="k")])[0].job
    gone = store.add([new_job(clock, idempotency_key="g")])[0].job
    aws.ddb.delete_item(TableName="jobs", Key=idem_key("default", "g"))
    claimed = {j.id: j for j in store.claim(3, LEASE)}
    done = store.finish(
        [Completion(i, token(claimed[i]), JobState.SUCCEEDED) for i in (first.id, gone.id)]
    )
    assert done == [True, True]
    assert key_item(aws, "k")["job_id"]["S"] == second.id
    assert "expires_at" not in key_item(aws, "k")  # its own job is still running
    assert key_item(aws, "g")["job_id"]["S"] == gone.id
    assert key_item(aws, "g")["expires_at"] == aws.item(gone.id)["expires_at"]


# -- S3 offload -------------------------------------------------------------------------------


def test_big_payloads_and_results_live_in_s3_and_come_back(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    big = {"blob": "x" * (store.config.offload_bytes + 10)}
    job_id = add(store, clock, payload=big)
    item = aws.item(job_id)
    assert "payload" not in item and "payload_ref" in item
    assert stored(store, job_id).payload == big
    [job] = store.claim(1, LEASE)
    assert job.payload == big
    result = {"out": "y" * (store.config.offload_bytes + 10)}
    assert store.finish([Completion(job_id, token(job), JobState.SUCCEEDED, result)])
    assert "result_ref" in aws.item(job_id) and "result" not in aws.item(job_id)
    assert stored(store, job_id).result == result
    assert len(aws.objects()) == 2
    clock.advance(10)
    assert store.purge(clock.now()) == 1
    assert aws.objects() == []


def test_a_refused_finish_leaves_no_result_object(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock)
    store.claim(1, LEASE)
    result = {"out": "y" * (store.config.offload_bytes + 10)}
    stale = Completion(job_id, "not-the-lease", JobState.SUCCEEDED, result=result)
    assert store.finish([stale]) == [False]
    assert aws.objects() == []


def test_small_values_stay_in_the_record(aws: Aws, store: DynamoStore, clock: FakeClock) -> None:
    job_id = add(store, clock, payload={"small": True})
    assert json.loads(aws.item(job_id)["payload"]["S"]) == {"small": True}
    assert aws.objects() == []


def test_without_a_bucket_oversized_values_are_refused_clearly(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock, bucket=None)
    with pytest.raises(PayloadTooLarge):
        add(store, clock, payload={"blob": "x" * (INLINE_LIMIT + 1)})
    assert store.counts() == {}
    job_id = add(store, clock)
    [job] = store.claim(1, LEASE)
    huge = Completion(job_id, token(job), JobState.SUCCEEDED, "z" * RECORD_LIMIT)
    assert store.finish([huge]) == [True]
    done = store.get(job_id)
    assert done is not None and done.state is JobState.DEAD
    assert "too big" in (done.last_error or "")


# -- TTL ------------------------------------------------------------------------------------------


def test_finished_jobs_carry_a_ttl_that_redrive_removes(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    job_id = add(store, clock)
    assert "expires_at" not in aws.item(job_id)
    [job] = store.claim(1, LEASE)
    store.finish([Completion(job_id, token(job), JobState.DEAD, error="x")])
    expires = int(aws.item(job_id)["expires_at"]["N"])
    assert expires == int(clock.now().timestamp()) + 30 * 86400
    store.redrive([job_id])
    assert "expires_at" not in aws.item(job_id)
    ttl = aws.ddb.describe_time_to_live(TableName="jobs")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_without_a_bucket_a_result_gets_the_room_its_payload_leaves(
    aws: Aws, clock: FakeClock
) -> None:
    store = aws.store(clock, bucket=None)
    small = add(store, clock)
    big = add(store, clock, payload={"blob": "x" * 250_000})
    jobs = {j.id: j for j in store.claim(2, LEASE)}
    result = "r" * 150_000
    done = store.finish(
        [
            Completion(small, token(jobs[small]), JobState.SUCCEEDED, result),
            Completion(big, token(jobs[big]), JobState.SUCCEEDED, result),
        ]
    )
    assert done == [True, True]
    assert stored(store, small).result == result
    buried = store.get(big)
    assert buried is not None and buried.state is JobState.DEAD and buried.result is None


def test_a_failed_send_does_not_fail_the_add(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """The job is stored either way; the release sends its id once it is overdue."""
    assert store.dispatch is not None
    aws.sqs.delete_queue(QueueUrl=store.dispatch.queue_url)
    assert store.dispatch.send([("j_x", 0)]) == ["j_x"]
    job_id = add(store, clock)
    job = store.get(job_id)
    assert job is not None and job.state is JobState.QUEUED


# -- claiming an SQS batch: one read and one transaction ----------------------------------


def test_a_batch_of_named_jobs_is_claimed_with_one_read_and_one_transaction(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    ids = [r.job.id for r in store.add([new_job(clock) for _ in range(8)])]
    aws.calls.clear()
    claimed = store.claim(10, LEASE, ids=ids)
    assert sorted(j.id for j in claimed) == sorted(ids)
    assert aws.calls["BatchGetItem"] == 1 and aws.calls["TransactWriteItems"] == 1
    assert aws.calls["UpdateItem"] == 0
    # What the claim answers is what it wrote: nothing was read back.
    assert claimed == [store.get(j.id) for j in claimed]
    assert all(j.state is JobState.RUNNING and j.attempts == 1 for j in claimed)
    applied = store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    assert applied == [True] * 8
    assert store.claim(10, LEASE, ids=ids) == []  # finished: redundant messages


def test_a_batch_claim_settles_what_it_cannot_claim_without_writing(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    due = [add(store, clock) for _ in range(3)]
    leased = add(store, clock)
    store.claim(1, LEASE, ids=[leased])
    done = add(store, clock)
    [job] = store.claim(1, LEASE, ids=[done])
    store.finish([Completion(done, token(job), JobState.SUCCEEDED)])
    early = add(store, clock, delay=30)
    sent = record_sends(store, really=False)
    aws.calls.clear()
    claimed = store.claim(10, LEASE, ids=[*due, leased, done, early, "j_" + "0" * 32])
    assert sorted(j.id for j in claimed) == sorted(due)
    assert aws.calls["UpdateItem"] == 0 and aws.calls["TransactWriteItems"] == 1
    assert [job_id for job_id, _ in sent] == [early]  # again, for when it is due
    assert stored(store, leased).attempts == 1


def test_a_batch_claim_reaps_an_expired_lease_and_takes_the_best_first(
    aws: Aws, clock: FakeClock
) -> None:
    store = aws.store(clock, reap_every=3600)  # no sweep: only the claim can reap
    stale = add(store, clock, max_attempts=3)
    [first] = store.claim(1, LEASE, ids=[stale])
    clock.advance(LEASE + 1)
    low = [add(store, clock, priority=0) for _ in range(3)]
    high = add(store, clock, priority=9)
    claimed = store.claim(2, LEASE, ids=[*low, high, stale])
    assert claimed[0].id == high and len(claimed) == 2  # the limit: best first
    again = store.claim(5, LEASE, ids=[*low, stale])
    reaped = next(j for j in again if j.id == stale)
    assert reaped.attempts == 2 and reaped.lease_token != first.lease_token
    assert {j.id for j in claimed} | {j.id for j in again} == {*low, high, stale}


@pytest.mark.usefixtures("atomic_requests")
def test_two_deliveries_of_one_batch_claim_each_job_once(aws: Aws, clock: FakeClock) -> None:
    first, second = aws.store(clock), aws.store(clock)  # two Lambda containers
    ids = [r.job.id for r in first.add([new_job(clock) for _ in range(6)])]
    results: list[list[Any]] = []
    barrier = threading.Barrier(2)

    def deliver(store: DynamoStore) -> None:
        barrier.wait()
        results.append(store.claim(10, LEASE, ids=list(reversed(ids))))

    threads = [threading.Thread(target=deliver, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [j.id for r in results for j in r]
    assert sorted(won) == sorted(ids)  # each once, by one container or the other
    assert all(stored(first, i).attempts == 1 for i in ids)


def test_the_worker_roles_table_actions_cover_what_a_worker_calls(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """The worker function's role (infra/generate.py) is least privilege: a call
    outside it fails on AWS though moto, enforcing no IAM, lets it pass. So the
    calls of a worker's whole life are checked against the role here: claim,
    finish, heartbeat (an upsert by UpdateItem)."""
    from chalicelib.models import Completion, JobState
    from infra.generate import ACTIONS

    allowed = {a.split(":", 1)[1] for a in ACTIONS["worker"]["table"]}
    job_id = add(store, clock)
    aws.calls.clear()
    # IAM authorizes a transaction by the action of each item in it.
    in_transactions: set[str] = set()

    def items(params: dict[str, Any], **_: Any) -> None:
        for item in params.get("TransactItems", []):
            in_transactions.update(f"{kind}Item" for kind in item)

    aws.ddb.meta.events.register("before-call.dynamodb.TransactWriteItems", items)
    store.beat("host:1", ("default",), clock.now())
    store.beat("host:1", None, clock.now())
    (job,) = store.claim(1, LEASE, ids=[job_id])
    assert job.lease_token is not None
    store.finish([Completion(job.id, job.lease_token, JobState.SUCCEEDED, result=1)])
    store.attempts(job.id)
    ddb_calls = {name for name in aws.calls if name[0].isupper() and "Message" not in name}
    ddb_calls -= {"GetQueueUrl", "GetQueueAttributes", "SendMessageBatch", "PutObject"}
    ddb_calls = (ddb_calls - {"TransactWriteItems"}) | in_transactions
    assert ddb_calls and ddb_calls <= allowed, ddb_calls - allowed
    (beat,) = store.live_workers(60)
    assert beat.queues is None  # the second beat cleared the first one's queues


def test_a_keyed_add_whose_retry_met_its_own_write_is_created_and_sent(
    aws: Aws, clock: FakeClock
) -> None:
    """A TransactWriteItems applied but answered too late, and sent again by botocore:
    DynamoDB matches the retry to the first by its ClientRequestToken, moto does not,
    and the add used to find its key held (by its own job) and answer created=False,
    sending no message: the job waited ten minutes for release_due."""
    store = aws.store(clock)
    sent = record_sends(store)
    real = store._tx.ddb.transact_write_items
    replayed: list[bool] = []

    def applied_then_sent_again(**kwargs: Any) -> Any:
        real(**kwargs)  # applied; its reply lost
        replayed.append(True)
        return real(**kwargs)  # the retry, matched to nothing

    store._tx.ddb.transact_write_items = applied_then_sent_again  # type: ignore[method-assign]
    try:
        [result] = store.add([new_job(clock, idempotency_key="k-1")])
    finally:
        store._tx.ddb.transact_write_items = real  # type: ignore[method-assign]
    assert replayed and result.created
    assert [job_id for job_id, _ in sent] == [result.job.id]
    [again] = store.add([new_job(clock, idempotency_key="k-1")])
    assert not again.created and again.job.id == result.job.id


@pytest.mark.parametrize("by_id", [True, False], ids=["sqs-message", "polled"])
def test_a_claim_whose_retry_met_its_own_write_is_claimed(
    aws: Aws, clock: FakeClock, by_id: bool
) -> None:
    """An UpdateItem claim applied but answered too late, and sent again by botocore
    with the same lease token: the resend fails its condition (the job is running), and
    the claim took it for another worker's. Nothing ran it; the reaper later spent its
    attempt as a dead worker's (dead at max_attempts=1, its handler never run)."""
    store = aws.store(clock)
    job_id = add(store, clock)
    real = store.ddb.update_item
    replayed: list[bool] = []

    def applied_then_sent_again(**kwargs: Any) -> Any:
        if "lease_token" not in str(kwargs.get("ExpressionAttributeNames", {})):
            return real(**kwargs)
        real(**kwargs)  # applied; its reply lost
        replayed.append(True)
        return real(**kwargs)  # the retry: the condition no longer holds

    store.ddb.update_item = applied_then_sent_again  # type: ignore[method-assign]
    try:
        claimed = store.claim(1, LEASE, ids=[job_id] if by_id else None)
    finally:
        store.ddb.update_item = real  # type: ignore[method-assign]
    assert replayed
    assert [job.id for job in claimed] == [job_id]
    [job] = claimed
    stored = store.get(job_id)
    assert stored is not None and stored.state is JobState.RUNNING
    assert stored.lease_token == job.lease_token and stored.attempts == 1
    assert store.finish([Completion(job_id, token(job), JobState.SUCCEEDED, "ok")]) == [True]


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "local.cli", "serve", "--no-worker", "--port", "0"],
        ["-m", "local.cli", "worker"],
        ["-m", "local.sqs_poller", "--max-seconds", "5"],
    ],
)
def test_serve_worker_and_poller_exit_at_start_when_the_store_does_not_answer(
    argv: list[str],
) -> None:
    """Was: on DynamoDB (which connects lazily) they started, answered 503 or retried
    for ever, and the poller died with a botocore traceback; Redis and Postgres exit 1
    with one line, as docs/self-hosting.md says every store does."""
    from pathlib import Path

    from tests.procs import guarded_env
    from tests.redis_support import free_port

    closed = free_port()
    url = f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint=http://127.0.0.1:{closed}"
    env = guarded_env(SPOOL_STORE_URL=url, SPOOL_API_KEYS="start-key-0123456789=acme")
    done = subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("spool: AWS is unreachable") and "SPOOL_STORE_URL" in line
    assert "Traceback" not in done.stderr
