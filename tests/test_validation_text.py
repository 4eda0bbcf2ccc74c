"""One reading of pydantic's errors (chalicelib/validation_text.py) for the three places
that report them: the HTTP edge's 422, a handler's refusal at enqueue, and the
worker's record of a stored payload its model no longer takes.

Each had its own copy, and only the edge's said what a name may hold: a handler
whose payload names a queue (as a fan-out job does) refused a bad one at enqueue,
and recorded it at run time, as "String should match pattern
'^[A-Za-z0-9_.:-]{1,64}$'", where the edge says the rule in words.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from chalicelib.api.errors import validation_details as edge_details
from chalicelib.clock import FakeClock
from chalicelib.config import NAME_PATTERN
from chalicelib.errors import ValidationFailed
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.validation_text import NAME_RULE, validation_details, validation_summary
from tests.test_worker import add, drain_once, get


class FanOut(BaseModel):
    queue: str = Field(pattern=NAME_PATTERN)


def refusal(payload: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        FanOut.model_validate(payload)
    return caught.value


def test_a_handler_refusing_a_name_at_enqueue_says_the_rule_as_the_edge_does() -> None:
    reg = Registry()

    @reg.handler("fan_out", payload=FanOut)
    def fan_out(payload: FanOut) -> None: ...

    with pytest.raises(ValidationFailed) as info:
        reg.get("fan_out").validate({"queue": "no spaces"})
    assert info.value.details["errors"] == [
        {"loc": ["queue"], "msg": NAME_RULE, "type": "string_pattern_mismatch"}
    ]
    assert info.value.details["errors"] == edge_details(refusal({"queue": "no spaces"}))


def test_a_stored_name_the_model_refuses_is_recorded_in_the_rules_words(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    @reg.handler("fan_out", payload=FanOut)
    def fan_out(payload: FanOut) -> None: ...

    job = add(mem, clock, "fan_out", payload={"queue": "no spaces"})
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    assert dead.last_error == (
        "invalid payload: the 'fan_out' handler's model does not take the stored payload "
        f"(payload.queue: {NAME_RULE}); fix the handler or the job, then redrive it"
    )


def test_the_summary_is_the_details_in_one_line_with_a_count_of_the_rest() -> None:
    class Four(BaseModel):
        a: int
        b: int
        c: int
        d: int

    with pytest.raises(ValidationError) as caught:
        Four.model_validate({})
    details = validation_details(caught.value, ("payload",))
    assert [d["loc"] for d in details] == [["payload", x] for x in "abcd"]
    assert validation_summary(caught.value, ("payload",), 3) == (
        "payload.a: Field required; payload.b: Field required; "
        "payload.c: Field required; and 1 more"
    )
    assert validation_summary(caught.value, (), 4).count("Field required") == 4
