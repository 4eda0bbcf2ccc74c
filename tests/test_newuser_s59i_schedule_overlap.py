"""A tick whose job was still running when the next tick came: nothing said what happens.

Asked from outside (two `spool worker` on one SQLite file, a schedule `every: 2s`
whose handler sleeps 5 s): each tick's job ran beside the ones before it, four at
once within 12 s, and docs/handlers.md ("Periodic jobs") said nothing about overlap,
so a user could not tell whether ticks pile up, are skipped or wait. With
SPOOL_LIMITS `{"type:tick": {"concurrency": 1}}` they ran one at a time (the
others waited, queued). That is the rule, now written where schedules are: a tick
is enqueued whatever its previous tick's job is doing, and a concurrency limit on
the type serialises them. The first test pins the first half; the second, that the docs say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.periodic import Schedule, Scheduler, tick_of
from chalicelib.storage.base import JobStore
from tests.backends import open_backend

T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "handlers.md"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[JobStore]:
    with open_backend("sqlite", clock, tmp_path, request) as opened:
        yield opened


@pytest.fixture
def handlers() -> Registry:
    local = Registry()

    @local.handler("slow")
    def slow(payload: Any, ctx: Any) -> dict[str, Any]:
        return {}

    return local


def test_the_next_tick_is_enqueued_while_the_previous_ticks_job_runs(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    schedule = Schedule(name="slow", type="slow", every=60)
    scheduler = Scheduler(store, handlers, [schedule])
    [first] = scheduler.fire_due()
    [running] = store.claim(1, lease_seconds=600)
    assert running.id == first.job_id
    clock.advance(60)
    [second] = scheduler.fire_due()
    assert (second.outcome, second.tick) == ("enqueued", T0 + timedelta(seconds=60))
    [queued] = store.claim(1, lease_seconds=600)  # runnable beside the first
    assert queued.id == second.job_id
    assert tick_of(queued) == T0 + timedelta(seconds=60)
    assert store.get(running.id).state == JobState.RUNNING  # type: ignore[union-attr]


def test_docs_say_what_happens_when_ticks_overlap() -> None:
    text = " ".join(DOCS.read_text().split())
    assert "**Overlapping ticks.**" in text
    assert '{"type:<the schedule\'s type>": {"concurrency": 1}}' in text


def test_docs_say_one_job_per_tick_runs_at_least_once() -> None:
    """From outside: a `spool worker` SIGSTOPped past a 3 s lease while its tick's job ran
    (`every: 1h`, a 4 s handler); a second worker retried the attempt, and the handler
    logged two runs for the one tick. "Exactly once per tick" means one job, not one run."""
    text = " ".join(DOCS.read_text().split())
    assert "the handler can run twice for one tick" in text
