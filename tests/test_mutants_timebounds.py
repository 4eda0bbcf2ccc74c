"""chalicelib/timebounds.py at its edges: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.timebounds*'` left
alive (docs/testing.md): a RetryAfter below zero or under a second, a NaN delay; a run_at
normalized while the machine's local zone is not UTC; the message a client reads
for a run_at no datetime can hold.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.clock import FakeClock
from chalicelib.errors import RetryAfter
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest
from chalicelib.storage.memory import MemoryStore
from chalicelib.timebounds import clamp_delay, to_utc
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job

OUT_OF_RANGE = "is outside the range of times Spool can represent (years 1 to 9999 in UTC)"


@pytest.fixture
def local_zone_ahead_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+03:00 (a POSIX TZ string, no tzdata needed)."""
    monkeypatch.setenv("TZ", "SPL-3")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("asked", "waited"),
    [(-30.0, 0.0), (-0.5, 0.0), (0.0, 0.0), (0.5, 0.5), (90.0, 90.0)],
    ids=["negative", "negative-fraction", "zero", "half-second", "ninety"],
)
def test_a_retry_after_waits_what_it_asks_never_less_than_nothing(
    clock: FakeClock, asked: float, waited: float
) -> None:
    store = MemoryStore(clock)
    reg = Registry()

    @reg.handler("later", max_attempts=3, timeout=5)
    def later(payload: dict[str, Any]) -> None:
        raise RetryAfter(asked, "come back")

    added = store.add([new_job(clock, "later", max_attempts=3)])[0].job
    worker = Worker(store, reg, WorkerConfig(concurrency=1))
    try:
        assert worker.process([added.id]) == {added.id: "retrying"}  # one attempt, no more
    finally:
        worker.close()
        job = store.get(added.id)
        store.close()
    assert job is not None
    assert job.state is JobState.RETRYING
    assert job.run_at == clock.now() + timedelta(seconds=waited)


def test_clamp_delay_counts_nan_as_no_delay() -> None:
    # RetryAfter refuses NaN when raised (tests/test_retry_after_values.py); the clamp
    # still holds for whatever else reaches it.
    assert clamp_delay(math.nan) == 0.0


@pytest.mark.usefixtures("local_zone_ahead_of_utc")
def test_to_utc_is_utc_whatever_the_local_zone() -> None:
    assert time.timezone == -3 * 3600  # the fixture took effect
    asked = datetime(2030, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    got = to_utc(asked)
    assert got == asked
    assert got.utcoffset() == timedelta(0)
    assert got.isoformat() == "2030-01-01T00:00:00+00:00"


@pytest.mark.usefixtures("local_zone_ahead_of_utc")
def test_a_run_at_is_stored_in_utc_whatever_the_local_zone() -> None:
    request = EnqueueRequest(type="echo", run_at="2030-01-01T02:00:00+02:00")
    assert request.run_at is not None
    assert request.run_at.tzinfo is UTC
    assert request.run_at.isoformat() == "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "value",
    [
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    ],
    ids=["year-10000", "year-0"],
)
def test_a_time_utc_cannot_hold_is_refused_saying_so(value: datetime) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(OUT_OF_RANGE)}$"):
        to_utc(value)
    with pytest.raises(ValidationError) as info:
        EnqueueRequest(type="echo", run_at=value)
    [problem] = info.value.errors()
    assert problem["msg"] == f"Value error, run_at {OUT_OF_RANGE}"
