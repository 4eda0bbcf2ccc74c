"""A rate's line of held jobs (chalicelib/held_line.py) and the delay a place in it
gives a held job's new message (chalicelib/events.py, held_delay), on the memory
store with the test clock; the token bucket under it is the same on every store
(tests/contract/test_store_limits.py)."""

from __future__ import annotations

import pytest

from chalicelib import events, held_line
from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.held_line import Place, join
from chalicelib.limits import Hold, Limit, Rate
from chalicelib.storage.memory import MemoryStore

TEN = Limit("type", "echo", rate=Rate(10, 1.0))  # 10 per 1.1 s (Rate.window)


def test_each_batch_joins_behind_the_ones_before_and_the_line_moves_at_the_rate() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    first = join(store, TEN, 8)
    assert first is not None and first.ahead == 0
    assert first.spacing == pytest.approx(0.11)  # 1.1 s / 10
    second = join(store, TEN, 2)
    assert second is not None and second.ahead == pytest.approx(8)
    clock.advance(0.55)  # five places leave
    third = join(store, TEN, 10)
    assert third is not None and third.ahead == pytest.approx(5)
    assert third.after(3).wait == pytest.approx(8 * 0.11)
    other = join(store, Limit("queue", "mail", rate=Rate(10, 1.0)), 1)
    assert other is not None and other.ahead == 0  # each limit has its own line


def test_a_line_is_at_most_sqs_longest_delay_of_the_rate() -> None:
    store = MemoryStore(clock=FakeClock())
    slow = Limit("type", "echo", rate=Rate(1, 3600.0))  # not one start in 900 s
    for _ in range(3):
        place = join(store, slow, 1)
        assert place is not None and place.wait <= held_line.LONGEST + 3600.1
    busy = Limit("type", "echo2", rate=Rate(1, 1.0))  # 900 places of 1.1 s: full at 819
    for _ in range(100):
        place = join(store, busy, 10)
    assert place is not None and place.ahead <= int(held_line.LONGEST / 1.1)


def test_a_store_that_will_not_say_leaves_the_jobs_to_the_old_delay() -> None:
    class Refusing(MemoryStore):
        def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
            raise StoreUnavailable("down")

    assert join(Refusing(clock=FakeClock()), TEN, 3) is None
    assert join(MemoryStore(clock=FakeClock()), Limit("type", "x", concurrency=1), 3) is None


def test_a_place_in_the_line_adds_the_wait_for_the_jobs_ahead() -> None:
    hold = Hold("j", TEN.key, "rate", wait=0.4)
    place = Place(ahead=30, spacing=0.11)
    for jitter in (0.0, 1.0):
        fixed = lambda: jitter  # noqa: E731, B023 - called within the iteration
        # The window's part as before (at least 2 s, up to a tenth more), then the line's,
        # with no jitter: it would send a job back before the ones ahead of it.
        expected = events.HELD_REDELIVERY_SECONDS * (1 + jitter / 10) + 30 * 0.11
        assert events.held_delay(hold, 0, fixed, place) == pytest.approx(expected)
        assert events.held_delay(hold, 0, fixed, Place(10**6, 0.11)) == events.MAX_HELD_DELAY
        # A store that does not say when its window has room (wait None): one place.
        unknown = Hold("j", TEN.key, "rate")
        slow = Place(0, 3600.1)
        assert events.held_delay(unknown, 5, fixed, slow) == events.MAX_HELD_DELAY
    # A concurrency hold ignores a place: it doubles with the holds, as before.
    concurrency = Hold("j", "type:echo", "concurrency")
    assert events.held_delay(concurrency, 3, lambda: 1.0, place) == 16.0
