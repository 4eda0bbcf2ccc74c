"""What each job counter counts, as an operator who alerts on them reads it.

Reproduced against `spool serve` and two `spool worker` processes on SQLite:
a `fail` job cancelled while `retrying` (one attempt had run and failed) was
counted in `spool_jobs_cancelled_total`, whose HELP said "Jobs cancelled before
they ran"; and a dead job redriven that died again counted twice in
`spool_jobs_dead_total` and not again in `spool_jobs_enqueued_total`, which
neither the HELP texts nor docs/operations.md said, so `enqueued - succeeded -
dead - cancelled` (jobs still to finish, as an operator would compute it) went
negative. The counts were right; what they were said to count was not. The same
holds for `spool_job_end_to_end_seconds`, documented as counting "a job once": a
redriven job is observed at each final outcome, from its first enqueue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.clock import FakeClock
from local.emulator import context, scheduled_event
from tests.apikit import Api, installed
from tests.test_metrics import OPERATOR_KEY, metrics_settings, sample


@pytest.fixture
def fixed_api(tmp_path: Path) -> Iterator[Api]:
    """The app on a clock that stands still, so a retry stays `retrying`."""
    with (
        installed(metrics_settings(tmp_path), FakeClock()),
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client)


def drain() -> None:
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))


def scrape(api: Api) -> str:
    reply = api.get("/metrics", key=OPERATOR_KEY)
    assert reply.status == 200, reply.body
    return reply.body.decode()


def help_of(text: str, family: str) -> str:
    prefix = f"# HELP {family} "
    return next(line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix))


def test_a_retrying_job_cancelled_is_counted_and_said_to_be(fixed_api: Api) -> None:
    job = fixed_api.enqueue({"type": "fail", "payload": {"times": 5}, "max_attempts": 3})
    drain()
    assert fixed_api.get(f"/status/{job}").json["state"] == "retrying"
    assert fixed_api.post(f"/jobs/{job}/cancel").status == 200
    text = scrape(fixed_api)
    assert sample(text, "spool_jobs_failed_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs_cancelled_total", queue="default", type="fail") == 1
    said = help_of(text, "spool_jobs_cancelled_total")
    assert "before they ran" not in said
    assert "retrying" in said


def test_a_redriven_job_that_dies_again_counts_dead_twice_enqueued_once(fixed_api: Api) -> None:
    job = fixed_api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    drain()
    assert fixed_api.post(f"/dlq/{job}/redrive").status == 200
    drain()
    assert fixed_api.get(f"/status/{job}").json["state"] == "dead"
    text = scrape(fixed_api)
    assert sample(text, "spool_jobs_enqueued_total", queue="default", type="fail") == 1
    assert sample(text, "spool_jobs_dead_total", queue="default", type="fail") == 2
    assert sample(text, "spool_jobs", queue="default", state="dead") == 1
    assert "redrive" in help_of(text, "spool_jobs_enqueued_total")
    assert "redrive" in help_of(text, "spool_jobs_dead_total")
    # End to end is observed at each final outcome, the one after the redrive too
    # (docs/operations.md said "a job counts once").
    assert (
        sample(
            text, "spool_job_end_to_end_seconds_count", queue="default", type="fail", outcome="dead"
        )
        == 2
    )
