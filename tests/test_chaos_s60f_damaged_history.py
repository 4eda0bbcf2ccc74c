"""A job whose attempt history does not read is shown, its history marked unreadable.

Was (reproduced with spool serve on a SQLite file, attempt_log set to '[{"n": 1'):
`GET /status/ID?attempts=true` (and `?webhooks=true&attempts=true`, the dashboard's
job page, `spool status ID`) answered 500 `job_unreadable` for the whole job, though
every other field read; the dashboard's cancel answers with the job's history, so a
cancel of such a job was made and answered 500. Now the job is answered with
`attempt_history: []` and `attempt_history_error: {"error":
"attempt_history_unreadable", "message": "its attempt history ... cannot be read
(WHAT)"}`, on every store that keeps a history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage import stored_rows
from local import status_view
from tests.apikit import Api
from tests.backends import open_backend
from tests.factories import new_job

LEASE = 60.0
CUT_SHORT = '[{"n": 1'


def spoil_history(backend: str, s: Any, job_id: str) -> None:
    """The job's attempt history, cut short as a hand edit may leave it."""
    if backend == "sqlite":
        with s._write() as db:
            db.execute("UPDATE jobs SET attempt_log = ? WHERE id = ?", (CUT_SHORT, job_id))
    elif backend == "postgres":
        s._run(
            lambda conn: conn.execute(
                "UPDATE jobs SET attempt_log = %s::jsonb WHERE id = %s",
                ('[{"n": "one"}]', job_id),
            )
        )
    else:
        key = s._p + "h:" + job_id
        s.client.delete(key)
        s.client.rpush(key, CUT_SHORT)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
def test_the_store_history_reads_as_a_marker(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    with open_backend(backend, clock, tmp_path, request) as s:
        job = s.add([new_job(clock)])[0].job
        s.claim(1, LEASE)
        clock.advance(LEASE + 1)
        s.claim(0, LEASE)  # reaped: one attempt recorded
        spoil_history(backend, s, job.id)
        found = stored_rows.attempts_or_marker(s, job.id, None)
        assert found is not None
        attempts, marker = found
        assert attempts == [] and marker is not None
        assert marker["error"] == "attempt_history_unreadable"
        assert marker["message"].startswith(
            "its attempt history, kept in the job's record, cannot be read ("
        )


def test_the_api_shows_the_job_with_its_history_marked(rt: Runtime, api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {"n": 1}})
    spoil_history("sqlite", rt.store, job_id)
    for query in ("attempts=true", "attempts=true&webhooks=true"):
        status = api.get(f"/status/{job_id}?{query}")
        assert status.status == 200, status.body
        assert status.json["state"] == "queued"
        assert status.json["attempt_history"] == []
        assert status.json["attempt_history_error"]["error"] == "attempt_history_unreadable"
    page = api.get(f"/ui/api/jobs/{job_id}")
    assert page.status == 200, page.body
    assert page.json["attempt_history_error"].startswith("its attempt history")
    shown = status_view.render(rt.store.get(job_id), [], history_error="its history ...")  # type: ignore[arg-type]
    assert shown.endswith("its history ...") and "no attempts recorded" not in shown
    cancelled = api.post(f"/ui/api/jobs/{job_id}/cancel", {})
    assert cancelled.status == 200, cancelled.body
    assert rt.store.get(job_id).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_dynamodb_history_reads_as_a_marker(clock: FakeClock) -> None:
    """DynamoDB's attempts() raised the JSONDecodeError itself: 500 internal_error."""
    from moto import mock_aws

    from chalicelib.storage.dynamodb import DynamoConfig
    from chalicelib.storage.dynamodb_schema import job_key
    from tests.test_dynamodb import Aws, add

    with mock_aws():
        store = Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket")).store(clock)
        job_id = add(store, clock)
        item = store.ddb.get_item(TableName="jobs", Key=job_key(job_id), ConsistentRead=True)
        record = item["Item"]
        record["attempt_log"] = {"M": {"1": {"S": CUT_SHORT}}}
        store.ddb.put_item(TableName="jobs", Item=record)
        found = stored_rows.attempts_or_marker(store, job_id, None)
        assert found is not None and found[0] == []
        assert found[1] is not None and found[1]["error"] == "attempt_history_unreadable"
