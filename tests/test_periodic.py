"""Periodic jobs on the test clock: ticks, restarts, racing schedulers, time zones."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from chalicelib import periodic
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.handlers import Registry
from chalicelib.models import Job, JobQuery, JobState
from chalicelib.periodic import SYSTEM_TENANT, Schedule, ScheduleBook, Scheduler
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.backends import open_backend

T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


class ReportPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str


@pytest.fixture
def handlers() -> Registry:
    """A private registry, so these tests do not depend on the built-in handlers."""
    local = Registry()

    @local.handler("report", payload=ReportPayload)
    def report(payload: ReportPayload, ctx: Any) -> dict[str, Any]:
        tick = periodic.tick_of(ctx.job)
        return {"kind": payload.kind, "tick": tick.isoformat() if tick else None}

    return local


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(
    backend: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[JobStore]:
    with open_backend(backend, clock, tmp_path, request) as opened:
        yield opened


@pytest.fixture
def second_store(
    backend: str, store: JobStore, clock: FakeClock, tmp_path: Path
) -> Iterator[JobStore]:
    """What another scheduler sees: the same memory store, or the SQLite file reopened."""
    if backend == "memory":
        yield store
        return
    from chalicelib.storage.sqlite import SQLiteStore

    other = SQLiteStore(str(tmp_path / "spool.db"), clock)
    yield other
    other.close()


def every_minute(**fields: Any) -> Schedule:
    return Schedule(
        name=fields.pop("name", "minutely"),
        type="report",
        every=60,
        payload=fields.pop("payload", {"kind": "minutely"}),
        **fields,
    )


def periodic_jobs(store: JobStore) -> list[Job]:
    return store.list_jobs(JobQuery(tenant=SYSTEM_TENANT, limit=1000)).jobs


def ticks_of(store: JobStore) -> list[datetime]:
    found = [periodic.tick_of(job) for job in periodic_jobs(store)]
    return sorted(t for t in found if t is not None)


# -- schedule arithmetic ------------------------------------------------------------------
def test_cron_in_a_time_zone_follows_daylight_saving_time() -> None:
    nightly = Schedule(name="nightly", type="report", cron="0 2 * * *", tz="Europe/Paris")
    winter = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    summer = datetime(2030, 7, 15, 12, 0, tzinfo=UTC)
    assert nightly.latest_tick(winter) == datetime(2030, 1, 15, 1, 0, tzinfo=UTC)
    assert nightly.next_tick(winter) == datetime(2030, 1, 16, 1, 0, tzinfo=UTC)
    assert nightly.latest_tick(summer) == datetime(2030, 7, 15, 0, 0, tzinfo=UTC)
    exactly = datetime(2030, 1, 16, 1, 0, tzinfo=UTC)
    assert nightly.latest_tick(exactly) == exactly  # a tick at "now" is due now
    assert nightly.next_tick(exactly) == datetime(2030, 1, 17, 1, 0, tzinfo=UTC)


def test_a_fixed_hour_runs_once_when_clocks_go_back_and_at_all_when_they_skip() -> None:
    nightly = Schedule(name="n", type="report", cron="30 2 * * *", tz="Europe/Paris")
    half_hourly = Schedule(name="h", type="report", cron="*/30 * * * *", tz="Europe/Paris")

    def ticks(schedule: Schedule, start: datetime, hours: int) -> list[datetime]:
        out, when = [], start
        while (when := schedule.next_tick(when)) < start + timedelta(hours=hours):
            out.append(when)
        return out

    autumn = datetime(2030, 10, 26, 12, tzinfo=UTC)  # 02:00-03:00 happens twice on the 27th
    assert ticks(nightly, autumn, 48) == [
        datetime(2030, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2030, 10, 28, 1, 30, tzinfo=UTC),
    ]
    # A wildcard hour keeps its pace through the repeated hour (00:00-02:00 UTC).
    steady = ticks(half_hourly, datetime(2030, 10, 26, 23, tzinfo=UTC), 4)
    assert len(steady) == 7
    assert {b - a for a, b in itertools.pairwise(steady)} == {timedelta(minutes=30)}
    spring = datetime(2030, 3, 30, 12, tzinfo=UTC)  # 02:30 does not exist on the 31st
    assert len(ticks(nightly, spring, 48)) == 2


def test_intervals_are_aligned_to_an_anchor() -> None:
    quarter = Schedule(name="q", type="report", every=900)
    assert quarter.latest_tick(T0 + timedelta(minutes=7)) == T0
    assert quarter.next_tick(T0 + timedelta(minutes=7)) == T0 + timedelta(minutes=15)
    anchored = Schedule(name="a", type="report", every=3600, start=T0 + timedelta(minutes=10))
    assert anchored.latest_tick(T0) is None
    assert anchored.next_tick(T0) == T0 + timedelta(minutes=10)
    assert anchored.latest_tick(T0 + timedelta(hours=2)) == T0 + timedelta(hours=1, minutes=10)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800)],
)
def test_durations(value: Any, seconds: int) -> None:
    assert periodic.parse_duration(value) == seconds
    assert periodic.parse_duration(timedelta(seconds=seconds)) == seconds


@pytest.mark.parametrize(
    "fields",
    [
        {"cron": "61 * * * *"},
        {"cron": "0 2 * * *", "every": 60},
        {},
        {"every": 0},
        {"every": 60, "tz": "Mars/Olympus_Mons"},
        {"every": 60, "name": "has:colon"},
        {"every": 60, "name": ""},
        {"every": 60, "start": datetime(2030, 1, 1)},
        {"every": 60, "catch_up": -1},
        # Ticks past the year 9999: the scheduler thread died of an OverflowError.
        {"cron": "0 0 * * *", "start": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
        {"every": 86400, "start": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
    ],
)
def test_invalid_schedules_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Schedule(**{"name": "s", "type": "report", **fields})


@pytest.mark.parametrize("field", ["every", "catch_up"])
def test_a_duration_given_as_true_is_refused_not_read_as_one_second(field: str) -> None:
    spec = {"name": "s", "type": "report", "every": 60, field: True}
    with pytest.raises(ValidationError, match="not true or false"):
        periodic.ScheduleSpec.model_validate(spec)


def test_catch_up_zero_fires_a_tick_met_within_its_second(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    """Every tick is met a few milliseconds late: with catch_up 0 each was skipped."""
    hourly = Schedule(name="hourly", type="report", every=3600, catch_up=0, payload={"kind": "h"})
    clock.advance(0.004)
    assert [f.outcome for f in Scheduler(store, handlers, [hourly]).fire_due()] == ["enqueued"]
    clock.set(T0 + timedelta(hours=1, seconds=1, milliseconds=5))  # over a second late
    assert [f.outcome for f in Scheduler(store, handlers, [hourly]).fire_due()] == ["skipped"]


# -- firing ------------------------------------------------------------------------------
def test_each_tick_enqueues_one_job_under_the_system_tenant(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    scheduler = Scheduler(store, handlers, [every_minute()])
    [first] = scheduler.fire_due()
    assert (first.outcome, first.tick) == ("enqueued", T0)
    assert scheduler.fire_due() == []  # same tick: settled, no store write
    clock.advance(30)
    assert scheduler.fire_due() == []
    clock.advance(30)
    [second] = scheduler.fire_due()
    assert (second.outcome, second.tick) == ("enqueued", T0 + timedelta(minutes=1))
    jobs = periodic_jobs(store)
    assert len(jobs) == 2
    assert {j.tenant for j in jobs} == {SYSTEM_TENANT}
    assert {j.idempotency_key for j in jobs} == {
        "periodic:minutely:2030-01-15T12:00:00Z",
        "periodic:minutely:2030-01-15T12:01:00Z",
    }
    assert all(j.payload == {"kind": "minutely"} for j in jobs)


def test_a_restart_neither_repeats_nor_skips_and_catches_up_once(
    store: JobStore, second_store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    Scheduler(store, handlers, [every_minute()]).fire_due()
    clock.advance(60)
    Scheduler(store, handlers, [every_minute()]).fire_due()
    # A restart within the same tick: the store says it already fired.
    [again] = Scheduler(second_store, handlers, [every_minute()]).fire_due()
    assert again.outcome == "already"
    # Down for five ticks, then a new scheduler: the most recent tick fires, once.
    clock.advance(5 * 60 + 20)
    restarted = Scheduler(second_store, handlers, [every_minute()])
    [caught_up] = restarted.fire_due()
    assert (caught_up.outcome, caught_up.tick) == ("enqueued", T0 + timedelta(minutes=6))
    assert restarted.fire_due() == []
    assert [f.outcome for f in Scheduler(store, handlers, [every_minute()]).fire_due()] == [
        "already"
    ]
    clock.advance(40)
    [next_one] = restarted.fire_due()
    assert next_one.tick == T0 + timedelta(minutes=7)
    assert ticks_of(store) == [T0 + timedelta(minutes=m) for m in (0, 1, 6, 7)]


def test_a_schedule_edited_after_its_tick_fired_settles_that_tick_without_retrying(
    store: JobStore, second_store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    """A deploy that changes a schedule's payload mid-tick: the tick already fired
    under the old payload, so its idempotency key names a different job. That is
    "already", once, not an error retried on every call."""
    [first] = Scheduler(store, handlers, [every_minute()]).fire_due()
    edited = Scheduler(second_store, handlers, [every_minute(payload={"kind": "edited"})])
    [again] = edited.fire_due()
    assert (again.outcome, again.job_id) == ("already", first.job_id)
    assert edited.fire_due() == []  # settled: no second store write
    clock.advance(60)
    [next_tick] = edited.fire_due()
    assert next_tick.outcome == "enqueued"
    payloads = sorted(str(j.payload["kind"]) for j in periodic_jobs(store))
    assert payloads == ["edited", "minutely"]


def test_catch_up_bounds_how_late_a_tick_may_fire(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    hourly = Schedule(name="hourly", type="report", every=3600, catch_up=120, payload={"kind": "h"})
    clock.advance(100)
    assert [f.outcome for f in Scheduler(store, handlers, [hourly]).fire_due()] == ["enqueued"]
    clock.advance(3600 + 600)  # the 13:00 tick is first seen at 13:11:40
    assert [f.outcome for f in Scheduler(store, handlers, [hourly]).fire_due()] == ["skipped"]
    clock.set(T0 + timedelta(hours=2, seconds=30))
    assert [f.outcome for f in Scheduler(store, handlers, [hourly]).fire_due()] == ["enqueued"]
    assert ticks_of(store) == [T0, T0 + timedelta(hours=2)]


def test_two_schedulers_racing_enqueue_each_tick_once(
    store: JobStore, second_store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    ticks = 15
    barrier = threading.Barrier(2, timeout=10)
    outcomes: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def scheduler_loop(index: int, target: JobStore) -> None:
        try:
            for _ in range(ticks):
                barrier.wait()  # both fire the same tick at the same moment
                fresh = Scheduler(target, handlers, [every_minute()])  # no cache to hide behind
                outcomes[index].extend(f.outcome for f in fresh.fire_due())
                barrier.wait()
                if index == 0:
                    clock.advance(60)
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=scheduler_loop, args=(0, store)),
        threading.Thread(target=scheduler_loop, args=(1, second_store)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert Counter(outcomes[0] + outcomes[1]) == {"enqueued": ticks, "already": ticks}
    assert ticks_of(store) == [T0 + timedelta(minutes=m) for m in range(ticks)]


def test_fired_jobs_run_and_know_their_tick(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    nightly = Schedule(
        name="nightly", type="report", cron="0 2 * * *", tz="Europe/Paris", payload={"kind": "n"}
    )
    [fired] = Scheduler(store, handlers, [nightly]).fire_due()
    Worker(store, handlers, WorkerConfig(concurrency=1)).drain()
    job = store.get(fired.job_id or "")
    assert job is not None and job.state is JobState.SUCCEEDED
    assert job.result == {"kind": "n", "tick": "2030-01-15T01:00:00+00:00"}


def test_a_schedule_whose_payload_is_invalid_reports_once_and_enqueues_nothing(
    store: JobStore, handlers: Registry
) -> None:
    broken = Schedule(name="broken", type="report", every=60, payload={"kind": 1, "extra": True})
    unknown = Schedule(name="unknown", type="no_such_type", every=60)
    scheduler = Scheduler(store, handlers, [broken, unknown, every_minute()])
    outcomes = {f.name: f for f in scheduler.fire_due()}
    assert outcomes["broken"].outcome == "error"
    assert outcomes["unknown"].outcome == "error"
    assert "no_such_type" in (outcomes["unknown"].error or "")
    assert outcomes["minutely"].outcome == "enqueued"
    assert scheduler.fire_due() == []  # the same mistake is not retried every call
    assert len(periodic_jobs(store)) == 1


def test_next_runs(clock: FakeClock) -> None:
    schedules = [
        every_minute(),
        Schedule(name="nightly", type="report", cron="0 2 * * *", tz="Europe/Paris"),
        Schedule(name="off", type="report", every=60, enabled=False),
    ]
    clock.advance(10)
    assert periodic.next_runs(clock, schedules=schedules) == {
        "minutely": T0 + timedelta(minutes=1),
        "nightly": datetime(2030, 1, 16, 1, 0, tzinfo=UTC),
    }


# -- declaring schedules -------------------------------------------------------------------
def test_periodic_above_handler_declares_a_schedule_for_that_type() -> None:
    local = Registry()
    book = ScheduleBook()

    @book.periodic(
        "nightly_report", cron="0 2 * * *", tz="Europe/Paris", payload={"kind": "n"}, registry=local
    )
    @local.handler("report", payload=ReportPayload)
    def report(payload: ReportPayload) -> None:
        return None

    [schedule] = book.all()
    assert (schedule.name, schedule.type, schedule.cron) == (
        "nightly_report",
        "report",
        "0 2 * * *",
    )
    assert schedule.payload == {"kind": "n"}
    with pytest.raises(ValueError, match="above @handler"):

        @local.handler("other")
        @book.periodic("wrong_order", every="1h", registry=local)
        def other(payload: dict[str, Any]) -> None:
            return None


def test_settings_schedules_add_replace_and_disable(clock: FakeClock) -> None:
    declared = [every_minute(), Schedule(name="hourly", type="report", every=3600)]
    env = {
        "SPOOL_SCHEDULES": (
            '[{"name": "minutely", "type": "report", "every": "5m", "payload": {"kind": "x"}},'
            ' {"name": "hourly", "type": "report", "every": 3600, "enabled": false},'
            ' {"name": "daily", "type": "report", "cron": "0 6 * * *", "tz": "Asia/Tokyo"}]'
        )
    }
    active = {s.name: s for s in periodic.active_schedules(Settings.from_env(env), declared)}
    assert set(active) == {"minutely", "daily"}
    assert active["minutely"].every == 300
    assert active["minutely"].payload == {"kind": "x"}
    by_name = '{"weekly": {"type": "report", "cron": "0 9 * * 1"}}'
    [weekly] = periodic.active_schedules(Settings.from_env({"SPOOL_SCHEDULES": by_name}), [])
    assert (weekly.name, weekly.cron) == ("weekly", "0 9 * * 1")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"x": 1}' + "]",
        '"a string"',
        '[{"name": "n", "type": "report"}]',
        '[{"name": "n", "type": "report", "every": "soon"}]',
        '[{"name": "n", "type": "report", "every": 60, "surprise": 1}]',
        '{"a": 1}',  # an object by name whose entry is not an object
        '{"ok": {"type": "report", "every": 60}, "b": [1]}',
        # Valid to croniter, but no date matches, or not cron's 5 or 6 fields: walked
        # only when firing, these stopped every schedule (and under serve, every job).
        '[{"name": "n", "type": "report", "cron": "0 0 30 2 *"}]',
        '[{"name": "n", "type": "report", "cron": "0 0 31 4 *"}]',
        '[{"name": "n", "type": "report", "cron": "0 0 1 1 * 0 2030"}]',
        '[{"name": "n", "type": "report", "cron": "@reboot"}]',
        # One name twice: the last won, silently.
        '[{"name": "n", "type": "report", "every": 60},'
        ' {"name": "n", "type": "report", "every": 5}]',
        '{"n": {"type": "report", "every": 60}, "n": {"type": "report", "every": 5}}',
    ],
)
def test_bad_settings_are_reported_while_code_schedules_still_fire(
    raw: str, store: JobStore, handlers: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="SPOOL_SCHEDULES"):
        periodic.active_schedules(Settings.from_env({"SPOOL_SCHEDULES": raw}), [])
    monkeypatch.setattr(periodic, "book", ScheduleBook())
    periodic.book.add(every_minute())
    fired = periodic.fire_due(store, handlers, settings=Settings.from_env({"SPOOL_SCHEDULES": raw}))
    assert [(f.name, f.outcome) for f in fired] == [
        ("SPOOL_SCHEDULES", "error"),
        ("minutely", "enqueued"),
    ]


def test_fire_due_caches_settled_ticks_per_store(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    schedules = [every_minute()]
    assert [f.outcome for f in periodic.fire_due(store, handlers, schedules=schedules)] == [
        "enqueued"
    ]
    assert periodic.fire_due(store, handlers, clock, schedules=schedules) == []
    clock.advance(60)
    assert [f.outcome for f in periodic.fire_due(store, handlers, schedules=schedules)] == [
        "enqueued"
    ]


# -- one duration grammar (shared with the command line) ------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400), ("1d 12h", 129600), ("2m30s", 150), ("1w1d", 691200), ("1H", 3600)],
)
def test_durations_combine_units(text: str, seconds: int) -> None:
    from chalicelib.durations import parse_seconds

    assert periodic.parse_duration(text) == seconds
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-5", "1h-", "soon", "1h 30", "30m1", "1.5.2s"])
def test_durations_refuse_what_they_cannot_read(text: str) -> None:
    from chalicelib.durations import parse_seconds

    with pytest.raises(ValueError, match="duration"):
        parse_seconds(text)


def test_schedule_durations_stay_whole_seconds() -> None:
    from chalicelib.durations import parse_seconds

    assert parse_seconds("1.5s") == 1.5  # a delay may be fractional
    with pytest.raises(ValueError, match="whole seconds"):
        periodic.parse_duration("1.5s")


# -- schedules that can never enqueue ------------------------------------------------
def test_problems_name_every_schedule_that_could_never_enqueue(
    clock: FakeClock, handlers: Registry
) -> None:
    from chalicelib.service import Service
    from chalicelib.storage.memory import MemoryStore

    store = MemoryStore(clock)
    schedules = [
        Schedule(name="fine", type="report", every=60, payload={"kind": "daily"}),
        Schedule(name="nobody", type="no.such.type", every=60),
        Schedule(name="negative", type="report", every=60, payload={"kind": 5}),
        Schedule(name="badqueue", type="report", every=60, queue="has space"),
    ]
    found = periodic.problems(Service(store, handlers), schedules)
    assert set(found) == {"nobody", "negative", "badqueue"}, found
    assert "unknown job type 'no.such.type'" in found["nobody"]
    assert "kind" in found["negative"]
    assert "queue" in found["badqueue"]
    assert store.counts() == {}  # checking stores nothing


def test_a_broken_schedule_is_logged_once_not_every_tick(
    clock: FakeClock, handlers: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import uuid

    from chalicelib.storage.memory import MemoryStore

    store = MemoryStore(clock)
    name = f"broken-{uuid.uuid4().hex[:8]}"
    broken = Schedule(name=name, type="no.such.type", every=60)
    caplog.set_level(logging.DEBUG, logger="spool.periodic")
    outcomes = []
    for _ in range(4):
        outcomes += periodic.fire_due(store, handlers, clock, schedules=[broken])
        clock.advance(60)
    assert [f.outcome for f in outcomes] == ["error"] * 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and name in r.getMessage()]
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("macro", "fields"),
    [("@yearly", "0 0 1 1 *"), ("@Daily", "0 0 * * *"), ("@hourly", "0 * * * *")],
)
def test_cron_macros_stand_for_their_five_fields(macro: str, fields: str) -> None:
    """croniter took "@yearly", then the DST rule read its second field and raised."""
    schedule = Schedule(name="m", type="report", cron=macro)
    assert schedule.cron == fields
    now = datetime(2030, 6, 15, 12, 30, tzinfo=UTC)
    assert schedule.next_tick(now) == Schedule(name="f", type="report", cron=fields).next_tick(now)


def test_one_schedule_that_fails_to_fire_leaves_the_others_firing(
    store: JobStore, handlers: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = every_minute(name="broken")

    def cannot(now: datetime) -> datetime:
        raise IndexError("list index out of range")

    object.__setattr__(broken, "latest_tick", cannot)
    fired = Scheduler(store, handlers, [broken, every_minute()]).fire_due()
    assert [(f.name, f.outcome) for f in fired] == [("broken", "error"), ("minutely", "enqueued")]
    assert fired[0].error == "IndexError: list index out of range"


def test_a_tick_that_meets_a_store_outage_is_enqueued_when_the_store_is_back(
    store: JobStore,
    handlers: Registry,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The long-running scheduler slept to the next tick after a failed enqueue, and
    then fired that one: a store down for a second at a nightly tick lost the night's
    job. Now the same tick is tried again with backoff, and the outage is said once."""
    import sqlite3
    import time

    monkeypatch.setattr(periodic, "book", ScheduleBook())  # no code schedules here
    raw = '[{"name": "hourly", "type": "report", "every": 3600, "payload": {"kind": "h"}}]'
    clock.set(T0 + timedelta(seconds=10))  # 10 s after the tick at 12:00
    real_add, failures = store.add, iter(range(3))

    def flaky_add(jobs: Any) -> Any:
        if next(failures, None) is not None:
            raise sqlite3.OperationalError("disk I/O error")
        return real_add(jobs)

    monkeypatch.setattr(store, "add", flaky_add)
    stop = threading.Event()
    runner = threading.Thread(
        target=periodic.run_scheduler,
        args=(store, stop, handlers),
        kwargs={"settings": Settings.from_env({"SPOOL_SCHEDULES": raw})},
        daemon=True,
    )
    with caplog.at_level("DEBUG", logger="spool"):
        runner.start()
        try:
            deadline = time.monotonic() + 20  # the fix retries within ~1 s; before, 30 s
            while not periodic_jobs(store) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            runner.join(10)
    assert not runner.is_alive()
    assert [periodic.tick_of(job) for job in periodic_jobs(store)] == [T0]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("store unavailable" in line for line in said) == 1, said
    assert sum("store is back" in line for line in said) == 1, said
    assert all(r.exc_info is None for r in caplog.records if "periodic" in r.getMessage())
