"""A cancel or a redrive of a job whose stored record cannot be read changes nothing
and says why, on every store that can hold such a record.

Was (reproduced with spool serve and a SQLite file, then Redis): on SQLite, cancelling
a queued job whose created_at had been edited into text answered 500 `job_unreadable`
after the cancel had committed (the job was cancelled, its webhook queued); on Redis,
the dashboard's redrive of a dead job whose hash had lost created_at answered 503
"try again shortly" while the REDRIVE script, failing half-way, had already set the
job queued (but not in the due index, so no worker ever took it), and CANCEL failed
the same way half-way. Now each store reads the job before it writes, and a damaged
record answers JobUnreadable (500 `job_unreadable`, naming the job and what is
wrong) with nothing written. Postgres keeps typed columns: no such record reaches
its cancel or redrive. DynamoDB: tests/test_dynamodb_damaged_records.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore, to_micros
from tests.backends import open_backend
from tests.factories import new_job
from tests.test_chaos_s60b_unreadable_rows import write

LEASE = 60.0
# A field each store's cancel and redrive leave as they find it, damaged by hand.
DAMAGE: dict[str, tuple[str, str | None]] = {
    "sqlite": ("created_at", "yesterday"),
    "redis": ("created_at", None),
}


@pytest.fixture(params=sorted(DAMAGE))
def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> Iterator[tuple[str, JobStore]]:
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield request.param, opened


def stored_state(backend: str, s: Any, job_id: str) -> str:
    """The state as stored, read around the decoder (which refuses the record)."""
    if backend == "sqlite":
        return str(s._db().execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    return str(s.client.hget(s._p + "j:" + job_id, "state").decode())


def dead_job(s: JobStore, clock: FakeClock) -> str:
    job = s.add([new_job(clock)])[0].job
    [claimed] = s.claim(1, LEASE, ids=[job.id])
    assert claimed.lease_token is not None
    [done] = s.finish([Completion(job.id, claimed.lease_token, JobState.DEAD, None, "boom")])
    assert done
    return job.id


def test_a_cancel_of_a_damaged_job_changes_nothing(
    store: tuple[str, JobStore], clock: FakeClock
) -> None:
    backend, s = store
    job = s.add([new_job(clock)])[0].job
    field, value = DAMAGE[backend]
    write(backend, s, job.id, field, value)
    with pytest.raises(JobUnreadable, match=f"job {job.id}'s stored record cannot be read"):
        s.cancel(job.id)
    assert stored_state(backend, s, job.id) == "queued"
    write(backend, s, job.id, field, str(to_micros(job.created_at)))
    assert [j.id for j in s.claim(5, LEASE)] == [job.id]  # still due: no half-write


def test_a_redrive_of_a_damaged_job_changes_nothing(
    store: tuple[str, JobStore], clock: FakeClock
) -> None:
    backend, s = store
    bad, good = dead_job(s, clock), dead_job(s, clock)
    field, value = DAMAGE[backend]
    write(backend, s, bad, field, value)
    with pytest.raises(JobUnreadable, match=f"job {bad}'s stored record cannot be read"):
        s.redrive([good, bad])
    assert stored_state(backend, s, bad) == "dead"
    assert stored_state(backend, s, good) == "dead"  # refused whole, as SQLite rolls back
    assert [j.id for j in s.redrive([good])] == [good]


def test_dynamodb_a_redrive_of_a_damaged_job_changes_nothing(clock: FakeClock) -> None:
    """DynamoDB's redrive wrote a dead item whose max_attempts was edited into text,
    then left it out of its answer (it did not read back): the dashboard's redrive
    answered done 0 while the job was queued and sent to SQS."""
    from moto import mock_aws

    from chalicelib.storage.dynamodb import DynamoConfig
    from chalicelib.storage.dynamodb_schema import job_key
    from tests.test_dynamodb import Aws

    with mock_aws():
        s = Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket")).store(clock)
        bad, good = dead_job(s, clock), dead_job(s, clock)
        item = s.ddb.get_item(TableName="jobs", Key=job_key(bad), ConsistentRead=True)["Item"]
        item["max_attempts"] = {"S": "x"}
        s.ddb.put_item(TableName="jobs", Item=item)
        with pytest.raises(JobUnreadable, match=f"job {bad}'s stored record cannot be read"):
            s.redrive([good, bad])
        for job_id in (bad, good):
            stored = s.ddb.get_item(TableName="jobs", Key=job_key(job_id), ConsistentRead=True)
            assert stored["Item"]["state"] == {"S": "dead"}
        assert [j.id for j in s.redrive([good])] == [good]
