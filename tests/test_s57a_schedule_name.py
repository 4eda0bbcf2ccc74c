"""A schedule's name ending in a line break is refused where it is declared (stop 57).

Was: the name was checked with `re.match("^[A-Za-z0-9_.-]{1,64}$", name)`, whose `$`
also matches before a final "\\n": `"nightly\\n"` passed, in SPOOL_SCHEDULES and in
@periodic, and each tick's job was enqueued under the idempotency key
`periodic:nightly\\n:<tick>`, a key holding a control character. Keys are held to
chalicelib/client_text.py now (refused at enqueue), so such a schedule is refused
when it is read, naming it, not once a tick when it fires.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chalicelib import client_text, periodic
from chalicelib.config import Settings
from chalicelib.service import EnqueueRequest

TICK = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", ["nightly\n", "\nnightly", "night\nly", "nightly\r"])
def test_a_schedule_named_with_a_line_break_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"^schedule name .* must match"):
        periodic.Schedule(name=name, type="echo", every=60)


def test_spool_schedules_refuses_it_naming_the_entry() -> None:
    raw = json.dumps([{"name": "nightly\n", "type": "echo", "every": "1h"}])
    settings = Settings(extra={"SPOOL_SCHEDULES": raw})
    with pytest.raises(ValueError, match=r"^SPOOL_SCHEDULES\[0\] is invalid: schedule name"):
        periodic.schedules_from_settings(settings)


def test_periodic_refuses_it_where_it_is_written() -> None:
    book = periodic.ScheduleBook()
    with pytest.raises(ValueError, match=r"^schedule name 'nightly\\n' must match"):
        book.periodic("nightly\n", every=60, type="echo")(lambda ctx, payload: None)
    assert book.all() == []


@pytest.mark.parametrize("name", ["nightly", "a", "x" * 64, "report.v2-daily_1"])
def test_every_name_a_schedule_takes_makes_a_key_an_enqueue_takes(name: str) -> None:
    key = periodic.Schedule(name=name, type="echo", every=60).key(TICK)
    assert client_text.first_refused(key) is None
    assert EnqueueRequest(type="echo", idempotency_key=key).idempotency_key == key
