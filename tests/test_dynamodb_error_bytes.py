"""A failure's message in a DynamoDB record is bounded in bytes, not characters.

The record keeps MAX_ERROR_CHARS bytes of its 400 KB for the last error beside its
payload, result and attempt history (DynamoStore.finish's `room`), and DynamoDB
counts an item's size in UTF-8 bytes. The message was cut to MAX_ERROR_CHARS
characters, which are up to four bytes each: a handler whose exception said 32 K
emoji or CJK characters beside a big inline payload made the finish's item too
large, DynamoDB refused it (ValidationException) on every try, and the job stayed
running until its lease lapsed, its error never recorded, its attempt spent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from moto import mock_aws

from chalicelib.clock import FakeClock
from chalicelib.models import MAX_ERROR_CHARS, Completion, JobState, error_text
from chalicelib.storage.dynamodb_aws import INLINE_LIMIT, DynamoConfig
from tests.factories import new_job, stored, token
from tests.test_dynamodb import LEASE, Aws


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        yield Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket"))


@pytest.mark.parametrize(
    ("bucket", "text"),
    [
        (False, "\U0001f600"),  # four bytes in UTF-8
        (False, "\u6f22"),  # three
        (True, "\U0001f600"),  # a store whose records keep payloads up to INLINE_LIMIT
    ],
    ids=["no-bucket-emoji", "no-bucket-cjk", "bucket-inline-limit"],
)
@pytest.mark.parametrize("state", [JobState.DEAD, JobState.RETRYING])
def test_a_long_non_ascii_error_beside_a_big_inline_payload_is_recorded(
    aws: Aws, clock: FakeClock, bucket: bool, text: str, state: JobState
) -> None:
    store = (
        aws.store(clock, offload_bytes=INLINE_LIMIT) if bucket else aws.store(clock, bucket=None)
    )
    payload = {"blob": "x" * (INLINE_LIMIT - 100)}
    job_id = store.add([new_job(clock, payload=payload)])[0].job.id
    [job] = store.claim(1, LEASE)
    error = error_text(text * (2 * MAX_ERROR_CHARS), "RuntimeError: ")
    retry_at = clock.now() + timedelta(seconds=5) if state is JobState.RETRYING else None
    done_ = Completion(job_id, token(job), state, error=error, retry_at=retry_at)
    assert store.finish([done_]) == [True]
    done = stored(store, job_id)
    assert done.state is state and done.payload == payload
    recorded = done.last_error or ""
    assert recorded.startswith("RuntimeError: " + text * 100)
    assert len(recorded.encode()) <= MAX_ERROR_CHARS
    # What was cut is said, as for any trimmed message.
    assert recorded.endswith(" characters trimmed]")
    kept, marker = recorded.rsplit("[... ", 1)
    whole = len("RuntimeError: ") + 2 * MAX_ERROR_CHARS
    assert int(marker.split()[0]) == whole - len(kept)


def test_an_ascii_error_within_the_limit_is_kept_as_it_is(aws: Aws, clock: FakeClock) -> None:
    store = aws.store(clock)
    job_id = store.add([new_job(clock)])[0].job.id
    [job] = store.claim(1, LEASE)
    error = error_text("e" * (3 * MAX_ERROR_CHARS))
    assert store.finish([Completion(job_id, token(job), JobState.DEAD, error=error)]) == [True]
    assert stored(store, job_id).last_error == error
