"""A malformed SPOOL_SCHEDULES entry is refused in the operator's words, naming it
as they wrote it.

`spool schedules` (and `spool worker`, `spool serve`, the dashboard's schedules
page, every tick's log line) said pydantic's own sentences: "type: Field
required", "priority: Input should be a valid integer, unable to parse string as
an integer", "enabled: Input should be a valid boolean, unable to interpret
input", "every.int: Input should be a valid integer; every.str: Input should be a
valid string" (one per member of a union the user never wrote), and for an entry
that is not an object "schedule: Input should be a valid dictionary or instance of
ScheduleSpec", a class name. An entry of the object-by-name form was called
SPOOL_SCHEDULES[0], an index the user never wrote, where its name says which.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from chalicelib import periodic
from chalicelib.config import Settings
from chalicelib.handlers import Registry


def refusal(raw: str) -> str:
    periodic._parse_schedules.cache_clear()
    with pytest.raises(ValueError) as refused:
        periodic.active_schedules(Settings.from_env({"SPOOL_SCHEDULES": raw}), [])
    return str(refused.value)


def entry(**fields: object) -> str:
    import json

    return json.dumps([{"name": "tick", "type": "report", "every": "5m", **fields}])


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ('[{"name": "tick", "every": "5m"}]', "type: missing"),
        ('[{"type": "report", "every": "5m"}]', "name: missing"),
        (entry(priority="high"), "priority: an integer from -1000 to 1000, not 'high'"),
        (entry(max_attempts=0), "max_attempts: a whole number from 1 to 100, not 0"),
        (entry(max_attempts=1.5), "max_attempts: a whole number from 1 to 100, not 1.5"),
        (entry(enabled="maybe"), "enabled: true or false, not 'maybe'"),
        (entry(payload=[1]), "payload: a JSON object, not [1]"),
        (
            entry(start="yesterday"),
            "start: a date and time with its offset, such as 2026-01-01T00:00:00Z, not 'yesterday'",
        ),
        (entry(tz=3), "tz: an IANA time zone name such as Europe/Paris, not 3"),
        (entry(every=[5]), "every: seconds, or text such as 90s, 15m or 1h30m, not [5]"),
        (entry(name=3), "name: 1 to 64 of A-Z a-z 0-9 _ . -, not 3"),
        (entry(type=""), "type: a job type, 1 to 64 characters, not ''"),
        (entry(every=None, cron=5), "cron: a cron expression in quotes, not 5"),
    ],
)
def test_each_field_s_refusal_says_what_it_takes(raw: str, said: str) -> None:
    message = refusal(raw)
    assert message == f"SPOOL_SCHEDULES[0] is invalid: {said}"


def test_an_entry_that_is_not_an_object_is_said_so() -> None:
    assert refusal("[3]") == "SPOOL_SCHEDULES[0] must be an object (type, every or cron, ...)"


def test_an_entry_given_by_name_is_named_by_it() -> None:
    raw = '{"nightly": {"type": "report", "every": "1d"}, "hourly": {"every": "1h"}}'
    assert refusal(raw) == "SPOOL_SCHEDULES['hourly'] is invalid: type: missing"
    raw = '{"nightly": {"type": "report", "every": "1d"}, "hourly": {"type": "r", "cron": "x"}}'
    assert refusal(raw).startswith("SPOOL_SCHEDULES['hourly'] is invalid: schedule 'hourly': ")


def test_no_pydantic_wording_is_left_for_any_field() -> None:
    """Every field given a value of a kind it cannot take: no sentence of pydantic's."""
    wrong: dict[str, object] = {"cron": [1], "every": {"a": 1}, "catch_up": [1], "payload": [1]}
    for name in periodic.ScheduleSpec.model_fields:
        fields = {name: wrong.get(name, {"a": [1]})}
        if name in ("cron", "every"):
            fields = {"every": None, **fields}
        message = refusal(entry(**fields))
        assert "Input should" not in message and "Field required" not in message, message
        assert "ScheduleSpec" not in message and ".int" not in message, message


# -- @periodic: every argument checked where it is written --------------------------------


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"cron": 5}, "schedule 'tick': cron=5: a cron expression, as text"),
        ({"every": "5m", "start": "yesterday"}, "schedule 'tick': start='yesterday': a datetime"),
        ({"every": "5m", "start": 5}, "schedule 'tick': start=5: a datetime"),
        ({"every": "5m", "start": date(2026, 1, 1)}, "start=datetime.date(2026, 1, 1): a datetime"),
        ({"every": "5m", "type": 3}, "schedule 'tick': type=3: a job type"),
        ({"name": 3, "every": "5m"}, "schedule name 3 must match"),
    ],
)
def test_a_periodic_argument_no_schedule_could_take_stops_the_import_in_words(
    arguments: dict[str, object], said: str
) -> None:
    """docs/handlers.md: every argument of @periodic is checked where it is written,
    with one line naming the schedule and the argument. These raised AttributeError
    ("'str' object has no attribute 'tzinfo'", "'int' object has no attribute
    'strip'") or TypeError ("expected string or bytes-like object, got 'int'") from
    inside the module, or (type=3) passed and failed every tick."""
    local = Registry()
    book = periodic.ScheduleBook()
    name = arguments.pop("name", "tick")

    @local.handler("report")
    def report(payload: dict[str, object]) -> None:
        return None

    with pytest.raises(ValueError) as refused:
        book.periodic(name, registry=local, **arguments)(report)  # type: ignore[arg-type]
    assert said in str(refused.value)


def test_a_periodic_start_with_its_zone_is_taken() -> None:
    local = Registry()
    book = periodic.ScheduleBook()

    @local.handler("report")
    def report(payload: dict[str, object]) -> None:
        return None

    start = datetime(2026, 1, 1, tzinfo=UTC)
    book.periodic("tick", every="5m", start=start, registry=local)(report)
    assert [s.start for s in book.all()] == [start]
