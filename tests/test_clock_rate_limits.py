"""Rate limits survive the wall clock stepping back (an NTP step, a VM restored).

Token buckets and rate windows keep wall-clock instants in the store. A bucket's
last update "never goes back in time" (so concurrent takes cannot refill the same
time twice), and a start recorded just before the step is dated in the future
afterwards. Either way, a step back of an hour froze the limit for that hour: the
bucket refilled nothing until the clock was back where it had been, while every
refused take said to retry in a fraction of a second, and a rate-limited queue
started nothing at all. After a step back, refilling and windows go on from the
new time: seconds after the limit is next used the bucket has tokens again, and a
window later the queue starts jobs again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.limits import ClaimPolicy, Limit, Rate
from chalicelib.storage.base import JobStore
from chalicelib.storage.memory import MemoryStore
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job

NOON = datetime(2030, 1, 1, 12, tzinfo=UTC)
HOUR = 3600.0


@pytest.fixture(params=["memory", "sqlite"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, FakeClock]]:
    clock = FakeClock(NOON)
    store: JobStore
    if request.param == "memory":
        store = MemoryStore(clock=clock)
    else:
        store = SQLiteStore(str(tmp_path / "spool.db"), clock=clock)
    yield store, clock
    store.close()


def test_a_bucket_refills_after_the_clock_steps_back(clocked: tuple[JobStore, FakeClock]) -> None:
    store, clock = clocked
    waits = [store.take_tokens("enqueue:acme", 5.0, 5) for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and waits[5] > 0  # emptied
    clock.advance(-HOUR)
    store.take_tokens("enqueue:acme", 5.0, 5)  # the first take after the step
    clock.advance(10)  # 50 tokens' worth of time at 5/s, well over the burst
    assert store.take_tokens("enqueue:acme", 5.0, 5) == 0.0


def test_a_rate_window_reopens_after_the_clock_steps_back(
    clocked: tuple[JobStore, FakeClock],
) -> None:
    store, clock = clocked
    store.add([new_job(clock, "echo", queue="mail") for _ in range(3)])
    policy = ClaimPolicy(limits=(Limit(scope="queue", name="mail", rate=Rate(2, 10.0)),))
    assert len(store.claim(10, 30, queues=["mail"], policy=policy)) == 2
    clock.advance(-HOUR)
    # Jobs enqueued after the step (those from before it are due an hour later: their
    # run_at is an instant, and the clock now reads an hour before it).
    store.add([new_job(clock, "echo", queue="mail") for _ in range(3)])
    store.claim(10, 30, queues=["mail"], policy=policy)  # the first claim after the step
    clock.advance(60)  # six windows of 10 s
    assert len(store.claim(10, 30, queues=["mail"], policy=policy)) == 2
