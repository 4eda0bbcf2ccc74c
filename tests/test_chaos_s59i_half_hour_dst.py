"""A wildcard-hour cron lost a tick when Lord Howe Island's clocks went back 30 minutes.

docs/handlers.md says a cron with a wildcard hour "keeps its pace" when clocks go
back. On 2026-04-05 Australia/Lord_Howe goes from 02:00 (+11) back to 01:30 (+10:30),
so 01:30-02:00 happens twice. `*/20 * * * *` matches 01:40 both times, but
croniter's forward walk stepped from the first 01:40 (14:40Z) to 02:00 (15:30Z),
over the second (15:10Z), while its backward walk found it. A running scheduler
settles each tick until `next_tick`, so the second 01:40 never fired. The forward
walk is now checked backwards from its answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.periodic import Schedule, Scheduler
from chalicelib.storage.memory import MemoryStore

FIRST_0140 = datetime(2026, 4, 4, 14, 40, tzinfo=UTC)  # 01:40 +11
SECOND_0140 = datetime(2026, 4, 4, 15, 10, tzinfo=UTC)  # 01:40 +10:30, clocks went back


def schedule() -> Schedule:
    return Schedule(name="pace", type="tick", cron="*/20 * * * *", tz="Australia/Lord_Howe")


def test_the_repeated_half_hour_keeps_a_wildcard_hour_crons_pace() -> None:
    assert schedule().next_tick(FIRST_0140) == SECOND_0140
    assert schedule().latest_tick(SECOND_0140 + timedelta(seconds=30)) == SECOND_0140


def test_a_running_scheduler_fires_the_second_0140() -> None:
    clock = FakeClock(FIRST_0140)
    handlers = Registry()

    @handlers.handler("tick")
    def tick(payload: object) -> dict[str, object]:
        return {}

    scheduler = Scheduler(MemoryStore(clock), handlers, [schedule()])
    fired = []
    while clock.now() < datetime(2026, 4, 4, 15, 40, tzinfo=UTC):
        fired += [f.tick for f in scheduler.fire_due() if f.outcome == "enqueued"]
        clock.advance(60)
    assert fired == [
        FIRST_0140,
        SECOND_0140,
        datetime(2026, 4, 4, 15, 30, tzinfo=UTC),  # 02:00 +10:30
    ]
