"""A backlog longer than an hour has a queue-wait quantile of its own.

Reproduced with `spool serve` (its own worker) on SQLite: a job due three hours
before a worker took it (a backlog built while the workers were down) was observed
in `spool_job_queue_wait_seconds` with a sum of 10,800 s but only in the `+Inf`
bucket, since 3,600 was the last finite bound. histogram_quantile() answers the
last finite bound for a quantile in `+Inf`, so the dashboard's p50/p95 queue-wait
panels read one hour for a three-hour backlog, and for every longer one: the
case `spool_job_run_duration_seconds` had until its buckets reached 12 hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.clock import FakeClock
from local.emulator import context, scheduled_event
from tests.apikit import Api, installed
from tests.test_metrics import OPERATOR_KEY, metrics_settings

HOURS = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed_api(tmp_path: Path, clock: FakeClock) -> Iterator[Api]:
    with (
        installed(metrics_settings(tmp_path), clock),
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client)


def wait_buckets(text: str) -> dict[float, float]:
    """le -> cumulative count of the default queue's echo queue-wait histogram."""
    pattern = re.compile(
        r'^spool_job_queue_wait_seconds_bucket\{le="([^"]+)",queue="default",type="echo"\} (\S+)$',
        re.M,
    )
    return {float(le): float(count) for le, count in pattern.findall(text)}


@pytest.mark.parametrize("waited_hours", [3, 20])
def test_a_wait_of_hours_lands_in_a_finite_bucket_at_least_as_long(
    timed_api: Api, clock: FakeClock, waited_hours: int
) -> None:
    timed_api.enqueue({"type": "echo"})
    clock.advance(waited_hours * HOURS)  # the workers were down all this time
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))
    reply = timed_api.get("/metrics", key=OPERATOR_KEY)
    assert reply.status == 200, reply.body
    buckets = wait_buckets(reply.body.decode())
    assert buckets[float("inf")] == 1
    finite = sorted(le for le in buckets if le != float("inf"))
    # The wait is inside a finite bucket, whose bound a quantile reads: never less
    # than the wait itself, and not the +Inf that reads as the last finite bound.
    holding = [le for le in finite if buckets[le] == 1]
    assert holding, f"the {waited_hours} h wait is only in +Inf: {buckets}"
    assert holding[0] >= waited_hours * HOURS
    assert all(buckets[le] == 0 for le in finite if le < waited_hours * HOURS)
