"""A store's refusal of one job's outcome is that job's, not an outage (review s51, f).

A write the store will always refuse (DynamoDB's ValidationException for an item over
400 KB, Postgres's data exceptions such as a NUL it cannot hold, SQLite's "string or
blob too big") was taken for a store outage: the worker held the whole batch of
outcomes (every other job's too) for a lease's length, retrying the same refused
write, then let them all go, and every job ran again. Now the batch is written job by
job, and the refused job's outcome is written in a form the store takes: dead, its
result left out, the store's reason in its error."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job


def _dynamodb() -> Exception:
    return ClientError(
        {
            "Error": {
                "Code": "ValidationException",
                "Message": "Item size has exceeded the maximum allowed size",
            }
        },
        "TransactWriteItems",
    )


def _postgres() -> Exception:
    return psycopg.errors.UntranslatableCharacter(
        "unsupported Unicode escape sequence: \\u0000 cannot be converted to text."
    )


def _sqlite() -> Exception:
    return sqlite3.DataError("string or blob too big")


class RefusesBigResults(MemoryStore):
    """Refuses any write of a batch holding a result marked too big, as a store
    refuses a transaction with one item it cannot hold."""

    def __init__(self, clock: FakeClock, refusal: Callable[[], Exception]) -> None:
        super().__init__(clock)
        self.refusal = refusal
        self.refused = 0

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if any(isinstance(c.result, dict) and c.result.get("big") for c in completions):
            self.refused += 1
            raise self.refusal()
        return super().finish(completions)


@pytest.mark.parametrize("refusal", [_dynamodb, _postgres, _sqlite])
def test_one_refused_outcome_leaves_the_others_written_and_is_the_job_s_own(
    refusal: Callable[[], Exception],
) -> None:
    clock = FakeClock()
    store = RefusesBigResults(clock, refusal)
    reg = Registry()

    @reg.handler("make", max_attempts=3)
    def make(payload: dict[str, Any]) -> dict[str, Any]:
        return {"big": payload["big"]}

    ids = [
        store.add([new_job(clock, "make", payload={"big": big})])[0].job.id
        for big in (False, True, False)
    ]
    worker = Worker(store, reg, WorkerConfig(concurrency=1, batch_size=10, lease_seconds=2))
    try:
        stats = worker.drain()
    finally:
        worker.close()
    jobs = [store.get(i) for i in ids]
    assert [j.state for j in jobs if j is not None] == [
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.SUCCEEDED,
    ]
    refused = jobs[1]
    assert refused is not None and refused.result is None
    assert "refused" in (refused.last_error or "") and stats.unwritten == 0
    assert not worker.outage.down
