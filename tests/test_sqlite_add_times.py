"""The SQLite store's add answers what get() reads back, and to_micros stays exact
(stop 40: the add no longer rebuilds plain UTC datetimes, to_micros no longer builds
its divisor per call)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage.base import EPOCH, to_micros
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job


@pytest.mark.parametrize(
    "run_at",
    [
        datetime(2030, 1, 1, 0, 0, 5, 123456, tzinfo=UTC),
        datetime(2030, 1, 1, 2, 0, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2030, 1, 1, 0, 0, 5, 123456, tzinfo=timezone.utc),  # noqa: UP017
    ],
)
@pytest.mark.parametrize("clock_offset", [None, timedelta(hours=-5)])
def test_an_add_answers_the_job_get_reads_back(
    tmp_path: Path, run_at: datetime, clock_offset: timedelta | None
) -> None:
    zone = UTC if clock_offset is None else timezone(clock_offset)
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 1, 654321, tzinfo=UTC).astimezone(zone))
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    try:
        [added] = store.add([new_job(clock, run_at=run_at)])
        stored = store.get(added.job.id)
        assert stored is not None
        assert added.job.model_dump() == stored.model_dump()
        for name in ("run_at", "created_at", "updated_at"):
            assert getattr(added.job, name).utcoffset() == timedelta(0), name
    finally:
        store.close()


@pytest.mark.parametrize(
    "when",
    [
        EPOCH,
        EPOCH - timedelta(microseconds=1),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2030, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_to_micros_is_exact(when: datetime) -> None:
    delta = when - EPOCH
    assert to_micros(when) == (delta.days * 86_400 + delta.seconds) * 1_000_000 + (
        delta.microseconds
    )
