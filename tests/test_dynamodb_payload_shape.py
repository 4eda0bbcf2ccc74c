"""A payload that is JSON but not a JSON object (an S3 object overwritten with `[1, 2]`,
a record's payload edited to `"x"`) is never handed to a handler: the models' payload is
an object, and a handler reading `payload["key"]` of a list would fail every attempt
toward the dead-letter queue with a TypeError that names nothing of the cause. A claim
settles such a job without running it, as it does a payload that is not JSON at all;
reads show the `payload_unreadable` marker. Against moto in-process."""

from __future__ import annotations

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.storage.dynamodb import DynamoStore
from chalicelib.storage.dynamodb_schema import job_key
from tests import test_dynamodb
from tests.test_dynamodb import LEASE, Aws, add
from tests.test_dynamodb_missing_objects import BIG, payload_key

# The store on moto, with its queue and bucket: tests/test_dynamodb.py's fixtures.
aws, store = test_dynamodb.aws, test_dynamodb.store

NOT_OBJECTS = ["[1, 2]", '"text"', "5", "null", "true"]


def _assert_settled_unrun(store: DynamoStore, job_id: str, other: str) -> None:
    shown = store.get(job_id)
    assert shown is not None and shown.payload["error"] == "payload_unreadable"
    assert "not a JSON object" in str(shown.payload["message"])
    claimed = store.claim(10, LEASE, ids=[job_id, other])
    assert [j.id for j in claimed] == [other]
    job = store.get(job_id)
    assert job is not None and job.state is JobState.RETRYING and job.attempts == 1
    assert job.last_error is not None and "not a JSON object" in job.last_error


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_a_payload_object_that_is_not_a_json_object_is_not_run(
    aws: Aws, store: DynamoStore, clock: FakeClock, body: str
) -> None:
    job_id = add(store, clock, payload=BIG)
    other = add(store, clock)
    aws.s3.put_object(Bucket="jobs-bucket", Key=payload_key(job_id), Body=body.encode())
    _assert_settled_unrun(store, job_id, other)


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_an_inline_payload_that_is_not_a_json_object_is_not_run(
    aws: Aws, store: DynamoStore, clock: FakeClock, body: str
) -> None:
    job_id = add(store, clock, payload={"small": 1})
    other = add(store, clock)
    aws.ddb.update_item(
        TableName="jobs",
        Key=job_key(job_id),
        UpdateExpression="SET payload = :p",
        ExpressionAttributeValues={":p": {"S": body}},
    )
    _assert_settled_unrun(store, job_id, other)
