"""On DynamoDB itself: a job whose outcome the table refuses holds no other job's
(review s51, helper f; the worker's side is tests/test_chaos_s51f_refused_outcome.py).

Here the refusal is a damaged record (its `ver` made a string while the job runs, as
a hand edit would): every write of its outcome is a ValidationException. Before, the
worker took that for an outage and held the other jobs' outcomes with it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.base import JobStore
from chalicelib.storage.dynamodb_schema import job_key
from chalicelib.worker import Worker, WorkerConfig
from tests.backends import open_backend
from tests.factories import new_job


def test_a_record_the_table_refuses_to_finish_holds_no_other_outcome(
    clock: FakeClock, tmp_path: Any, request: Any
) -> None:
    with open_backend("dynamodb", clock, tmp_path, request) as store:
        reg = Registry()

        @reg.handler("work", max_attempts=1)
        def work(payload: dict[str, Any]) -> dict[str, Any]:
            if payload["damage"]:
                _damage(store, payload["id"])
            return {"ok": True}

        ids = []
        for damage in (False, True, False):
            new = new_job(clock, "work", payload={"damage": damage})
            new = replace(new, payload={"damage": damage, "id": new.id})
            ids.append(store.add([new])[0].job.id)
        worker = Worker(store, reg, WorkerConfig(concurrency=1, batch_size=10, lease_seconds=2))
        try:
            stats = worker.drain()
        finally:
            worker.close()
        states = [j.state if (j := store.get(i)) is not None else None for i in (ids[0], ids[2])]
        assert states == [JobState.SUCCEEDED, JobState.SUCCEEDED]
        assert stats.unwritten == 1 and stats.succeeded == 2
        assert not worker.outage.down


def _damage(store: JobStore, job_id: str) -> None:
    ddb: Any = store.ddb  # type: ignore[attr-defined]
    ddb.update_item(
        TableName=store.config.table,  # type: ignore[attr-defined]
        Key=job_key(job_id),
        UpdateExpression="SET ver = :v",
        ExpressionAttributeValues={":v": {"S": "damaged"}},
    )
