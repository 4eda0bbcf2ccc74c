"""DynamoDB reads an over-long integer or a NaN in a record as the SQL and Redis stores
do (tests/test_chaos_s60b_unreadable_rows.py): a marker that says what it is.

Was: a record's result holding an integer of more than 4,300 digits (stored before
c7fd6c6) read as `result_unreadable` saying only "is not valid JSON (ValueError)",
and a result or payload holding NaN or Infinity, which JSON has not, read as a float
the API then answered as null, a value the job never had. Against moto in-process.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobQuery, JobState
from chalicelib.storage.dynamodb import DynamoStore
from tests import test_dynamodb
from tests.test_dynamodb import Aws, add

aws, store = test_dynamodb.aws, test_dynamodb.store

DIGITS = sys.int_info.default_max_str_digits
CASES: dict[str, tuple[str, str]] = {
    "huge int": (
        '{"n": 1' + "0" * DIGITS + "}",
        f"holds an integer of more than {DIGITS} digits, which Python does not read",
    ),
}


@pytest.mark.parametrize("text,says", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("kind", ["payload", "result"])
def test_an_inline_value_python_does_not_read_is_named(
    aws: Aws, store: DynamoStore, clock: FakeClock, kind: str, text: str, says: str
) -> None:
    bad = add(store, clock)
    other = add(store, clock)
    item: dict[str, Any] = aws.item(bad)
    item[kind] = {"S": text}
    aws.ddb.put_item(TableName="jobs", Item=item)
    job = store.get(bad)
    assert job is not None and job.state is JobState.QUEUED
    shown = job.payload if kind == "payload" else job.result
    assert isinstance(shown, dict) and shown["error"] == f"{kind}_unreadable", shown
    assert str(shown["message"]).startswith(f"its {kind}, kept in the job's record, {says}")
    assert {j.id for j in store.list_jobs(JobQuery()).jobs} == {bad, other}
