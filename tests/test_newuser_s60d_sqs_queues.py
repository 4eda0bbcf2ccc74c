"""SPOOL_QUEUES on the SQS path: said, not silently ignored.

Found in stop 60 with the offline AWS shape (moto_server, `spool serve --no-worker`
and `python -m local.sqs_poller` with SPOOL_QUEUES=a): a job enqueued on queue `b`
ran at once, where `spool serve` on SQLite with the same setting leaves it queued
for a worker that serves `b`. One SQS queue carries the jobs of every Spool queue and
the worker function runs each job a message names, so it cannot honour the setting
(skipping the job would drop its message, and it would wait for the lost-message
sweep, ten minutes, to be handed to the same function again). Nothing said so: no
line at start, nothing in docs/settings.md or docs/aws.md. Now the SQS worker warns
once per process, naming the setting and what to do, and the docs say it; the
difference itself is intended, and this test pins both sides of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from moto import mock_aws

import app as spool_app
from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event, sqs_event
from tests.apikit import installed, settings_for
from tests.test_events import add, state

pytestmark = pytest.mark.aws

QUEUES = ("a",)


def run_by_sqs(rt: Runtime, job_id: str) -> None:
    answer = spool_app.app.handler_map["run_jobs"](
        sqs_event(spool_app.app, [job_id]), context("run_jobs", 900_000)
    )
    assert answer == {"batchItemFailures": []}


def test_sqlite_emulator_leaves_another_queues_job_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with installed(settings_for(tmp_path, queues=QUEUES)) as rt:
        job = add(rt, queue="b")
        events.handle_schedule(scheduled_event(spool_app.app), context("drain_due", 900_000))
        assert state(rt, job) is JobState.QUEUED
    assert "SPOOL_QUEUES" not in caplog.text


def test_the_sqs_worker_runs_it_and_says_the_setting_is_not_honoured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "dynamodb://jobs?queue=jobs&bucket=jobs-bucket&create=1"
    with mock_aws(), installed(settings_for(tmp_path, store_url=url, queues=QUEUES)) as rt:
        job = add(rt, queue="b")
        other = add(rt, queue="b")
        with caplog.at_level(logging.WARNING, logger="spool.events"):
            run_by_sqs(rt, job)
            run_by_sqs(rt, other)
        assert state(rt, job) is JobState.SUCCEEDED
    said = [r.getMessage() for r in caplog.records if "SPOOL_QUEUES" in r.getMessage()]
    assert len(said) == 1, said  # once per process, not per batch
    assert "SPOOL_QUEUES=a" in said[0] and "every job" in said[0]
    assert "unset" in said[0]


def test_the_docs_say_so() -> None:
    root = Path(__file__).resolve().parent.parent
    settings = (root / "docs" / "settings.md").read_text()
    row = next(line for line in settings.splitlines() if line.startswith("| `SPOOL_QUEUES`"))
    assert "SQS" in row
    assert "SPOOL_QUEUES" in (root / "docs" / "aws.md").read_text()
