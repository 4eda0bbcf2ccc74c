"""A damaged job a claim meets ends dead, never running for good.

An item edited into a bad shape whose state still says queued could be claimed:
the claim's write moved it to running, then the record could not be read into a
Job, so no worker ran it, the reaper skipped it, and it stayed `running` (in the
counts and the queue depth) for good; in a batch, the claim raised, stranding the
jobs claimed with it. Now the claim buries it instead: dead, with a last_error
naming the damage, counted, and the other jobs of the claim run. Against moto
in-process, as tests/test_dynamodb_damaged_records.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.limits import ClaimPolicy
from chalicelib.models import Completion, CounterKey, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.worker import Worker, WorkerConfig
from tests import test_dynamodb
from tests.apikit import Api
from tests.factories import token
from tests.test_aws_events import open_runtime, store_of
from tests.test_dynamodb import LEASE, Aws, add
from tests.test_dynamodb_damaged_records import SHAPES, damage
from tests.test_dynamodb_missing_objects import run_jobs

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixtures.
aws, store = test_dynamodb.aws, test_dynamodb.store

# The bad shapes a claim's condition (state queued or retrying, run_at due) still
# lets through. Left out: "no state" and "state bogus" (no claim takes them) and
# "run_at a string" (moto raises a TypeError comparing it with a number, where
# DynamoDB's condition is just false: no claim takes it either).
CLAIMABLE: dict[str, Callable[[dict[str, Any]], Any]] = {
    name: edit
    for name, edit in SHAPES.items()
    if name not in ("no state", "state bogus", "run_at a string")
}
CLAIMABLE["ver a string"] = lambda it: it.__setitem__("ver", {"S": "one"})

FAIR = ClaimPolicy(fair=True)

# How a claim is asked: two ids (one UpdateItem each), an SQS batch of three (one
# read, one transaction), and a polling worker's claim of whatever is due.
PATHS = {
    "by id": lambda store, ids: store.claim(10, LEASE, ids=ids[:2]),
    "batch": lambda store, ids: store.claim(10, LEASE, ids=ids),
    "due": lambda store, ids: store.claim(10, LEASE),
    # With fair turns on, claims go through dynamodb_limits.py's own reads.
    "batch, fair turns": lambda store, ids: store.claim(10, LEASE, ids=ids, policy=FAIR),
    "due, fair turns": lambda store, ids: store.claim(10, LEASE, policy=FAIR),
}


def state_of(aws: Aws, job_id: str) -> str | None:
    found: str | None = aws.item(job_id).get("state", {}).get("S")
    return found


@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
@pytest.mark.parametrize("edit", list(CLAIMABLE.values()), ids=list(CLAIMABLE))
def test_a_claim_buries_a_damaged_job_and_claims_the_others(
    aws: Aws,
    store: DynamoStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    path: str,
    edit: Callable[[dict[str, Any]], Any],
) -> None:
    bad = add(store, clock, idempotency_key="the-damaged-one")
    clock.advance(1)  # the damaged job is the first due
    others = [add(store, clock), add(store, clock)]
    damage(aws, bad, edit)
    caplog.set_level(logging.WARNING, logger="spool.dynamodb")

    claimed = PATHS[path](store, [bad, *others])  # no raise

    wanted = others[:1] if path == "by id" else others
    assert sorted(j.id for j in claimed) == sorted(wanted)
    item = aws.item(bad)
    assert state_of(aws, bad) == "dead"
    assert "lease_token" not in item and "due_pk" not in item
    error = item["last_error"]["S"]
    assert error.startswith("the job's stored record cannot be read (")
    assert "repair the item and redrive the job, or delete it" in error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(bad in e and "dead without running it" in e for e in errors), errors
    # Counted where it is: dead, not running or queued.
    counts = store.counts()
    assert counts.get(("default", JobState.DEAD)) == 1
    assert counts.get(("default", JobState.RUNNING)) == len(wanted)
    assert counts.get(("default", JobState.QUEUED), 0) == len(others) - len(wanted)
    if "type" in item and "S" in item["type"]:
        assert store.counters().get(CounterKey("default", "echo", "dead")) == 1
    # The claimed ones finish; no later claim or reap meets the damaged one again.
    done = [Completion(j.id, token(j), JobState.SUCCEEDED, {"ok": True}) for j in claimed]
    assert store.finish(done) == [True] * len(done)
    later = store.claim(10, LEASE)
    assert bad not in {j.id for j in later}
    assert store.finish([Completion(j.id, token(j), JobState.SUCCEEDED, None) for j in later]) == [
        True
    ] * len(later)
    clock.advance(LEASE + 1)
    store.reap_expired()
    assert state_of(aws, bad) == "dead"
    assert store.counts().get(("default", JobState.RUNNING), 0) == 0
    # Purged as a dead job is.
    clock.advance(1)
    assert store.purge(clock.now()) == 1 + len(others)
    assert aws.item(bad) == {}


def test_a_repair_made_after_the_read_is_not_buried(
    aws: Aws, store: DynamoStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bury is conditional on the item being as the claim read it."""
    bad, *others = [add(store, clock) for _ in range(3)]
    damage(aws, bad, lambda it: it.pop("max_attempts"))
    real = store._batch_get

    def repair(item: dict[str, Any]) -> None:
        item["max_attempts"] = {"N": "3"}
        item["ver"] = {"N": str(int(item["ver"]["N"]) + 1)}

    def read_then_repair(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        damage(aws, bad, repair)  # between the claim's read and its write
        return found

    monkeypatch.setattr(store, "_batch_get", read_then_repair)
    claimed = store.claim(10, LEASE, ids=[bad, *others])
    assert sorted(j.id for j in claimed) == sorted(others)
    assert state_of(aws, bad) == "queued"


# -- through the app: an SQS batch ----------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


@pytest.mark.parametrize("size", [2, 4])
def test_an_sqs_batch_with_a_damaged_job_runs_the_others_and_drops_its_message(
    rt: Runtime, size: int
) -> None:
    api = Api(Client(spool_app.app))
    ids = [api.enqueue({"type": "echo", "payload": {"n": i}}) for i in range(size)]
    bad, good = ids[0], ids[1:]
    store = store_of(rt)
    damage_item(store, bad)

    assert run_jobs(ids) == {"batchItemFailures": []}  # no message returned for redelivery

    for job_id in good:
        status = api.get(f"/status/{job_id}")
        assert status.status == 200 and status.json["state"] == "succeeded", status.body
    reply = api.get(f"/status/{bad}")
    assert reply.status == 500 and reply.error_code == "job_unreadable"
    counts = store.counts()
    assert counts.get(("default", JobState.DEAD)) == 1
    assert counts.get(("default", JobState.SUCCEEDED)) == len(good)
    assert ("default", JobState.RUNNING) not in counts
    assert run_jobs([bad]) == {"batchItemFailures": []}  # a redelivery: skipped, dropped


def test_a_damaged_job_in_a_batch_near_the_deadline_is_buried_not_raised(
    aws: Aws, store: DynamoStore, clock: FakeClock
) -> None:
    """Near the Lambda's deadline the worker reads each job to learn its timeout;
    a damaged record there raised JobUnreadable for the whole batch."""
    registry = Registry()

    @registry.handler("echo", timeout=600)
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @registry.handler("quick", timeout=1)
    def quick(payload: dict[str, Any]) -> None: ...

    bad = add(store, clock)
    clock.advance(1)
    good = add(store, clock, type_="quick")
    damage(aws, bad, SHAPES["no tenant"])
    worker = Worker(store, registry, WorkerConfig(concurrency=2))
    try:
        # 30 s left: the echo handler's 600 s does not fit, the quick one's does.
        outcome = worker.process([bad, good], deadline=time.monotonic() + 30)
    finally:
        worker.close()
    assert outcome[good] == "succeeded"
    assert state_of(aws, bad) == "dead"


def damage_item(store: DynamoStore, job_id: str) -> None:
    from chalicelib.storage.dynamodb_schema import job_key

    item = store.ddb.get_item(TableName="jobs", Key=job_key(job_id), ConsistentRead=True)["Item"]
    del item["max_attempts"]
    store.ddb.put_item(TableName="jobs", Item=item)
