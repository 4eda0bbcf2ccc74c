"""store_clock.ServerClock: the server's time carried forward by ticks that never step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.clock import FakeClock
from chalicelib.storage.store_clock import ServerClock

SERVER = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.at = 100.0

    def __call__(self) -> float:
        return self.at


def test_before_any_reading_the_host_clock_stands_in() -> None:
    host = FakeClock()
    assert ServerClock(fallback=host, ticks=Ticks()).now() == host.now()


def test_a_reading_is_carried_forward_by_ticks_not_by_the_host_clock() -> None:
    host, ticks = FakeClock(), Ticks()
    clock = ServerClock(fallback=host, ticks=ticks)
    clock.observe(SERVER, 99.0, 101.0)  # placed halfway through the round trip: 100
    host.advance(3600)  # the host's wall clock steps an hour: nothing follows it
    ticks.at = 105.0
    assert clock.now() == SERVER + timedelta(seconds=5)


def test_a_reading_is_due_once_per_refresh_period_whether_or_not_it_worked() -> None:
    ticks = Ticks()
    clock = ServerClock(ticks=ticks, refresh=30.0)
    assert clock.due()
    assert not clock.due()  # tried (and perhaps failed): not again at once
    ticks.at += 29.0
    assert not clock.due()
    ticks.at += 1.0
    assert clock.due()
