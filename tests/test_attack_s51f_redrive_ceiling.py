"""A redrive gives at most what an enqueue could ask for now (review s51, helper f).

A job enqueued with max_attempts=100 (before SPOOL_MAX_ATTEMPTS was set, or lowered)
came back from a redrive with 100 again: the ceiling bounded what one request buys
only until the job first died. Every redrive goes through Service.redrive_ids, which
gives the store the bound (RedriveAttempts); the stores' part is
tests/contract/test_store_s51f_redrive_attempts.py."""

from __future__ import annotations

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobState
from chalicelib.service import Service
from chalicelib.storage.memory import MemoryStore
from tests.factories import new_job


def _dead(store: MemoryStore, clock: FakeClock, type_: str, max_attempts: int) -> str:
    [added] = store.add([new_job(clock, type_, max_attempts=max_attempts, tenant="t")])
    [job] = store.claim(1, 30.0, ids=[added.job.id])
    assert store.finish([Completion(job.id, job.lease_token or "", JobState.DEAD, error="x")])
    return job.id


def test_every_redrive_path_cuts_to_the_ceiling_or_the_handler_default() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    registry = Registry()

    @registry.handler("patient", max_attempts=40)
    def patient(payload: dict[str, object]) -> None:
        return None

    @registry.handler("plain", max_attempts=3)
    def plain(payload: dict[str, object]) -> None:
        return None

    service = Service(store, registry, Settings.from_env({"SPOOL_MAX_ATTEMPTS": "10"}))
    one = _dead(store, clock, "plain", 100)
    assert service.redrive(one, "t").max_attempts == 10
    many = [_dead(store, clock, "patient", 100), _dead(store, clock, "plain", 7)]
    moved = service.redrive_ids(many, "t", None)
    assert [j.max_attempts for j in moved] == [40, 7]
    clock.advance(1)
    again = _dead(store, clock, "plain", 100)
    clock.advance(1)
    swept = list(service.redrive_all("t"))
    assert {j.id: j.max_attempts for j in swept}[again] == 10
