"""Periodic jobs: a cron expression or an interval, in a time zone, enqueued once per tick.

Exactly once per tick: each tick's job is enqueued under the system tenant
with the idempotency key `periodic:<name>:<tick in UTC>`. The store already
guarantees that a key is stored once per tenant, so any number of schedulers
(Lambda invocations, local emulators, processes on several machines) may call
`fire_due` at the same moment and only one job results. The store is also the
only state: which ticks fired is derivable from those keys, so a restarted
scheduler neither repeats a tick nor needs a state file.

Catch-up policy: each call fires the most recent tick at or before now, if it
has not fired. After downtime spanning several ticks, only the most recent
one fires, once (ticks are coalesced, never replayed in a burst); the older
ones are skipped. A schedule's `catch_up` (seconds) bounds how late a tick may
still fire: a tick older than that when first seen is skipped. With no
`catch_up`, a brand-new schedule fires its most recent tick as soon as a
scheduler first sees it. The finest useful resolution is how often `fire_due`
is called (every minute on AWS).

Keys live as long as their job: purge finished jobs no sooner than the
longest schedule period (or catch_up), or a purged tick could fire again. A store
that deletes finished jobs by itself (DynamoDB's retention_days) says how long it
keeps them (`finished_kept_seconds`), and a tick at least that late is not fired:
its job may have run and expired already.

Schedules come from code (`@periodic` above `@handler`, or `book.add`) and
from SPOOL_SCHEDULES (JSON); a settings entry replaces a code schedule of the
same name, and `"enabled": false` switches one off.
"""

from __future__ import annotations

import json
import logging
import re
import reprlib
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from chalicelib.clock import Clock
from chalicelib.config import MAX_PRIORITY, MIN_PRIORITY, QUEUE_NAME, Settings
from chalicelib.durations import parse_seconds
from chalicelib.errors import (
    IdempotencyConflict,
    Misconfigured,
    StoreUnavailable,
    ValidationFailed,
)
from chalicelib.handlers import HandlerFunc, Registry, bare_decorator, registry, whole_number
from chalicelib.jsonstrict import loads_strict
from chalicelib.models import Job
from chalicelib.number_text import validation_message
from chalicelib.retry import MAX_ATTEMPTS
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import JobStore
from chalicelib.store_outage import Outage, Quiet, describe, is_store_error, lost_write
from chalicelib.webhooks.source import WebhooksUnavailable

log = logging.getLogger("spool.periodic")

SYSTEM_TENANT = "_system"
KEY_PREFIX = "periodic:"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DST_SKIPS = 4000  # a per-second cron with fixed hours skips 3600 ticks once a year


def parse_duration(value: float | int | str | timedelta) -> int:
    """Whole seconds from 90, "90s", "15m", "2h", "1d", "1w", "1h30m" or a timedelta
    (the grammar of chalicelib/durations.py, shared with the command line)."""
    seconds = parse_seconds(value)
    if seconds != int(seconds):
        raise ValueError("durations are whole seconds")
    return int(seconds)


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


# cron's macros, as the five fields they stand for.
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_PROBE = datetime(2001, 1, 1, tzinfo=UTC)  # where a cron is first walked from


def _cron_fields(name: str, cron: str) -> str:
    """A cron expression of 5 fields (6: seconds last), or a macro as its 5 fields."""
    from croniter import croniter

    text = CRON_MACROS.get(cron.strip().lower(), cron.strip())
    if len(text.split()) not in (5, 6) or not croniter.is_valid(text):
        raise ValueError(
            f"schedule {name!r}: invalid cron expression {cron!r} (5 fields: minute hour "
            "day month weekday, or 6 with seconds last, or @hourly/@daily/@weekly/"
            "@monthly/@yearly)"
        )
    return text


def _tick_text(tick: datetime) -> str:
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, eq=False)
class Schedule:
    """When to enqueue which job. Exactly one of `cron` and `every` is set."""

    name: str
    type: str
    cron: str | None = None
    every: int | None = None  # seconds
    tz: str = "UTC"
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    catch_up: int | None = None  # seconds a tick may be late and still fire
    start: datetime | None = None  # no tick before it; anchors intervals (default: the epoch)
    enabled: bool = True

    def __post_init__(self) -> None:
        # fullmatch: match's `$` also matches before a final "\n", and "nightly\n" made
        # every tick's idempotency key hold a line break (refused at enqueue).
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"schedule name {self.name!r} must match {NAME_PATTERN.pattern}")
        self._check_kinds()
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r} needs exactly one of cron and every")
        if self.cron is not None:
            object.__setattr__(self, "cron", _cron_fields(self.name, self.cron))
        if self.every is not None and self.every < 1:
            raise ValueError(f"schedule {self.name!r}: every must be at least 1 second")
        if self.catch_up is not None and self.catch_up < 0:
            raise ValueError(f"schedule {self.name!r}: catch_up cannot be negative")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError(f"schedule {self.name!r}: start needs a time zone")
        if not isinstance(self.tz, str):  # ZoneInfo(5) raised a bare TypeError
            raise ValueError(f"schedule {self.name!r}: tz={reprlib.repr(self.tz)}: a zone name")
        try:
            _zone(self.tz)
        except ValueError as exc:
            raise ValueError(f"schedule {self.name!r}: {exc}") from None
        if self.cron is not None:
            # croniter takes expressions no date matches ("0 0 30 2 *"): walked only
            # when firing, one raised there and stopped every schedule (and, under
            # `spool serve`, every job). Walked once here, it is refused at load.
            try:
                self._cron_walk(CRON_PROBE, forward=True)
            except Exception as exc:
                raise ValueError(
                    f"schedule {self.name!r}: cron {self.cron!r} matches no date "
                    f"({type(exc).__name__})"
                ) from None
        if self.start is not None:
            # A start so late that its first ticks fall past the year 9999 overflowed
            # where ticks are worked out: the scheduler thread died (every schedule
            # stopped), `spool schedules` failed and /ui/api/schedules answered 500.
            try:
                first = self.next_tick(self.start - timedelta(seconds=1))
                self.next_tick(first)
            except (OverflowError, ValueError):
                raise ValueError(
                    f"schedule {self.name!r}: start {self.start.isoformat()} is too late: "
                    "its ticks fall past the year 9999"
                ) from None

    def _check_kinds(self) -> None:
        """Each field of the kind the checks below read: @periodic passes its
        arguments on as written, and `cron=5` or `start="2026-01-01"` failed inside
        them (AttributeError: 'int' object has no attribute 'strip'), not as a line
        naming the schedule and the argument; `type=3` passed and failed every tick."""
        where = f"schedule {self.name!r}"
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"{where}: type={reprlib.repr(self.type)}: a job type (its name)")
        if self.cron is not None and not isinstance(self.cron, str):
            raise ValueError(f"{where}: cron={reprlib.repr(self.cron)}: a cron expression, as text")
        for name in ("every", "catch_up"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{where}: {name}={reprlib.repr(value)}: whole seconds")
        if self.start is not None and not isinstance(self.start, datetime):
            raise ValueError(
                f"{where}: start={reprlib.repr(self.start)}: a datetime with its time zone "
                "(datetime(2026, 1, 1, tzinfo=UTC))"
            )

    def latest_tick(self, now: datetime) -> datetime | None:
        """The most recent tick at or before now (UTC), or None before the first."""
        if self.every is not None:
            anchor = (self.start or EPOCH).astimezone(UTC)
            if now < anchor:
                return None
            periods = int((now - anchor).total_seconds() // self.every)
            return anchor + timedelta(seconds=periods * self.every)
        # Start one second past now (whole seconds) so a tick exactly at now counts.
        tick = self._cron_walk(now.replace(microsecond=0) + timedelta(seconds=1), forward=False)
        if self.start is not None and tick < self.start:
            return None
        return tick

    def next_tick(self, now: datetime) -> datetime:
        """The first tick strictly after now (UTC)."""
        if self.every is not None:
            latest = self.latest_tick(now)
            if latest is None:
                return (self.start or EPOCH).astimezone(UTC)
            return latest + timedelta(seconds=self.every)
        after = now
        if self.start is not None and self.start > now:
            after = self.start - timedelta(seconds=1)
        return self._cron_walk(after, forward=True)

    def _cron_walk(self, origin: datetime, forward: bool) -> datetime:
        """The cron tick after (or before) origin, in UTC, honouring the DST rule.

        When clocks go back, an hour of wall-clock time happens twice. Like
        cron, a schedule with fixed hours ("30 2 * * *") runs once, at the
        first occurrence; one with a wildcard hour runs in both.
        """
        from croniter import croniter

        assert self.cron is not None
        zone = _zone(self.tz)
        walker = croniter(self.cron, origin.astimezone(zone))
        fixed_hours = "*" not in self.cron.split()[1]
        for _ in range(MAX_DST_SKIPS):
            tick: datetime = (walker.get_next if forward else walker.get_prev)(datetime)
            tick = tick.astimezone(UTC)
            if not (fixed_hours and tick.astimezone(zone).fold == 1):
                return self._none_between(origin, tick) if forward else tick
        raise ValueError(f"schedule {self.name!r}: no tick found near {origin.isoformat()}")

    def _none_between(self, origin: datetime, tick: datetime) -> datetime:
        """The earliest tick after origin, given croniter's forward answer `tick`.

        Its forward walk can step over a tick in a repeated wall-clock stretch that
        is not a whole hour: when Lord Howe Island goes back 30 minutes, `*/20 * * * *`
        went from the first 01:40 to 02:00, over the second 01:40, which its backward
        walk (and so latest_tick) finds. A running scheduler waits for next_tick, so
        that tick never fired. Walking back from the answer finds any it stepped over.
        """
        for _ in range(MAX_DST_SKIPS):
            before = self._cron_walk(tick, forward=False)
            if before <= origin.astimezone(UTC):
                return tick
            tick = before
        return tick

    def key(self, tick: datetime) -> str:
        return f"{KEY_PREFIX}{self.name}:{_tick_text(tick)}"

    def describe(self) -> str:
        return f"cron {self.cron!r} in {self.tz}" if self.cron else f"every {self.every}s"


def tick_of(job: Job) -> datetime | None:
    """The tick a periodic job was enqueued for (handlers use it, e.g. "report for")."""
    key = job.idempotency_key or ""
    if job.tenant != SYSTEM_TENANT or not key.startswith(KEY_PREFIX):
        return None
    _name, _, text = key[len(KEY_PREFIX) :].partition(":")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# -- declaring schedules ---------------------------------------------------------
class ScheduleSpec(BaseModel):
    """A schedule as JSON (SPOOL_SCHEDULES) or decorator arguments describe it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str = Field(min_length=1, max_length=64)
    cron: str | None = None
    every: int | str | None = None
    tz: str = "UTC"
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    catch_up: int | str | None = None
    start: datetime | None = None
    enabled: bool = True

    @field_validator("every", "catch_up", mode="before")
    @classmethod
    def _not_a_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # lax validation made true 1 second
            raise ValueError("a duration in seconds or text such as 5m, not true or false")
        return value

    @field_validator("every", "catch_up")
    @classmethod
    def _duration(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_duration(value)

    def build(self) -> Schedule:
        return Schedule(
            name=self.name,
            type=self.type,
            cron=self.cron,
            every=self.every if isinstance(self.every, int) else None,
            tz=self.tz,
            payload=self.payload,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            catch_up=self.catch_up if isinstance(self.catch_up, int) else None,
            start=self.start,
            enabled=self.enabled,
        )


class ScheduleBook:
    """Schedules declared in code, by name."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._lock = threading.Lock()

    def add(self, schedule: Schedule) -> Schedule:
        with self._lock:
            self._schedules[schedule.name] = schedule
        return schedule

    def _check_unclaimed(self, name: str, job_type: str) -> None:
        """One name for two job types is a mistake to report where it is written: the
        schedule declared last replaced the other, so `@periodic("nightly")` above two
        handlers listed and fired only the second. The same type again (its module
        imported twice, or reloaded after an edit) replaces itself."""
        with self._lock:
            existing = self._schedules.get(name)
        if existing is not None and existing.type != job_type:
            raise ValueError(
                f"schedule {name!r} is declared twice: for job type {existing.type!r} "
                f"and for {job_type!r}; give one of them another name"
            )

    def remove(self, name: str) -> None:
        with self._lock:
            self._schedules.pop(name, None)

    def all(self) -> list[Schedule]:
        with self._lock:
            return list(self._schedules.values())

    def periodic(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: int | str | timedelta | None = None,
        tz: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        type: str | None = None,
        catch_up: int | str | timedelta | None = None,
        start: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        registry: Registry = registry,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Schedule the handler below it: put @periodic above @handler(...)."""
        if callable(name):  # `@periodic` bare: the function came where the name goes
            raise ValueError(bare_decorator("periodic", name, '"nightly", cron="0 3 * * *"'))
        _check_job_fields(name, payload, queue, priority, max_attempts)

        def declare(func: HandlerFunc) -> HandlerFunc:
            job_type = type or _type_of(func, registry)
            self._check_unclaimed(name, job_type)
            self.add(
                Schedule(
                    name=name,
                    type=job_type,
                    cron=cron,
                    every=None if every is None else _duration(name, "every", every),
                    tz=tz,
                    payload=dict(payload or {}),
                    queue=queue,
                    priority=priority,
                    max_attempts=max_attempts,
                    catch_up=None if catch_up is None else _duration(name, "catch_up", catch_up),
                    start=start,
                )
            )
            return func

        return declare


def _duration(name: str, argument: str, value: int | str | timedelta) -> int:
    """A duration argument of @periodic, a refusal naming the schedule and the argument."""
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        said = str(exc).removeprefix(f"{value!r}: ").removeprefix(f"{value}: ")
        raise ValueError(f"schedule {name!r}: {argument}={reprlib.repr(value)}: {said}") from None


def _check_job_fields(
    name: str, payload: object, queue: object, priority: object, max_attempts: object
) -> None:
    """@periodic's job arguments, refused where they are written, as @handler's are: a
    queue, priority or max_attempts no job may have was found only when `spool schedules`,
    `spool worker` or `spool serve` checked the schedule (every tick refused on Lambda),
    and a payload that is not a mapping failed with a bare TypeError."""
    where = f"schedule {name!r}"
    if payload is not None and not isinstance(payload, Mapping):
        raise ValueError(f"{where}: payload={reprlib.repr(payload)}: a dict of JSON values")
    if queue is not None and (not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue)):
        raise ValueError(
            f"{where}: queue={reprlib.repr(queue)}: a queue name is 1-64 of A-Z a-z 0-9 _ . : -"
        )
    if priority is not None:
        value = whole_number(priority)
        if value is None or not MIN_PRIORITY <= value <= MAX_PRIORITY:
            raise ValueError(
                f"{where}: priority={reprlib.repr(priority)}: an integer from "
                f"{MIN_PRIORITY} to {MAX_PRIORITY}"
            )
    if max_attempts is not None:
        value = whole_number(max_attempts)
        if value is None or not 1 <= value <= MAX_ATTEMPTS:
            raise ValueError(
                f"{where}: max_attempts={reprlib.repr(max_attempts)}: a whole number from 1 "
                f"to {MAX_ATTEMPTS}"
            )


def _type_of(func: HandlerFunc, target: Registry) -> str:
    for spec in target.specs():
        if spec.func is func:
            return spec.type
    raise ValueError(
        f"{getattr(func, '__name__', func)!r} is not a registered handler: "
        "put @periodic above @handler(...), or pass type="
    )


book = ScheduleBook()
periodic = book.periodic


# What each SPOOL_SCHEDULES field takes, said when a value is of the wrong kind or out
# of bounds: pydantic's own sentences ("Input should be a valid integer, unable to
# parse string as an integer", one per member of `int | str`) named neither.
FIELD_TAKES = {
    "name": "1 to 64 of A-Z a-z 0-9 _ . -",
    "type": "a job type, 1 to 64 characters",
    "cron": "a cron expression in quotes",
    "every": "seconds, or text such as 90s, 15m or 1h30m",
    "tz": "an IANA time zone name such as Europe/Paris",
    "payload": "a JSON object",
    "queue": "a queue name in quotes",
    "priority": f"an integer from {MIN_PRIORITY} to {MAX_PRIORITY}",
    "max_attempts": f"a whole number from 1 to {MAX_ATTEMPTS}",
    "catch_up": "seconds, or text such as 90s, 15m or 1h30m",
    "start": "a date and time with its offset, such as 2026-01-01T00:00:00Z",
    "enabled": "true or false",
}


def _worded(exc: ValidationError) -> str:
    """A schedule's refusal as `field: what is wrong`, each field once. str(exc) is
    pydantic's report: a count, the model's name, `[type=..., input_value=...]` and
    an errors.pydantic.dev address, all on the operator's one line. A field's own
    check (a duration, a cron) says its message; a value of the wrong kind, or out
    of bounds, what the field takes and the value given; a field left out,
    `missing`."""
    parts: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "schedule"
        if field in parts:  # `every: int | str` refused once per member of the union
            continue
        if error["type"] == "extra_forbidden":
            said = f"not a schedule field ({', '.join(ScheduleSpec.model_fields)})"
        elif error["type"] == "missing":
            said = "missing"
        elif error["type"] == "value_error" or field not in FIELD_TAKES:
            said = validation_message(dict(error)).removeprefix("Value error, ")
        else:
            said = f"{FIELD_TAKES[field]}, not {reprlib.repr(error['input'])}"
        parts[field] = f"{field}: {said}"
    return "; ".join(parts.values())


@lru_cache(maxsize=8)
def _parse_schedules(raw: str) -> tuple[Schedule, ...]:
    try:
        data = loads_strict(raw)  # a name given twice in an object is refused, not dropped
    except json.JSONDecodeError as exc:
        raise ValueError(f"SPOOL_SCHEDULES is not valid JSON: {exc}") from None
    # Each entry as the operator wrote it: SPOOL_SCHEDULES[2] in a list, and in an
    # object by name SPOOL_SCHEDULES['nightly'] (it was [0], [1]... there too).
    entries: list[tuple[str, Any]]
    if isinstance(data, dict):
        entries = [(f"{name[:64]!r}", spec) for name, spec in data.items()]
    elif isinstance(data, list):
        entries = [(str(index), spec) for index, spec in enumerate(data)]
    else:
        raise ValueError("SPOOL_SCHEDULES must be a JSON list of schedules or an object by name")
    odd = [where for where, spec in entries if not isinstance(spec, dict)]
    if odd:  # pydantic said "Input should be a valid dictionary or instance of ScheduleSpec"
        raise ValueError(f"SPOOL_SCHEDULES[{odd[0]}] must be an object (type, every or cron, ...)")
    if isinstance(data, dict):
        entries = [
            (where, {"name": name, **spec})
            for (where, spec), name in zip(entries, data, strict=True)
        ]
    schedules: list[Schedule] = []
    for where, item in entries:
        try:
            schedules.append(ScheduleSpec.model_validate(item).build())
        except ValidationError as exc:
            raise ValueError(f"SPOOL_SCHEDULES[{where}] is invalid: {_worded(exc)}") from None
        except ValueError as exc:
            raise ValueError(f"SPOOL_SCHEDULES[{where}] is invalid: {exc}") from None
        if any(s.name == schedules[-1].name for s in schedules[:-1]):
            # The last would have won, silently: which one the operator meant is theirs.
            raise ValueError(
                f"SPOOL_SCHEDULES[{where}] names schedule {schedules[-1].name!r} again"
            )
    return tuple(schedules)


def schedules_from_settings(settings: Settings) -> list[Schedule]:
    raw = settings.extra.get("SPOOL_SCHEDULES", "").strip()
    return list(_parse_schedules(raw)) if raw else []


def active_schedules(
    settings: Settings | None = None, declared: Iterable[Schedule] | None = None
) -> list[Schedule]:
    """Code schedules, replaced by settings entries of the same name; enabled ones only."""
    merged = {s.name: s for s in (book.all() if declared is None else declared)}
    for schedule in schedules_from_settings(settings or Settings.from_env()):
        merged[schedule.name] = schedule
    return [s for s in merged.values() if s.enabled]


# -- firing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Fired:
    """What one call did for one schedule."""

    name: str
    tick: datetime | None
    outcome: str  # enqueued | already | skipped | error
    job_id: str | None = None
    error: str | None = None
    # The tick is still due: its enqueue met a store failure, not a refusal, and the
    # next call tries the same tick again (a long-running scheduler retries soon).
    retry: bool = False


@dataclass(frozen=True)
class _Settled:
    fingerprint: tuple[Any, ...]
    tick: datetime
    quiet_until: datetime  # the next tick: nothing is due before it


def _fingerprint(schedule: Schedule) -> tuple[Any, ...]:
    return (schedule.cron, schedule.every, schedule.tz, schedule.start)


class Scheduler:
    """Fires due ticks for a set of schedules against one store.

    `confirmed` remembers, per schedule, the latest tick known to be in the
    store and when the next one falls due, so calling often (the local
    emulator does) costs neither a store write nor a cron computation once a
    tick is settled. It is only a cache: a new Scheduler asks the store.
    """

    def __init__(
        self,
        target: Service | JobStore,
        handlers: Registry,
        schedules: Sequence[Schedule],
        clock: Clock | None = None,
        confirmed: dict[str, _Settled] | None = None,
    ) -> None:
        self.service = target if isinstance(target, Service) else Service(target, handlers)
        self.clock = clock or self.service.store.clock
        self.schedules = list(schedules)
        self.confirmed: dict[str, _Settled] = {} if confirmed is None else confirmed

    def fire_due(self) -> list[Fired]:
        now = self.clock.now()
        fired: list[Fired] = []
        for schedule in self.schedules:
            if not schedule.enabled:
                continue
            try:
                outcome = self._fire(schedule, now)
            except Exception as exc:
                # One schedule's fault stays its own: the others fire, and the caller
                # (a worker, `spool serve`, the scheduled Lambda) goes on to run jobs.
                problem = f"{type(exc).__name__}: {exc}"
                _log_once(schedule, problem)
                outcome = Fired(schedule.name, None, "error", error=problem)
            if outcome is not None:
                fired.append(outcome)
        return fired

    def _settle(self, schedule: Schedule, tick: datetime) -> None:
        self.confirmed[schedule.name] = _Settled(
            _fingerprint(schedule), tick, schedule.next_tick(tick)
        )

    def _fire(self, schedule: Schedule, now: datetime) -> Fired | None:
        settled = self.confirmed.get(schedule.name)
        if settled is not None and settled.fingerprint != _fingerprint(schedule):
            settled = None  # the schedule changed (settings): its ticks did too
        if settled is not None and settled.tick <= now < settled.quiet_until:
            return None
        tick = schedule.latest_tick(now)
        if tick is None:
            return None
        if settled is not None and settled.tick >= tick:
            return None
        lateness = (now - tick).total_seconds()
        # In whole seconds, as ticks are: a tick met within its second is on time, so
        # catch_up 0 fires each tick met then (it skipped every one, a few ms late).
        if schedule.catch_up is not None and int(lateness) > schedule.catch_up:
            self._settle(schedule, tick)
            log.warning(
                "periodic %s: tick %s skipped, %.0fs late (catch_up %ss)",
                schedule.name,
                _tick_text(tick),
                lateness,
                schedule.catch_up,
            )
            return Fired(schedule.name, tick, "skipped")
        kept = _kept_for(self.service.store)
        if kept is not None and lateness >= kept:
            # Its job, had it fired, may be deleted by now, and its key with it: firing
            # would run the same tick again (a @yearly job every 30 days on DynamoDB).
            self._settle(schedule, tick)
            log.info(
                "periodic %s: tick %s not fired, %.0fs late: the store deletes finished "
                "jobs %.0fs after they finish, so it may have fired already",
                schedule.name,
                _tick_text(tick),
                lateness,
                kept,
            )
            return Fired(schedule.name, tick, "skipped")
        try:
            with lost_write(
                "the tick's enqueue",
                "the tick's job is enqueued again under its own key at the next try, "
                "which finds the job if this one stored it",
            ):
                [result] = self.service.enqueue([_request(schedule, tick)], SYSTEM_TENANT)
        except (ValidationFailed, ValidationError) as exc:
            # The schedule itself is wrong: the same error would repeat every tick,
            # so it is logged once per process (`spool schedules` reports it too).
            self._settle(schedule, tick)
            problem = describe_problem(exc)
            _log_once(schedule, problem)
            return Fired(schedule.name, tick, "error", error=problem)
        except IdempotencyConflict as exc:  # fired already, from the schedule as it was then
            self._settle(schedule, tick)
            return Fired(schedule.name, tick, "already", exc.details["id"])
        except Exception as exc:  # the store may be down: try again on the next call
            # So may a setting the enqueue reads be malformed (SPOOL_WEBHOOKS_PARAMETER's
            # value, read at the first enqueue): the operator's to fix, and the tick is
            # fired once it is, as after an outage, not lost to the next one.
            passing = is_store_error(exc) or isinstance(exc, Misconfigured)
            if passing:  # said once a run of failures, no traceback each tick
                why = describe(exc)
                if not isinstance(exc, Misconfigured | WebhooksUnavailable):
                    why = f"the store is unavailable ({why})"
                log.log(
                    _store_quiet.level(),
                    "periodic %s: enqueue failed, %s; will retry",
                    schedule.name,
                    why,
                )
            else:
                log.exception("periodic %s: enqueue failed; will retry", schedule.name)
            error = f"{type(exc).__name__}: {exc}"
            return Fired(schedule.name, tick, "error", error=error, retry=passing)
        _store_quiet.ok()
        self._settle(schedule, tick)
        if result.created:
            log.info(
                "periodic %s: enqueued %s for %s", schedule.name, result.job.id, _tick_text(tick)
            )
        return Fired(
            schedule.name, tick, "enqueued" if result.created else "already", result.job.id
        )

    def next_runs(self) -> dict[str, datetime]:
        now = self.clock.now()
        return {s.name: s.next_tick(now) for s in self.schedules if s.enabled}


def _kept_for(store: JobStore) -> float | None:
    """Seconds the store keeps a finished job (and so its tick's key), when it deletes
    them by itself (DynamoDB's TTL: `finished_kept_seconds`, storage/base.py); None
    when only an operator's purge does."""
    kept = getattr(store, "finished_kept_seconds", None)
    return float(kept) if isinstance(kept, int | float) else None


def _request(schedule: Schedule, tick: datetime) -> EnqueueRequest:
    return EnqueueRequest(
        type=schedule.type,
        payload=dict(schedule.payload),
        queue=schedule.queue,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts,
        idempotency_key=schedule.key(tick),
    )


# Most payload fields one problem line names; past it, "and N more".
PROBLEM_FIELDS_SHOWN = 5


def describe_problem(exc: ValidationFailed | ValidationError) -> str:
    """One line: the refusal and its precise reasons (which field, what is wrong).

    Every field the payload gets wrong, up to PROBLEM_FIELDS_SHOWN, as `spool enqueue`
    names them: the first alone ("customer_id: Field required") had the user fix it
    and run again to learn of the next ("customer: Extra inputs are not permitted")."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        return f"{where}: {first['msg']}"
    details = exc.details if isinstance(exc.details, dict) else {}
    errors = [e for e in details.get("errors") or [] if isinstance(e, dict)]
    if not errors:
        return exc.message
    reasons = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'payload'}: {e.get('msg')}"
        for e in errors[:PROBLEM_FIELDS_SHOWN]
    ]
    more = len(errors) - PROBLEM_FIELDS_SHOWN
    if more > 0:
        reasons.append(f"and {more} more")
    return f"{exc.message} ({'; '.join(reasons)})"


_store_quiet = Quiet()  # a failed tick's line: once a run of store failures
_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _log_once(schedule: Schedule, problem: str) -> None:
    with _reported_lock:
        first = (schedule.name, problem) not in _reported
        _reported.add((schedule.name, problem))
    level = logging.ERROR if first else logging.DEBUG
    log.log(level, "periodic %s: cannot enqueue %s: %s", schedule.name, schedule.type, problem)


def problems(service: Service, schedules: Sequence[Schedule]) -> dict[str, str]:
    """Why each schedule's job would be refused, by name, checked without storing.

    The same checks as a real tick (known type, the handler's payload model,
    queue and priority rules), so `spool schedules` can fail on a schedule the
    scheduler could never enqueue instead of listing it as fine.
    """
    found: dict[str, str] = {}
    for schedule in schedules:
        try:
            service.build(_request(schedule, EPOCH), SYSTEM_TENANT)
        except (ValidationFailed, ValidationError) as exc:
            found[schedule.name] = describe_problem(exc)
    return found


_confirmed_by_store: weakref.WeakKeyDictionary[Any, dict[str, _Settled]] = (
    weakref.WeakKeyDictionary()
)
_confirmed_lock = threading.Lock()


def _confirmed_for(store: JobStore) -> dict[str, _Settled]:
    with _confirmed_lock:
        try:
            return _confirmed_by_store.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced: no cache
            return {}


def fire_due(
    target: Service | JobStore,
    handlers: Registry = registry,
    clock: Clock | None = None,
    *,
    settings: Settings | None = None,
    schedules: Sequence[Schedule] | None = None,
) -> list[Fired]:
    """Enqueue every schedule's due tick, once. Call it from the scheduled function.

    Never raises for a bad schedule or a store hiccup (those are logged and
    reported in the returned list), so the caller goes on to run jobs.
    """
    if schedules is None:
        try:
            schedules = active_schedules(settings)
        except ValueError as exc:
            log.error("periodic: %s", exc)
            schedules = [s for s in book.all() if s.enabled]
            problem = Fired("SPOOL_SCHEDULES", None, "error", error=str(exc))
            return [problem, *_run(target, handlers, clock, schedules)]
    return _run(target, handlers, clock, schedules)


def _run(
    target: Service | JobStore,
    handlers: Registry,
    clock: Clock | None,
    schedules: Sequence[Schedule],
) -> list[Fired]:
    store = target.store if isinstance(target, Service) else target
    scheduler = Scheduler(target, handlers, schedules, clock, _confirmed_for(store))
    return scheduler.fire_due()


def next_runs(
    clock: Clock | None = None,
    *,
    settings: Settings | None = None,
    schedules: Sequence[Schedule] | None = None,
) -> dict[str, datetime]:
    """Each enabled schedule's next tick after now (UTC)."""
    now = clock.now() if clock is not None else datetime.now(UTC)
    chosen = active_schedules(settings) if schedules is None else schedules
    return {s.name: s.next_tick(now) for s in chosen if s.enabled}


MAX_SCHEDULER_SLEEP = 30.0  # re-read the clock at least this often (clock jumps, new schedules)


def run_scheduler(
    target: Service | JobStore,
    stop: threading.Event,
    handlers: Registry = registry,
    *,
    settings: Settings | None = None,
) -> None:
    """Fire due schedules until `stop` is set, for long-running local workers.

    Sleeps until the earliest next tick instead of polling, so an idle worker
    with a nightly schedule wakes once a night (capped at MAX_SCHEDULER_SLEEP).
    A tick whose enqueue met a store failure is tried again after a jittered backoff
    (at most store_outage.CAP seconds), not at the next tick: by then `latest_tick`
    is the next one, and a nightly job was lost to a store down for a second at
    midnight.
    """
    store = target.store if isinstance(target, Service) else target
    outage = Outage(log, "the periodic scheduler")
    while not stop.is_set():
        fired = fire_due(target, handlers, store.clock, settings=settings)
        failed = [f for f in fired if f.retry]
        if failed:
            stop.wait(outage.failed(StoreUnavailable(failed[0].error or "enqueue failed")))
            continue
        outage.recovered()
        try:
            upcoming = next_runs(store.clock, settings=settings)
        except (ValueError, OverflowError):  # a bad SPOOL_SCHEDULES: fire_due logged it
            upcoming = {}
        now = store.clock.now()
        waits = [(tick - now).total_seconds() for tick in upcoming.values()]
        stop.wait(min([MAX_SCHEDULER_SLEEP, *waits]) if waits else MAX_SCHEDULER_SLEEP)
