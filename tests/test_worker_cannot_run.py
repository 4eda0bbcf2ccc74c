"""A job a worker cannot run says why and what to do, in words.

Two ways a claimed job is dead before its handler runs (docs/handlers.md): no
handler for its type in this worker, and a stored payload its handler's model no
longer takes. The first said only "no handler for 'greet'", leaving the operator
(and the tenant reading `last_error`) to find in docs/handlers.md that the worker
lacks a SPOOL_HANDLERS module and that the job can be redriven once it has it. The
second was pydantic's whole report: "invalid payload: 1 validation error for Model
n Input should be a valid integer, unable to parse string as an integer
[type=int_parsing, input_value='not a number', input_type=str] For further
information visit https://errors.pydantic.dev/...", with the stored value in it.
"""

from __future__ import annotations

from pydantic import BaseModel

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from tests.test_worker import add, drain_once, get


def test_a_job_without_a_handler_here_says_how_to_run_it(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    job = add(mem, clock, "greet", max_attempts=5)
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, 1)
    assert dead.last_error == (
        "no handler for 'greet' in this worker: give it the module that registers "
        "'greet' (SPOOL_HANDLERS), then redrive the job"
    )


def test_a_stored_payload_the_model_no_longer_takes_is_said_field_by_field(
    mem: MemoryStore, clock: FakeClock, reg: Registry
) -> None:
    class Model(BaseModel):
        n: int
        name: str

    @reg.handler("typed", payload=Model)
    def typed(payload: Model) -> int:
        return payload.n

    job = add(mem, clock, "typed", payload={"n": "not a number", "secret": "hunter2"})
    drain_once(mem, reg)
    dead = get(mem, job.id)
    assert dead.state is JobState.DEAD
    error = dead.last_error or ""
    assert error == (
        "invalid payload: the 'typed' handler's model does not take the stored payload "
        "(payload.n: Input should be a valid integer, unable to parse string as an "
        "integer; payload.name: Field required); fix the handler or the job, then redrive it"
    )
    assert "errors.pydantic.dev" not in error and "not a number" not in error
