"""chalicelib/service.py: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.service*'` left
alive (docs/testing.md): redrive_all's type filter and its paging past one page
of 500, a redrive that loses the race to another, the exact errors (message and
details) a client reads for refused input, missing jobs, wrong states and reused
idempotency keys, and the `spool.jobs` events an operator's log search relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import IdempotencyConflict, InvalidTransition, JobNotFound, ValidationFailed
from chalicelib.handlers import Registry
from chalicelib.models import Completion, Job, JobQuery, JobState
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import Backlog
from chalicelib.storage.memory import MemoryStore
from chalicelib.timebounds import MAX_DELAY, MAX_DELAY_SECONDS
from tests.factories import token


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    return EnqueueRequest.model_validate(fields)


@pytest.fixture
def svc(clock: FakeClock, handlers: Registry) -> Iterator[Service]:
    store = MemoryStore(clock)
    yield Service(store, handlers)
    store.close()


class Events(logging.Handler):
    """The `spool.jobs` records, caught on that logger itself (whatever the root's setup)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == event]


@pytest.fixture
def events() -> Iterator[Events]:
    logger = logging.getLogger("spool.jobs")
    caught, level = Events(), logger.level
    logger.addHandler(caught)
    logger.setLevel(logging.DEBUG)
    try:
        yield caught
    finally:
        logger.removeHandler(caught)
        logger.setLevel(level)


def make_dead(svc: Service, tenant: str, count: int, type_: str = "echo") -> list[str]:
    field = "message" if type_ == "fail" else "i"  # fail's payload model has no "i"
    jobs = [req(type=type_, payload={field: str(i)}) for i in range(count)]
    results = svc.enqueue(jobs, tenant)
    ids = {r.job.id for r in results}
    claimed = svc.store.claim(count, 30, ids=sorted(ids))
    assert {j.id for j in claimed} == ids
    svc.store.finish([Completion(j.id, token(j), JobState.DEAD) for j in claimed])
    return sorted(ids)


def dead_count(svc: Service, **query: Any) -> int:
    page = svc.list_jobs(JobQuery(state=JobState.DEAD, limit=1000, **query))
    return len(page.jobs)


# -- redrive_all -----------------------------------------------------------------


def test_redrive_all_moves_only_the_type_asked_for(svc: Service) -> None:
    make_dead(svc, "t1", 3, "echo")
    make_dead(svc, "t1", 2, "fail")
    moved = svc.redrive_all("t1", type_="fail")
    assert sorted(j.type for j in moved) == ["fail", "fail"]
    assert dead_count(svc, type="echo") == 3 and dead_count(svc, type="fail") == 0


def test_redrive_all_pages_past_500_and_stops_at_its_limit(svc: Service) -> None:
    make_dead(svc, "t1", 1601)
    assert len(svc.redrive_all("t1", limit=600)) == 600  # a page of 500, then 100
    assert len(svc.redrive_all("t1")) == 1000  # the default limit
    assert dead_count(svc, tenant="t1") == 1


# -- redrive ------------------------------------------------------------------------


class LosesTheRace(MemoryStore):
    """A redrive that another process's redrive beat: the job moved, not by us."""

    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        super().redrive(job_ids, tenant, cap, attempts)
        return []


def test_a_redrive_that_lost_the_race_is_refused_with_the_job_s_state(
    clock: FakeClock, handlers: Registry, events: Events
) -> None:
    """Only the call that moved the job answers 200, on every store (the loser's 200
    with the winner's job read the same as a win)."""
    store = LosesTheRace(clock)
    svc = Service(store, handlers)
    [job_id] = make_dead(svc, "t1", 1)
    with pytest.raises(InvalidTransition) as info:
        svc.redrive(job_id, "t1")
    assert info.value.details == {"state": "queued"}
    assert svc.status(job_id, "t1").state is JobState.QUEUED
    assert events.named("redriven") == []  # the winner logged it
    store.close()


def test_redrives_are_logged_as_redriven(svc: Service, events: Events) -> None:
    [one] = make_dead(svc, "t1", 1)
    two = make_dead(svc, "t1", 2)
    svc.redrive(one, "t1")
    svc.redrive_all("t1")
    logged = events.named("redriven")
    assert sorted(r.job_id for r in logged) == sorted([one, *two])  # type: ignore[attr-defined]
    assert all(r.levelno == logging.INFO for r in logged)


def test_only_a_dead_job_is_redriven_and_the_refusal_says_its_state(svc: Service) -> None:
    [waiting] = svc.enqueue([req(delay=60)], "t1")
    with pytest.raises(InvalidTransition) as info:
        svc.redrive(waiting.job.id, "t1")
    assert info.value.message == "only dead jobs can be redriven; this one is queued"
    assert info.value.details == {"state": "queued"}


# -- status and cancel -------------------------------------------------------------


def test_a_missing_job_is_not_found_naming_its_id(svc: Service) -> None:
    missing = "j_" + "9" * 32
    with pytest.raises(JobNotFound) as info:
        svc.status(missing, "t1")
    assert info.value.message == "job not found"
    assert info.value.details == {"id": missing}


def test_a_cancel_is_logged_as_cancelled(svc: Service, events: Events) -> None:
    [waiting] = svc.enqueue([req(delay=60)], "t1")
    svc.cancel(waiting.job.id, "t1")
    [record] = events.named("cancelled")
    assert record.job_id == waiting.job.id  # type: ignore[attr-defined]


# -- what enqueue logs --------------------------------------------------------------


def test_enqueue_logs_each_stored_job_with_its_delay(svc: Service, events: Events) -> None:
    [now] = svc.enqueue([req()], "t1")
    [soon] = svc.enqueue([req(delay=0.5)], "t1")
    [later] = svc.enqueue([req(delay=90.12345)], "t1")
    by_id = {r.job_id: r for r in events.named("enqueued")}  # type: ignore[attr-defined]
    assert set(by_id) == {now.job.id, soon.job.id, later.job.id}
    assert all(r.levelno == logging.INFO for r in by_id.values())
    assert not hasattr(by_id[now.job.id], "delay_s")
    assert by_id[soon.job.id].delay_s == 0.5  # type: ignore[attr-defined]
    assert by_id[later.job.id].delay_s == 90.123  # type: ignore[attr-defined]


def test_a_repeated_key_is_logged_at_debug_not_as_enqueued(svc: Service, events: Events) -> None:
    [first] = svc.enqueue([req(idempotency_key="k")], "t1")
    events.records.clear()
    svc.enqueue([req(idempotency_key="k")], "t1")
    assert events.named("enqueued") == []
    [record] = events.named("enqueue_repeated")
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "job enqueue_repeated: key seen"
    assert record.job_id == first.job.id  # type: ignore[attr-defined]


# -- refused input: the exact error ----------------------------------------------------


def test_a_non_finite_payload_is_refused_naming_the_field(svc: Service) -> None:
    with pytest.raises(ValidationFailed) as info:
        svc.build(EnqueueRequest(type="echo", payload={"x": float("nan")}), "t1")
    assert info.value.message == "payload holds NaN or Infinity, which JSON cannot carry"
    assert info.value.details == {"field": "payload"}


def test_delay_and_run_at_together_are_refused_saying_so(svc: Service, clock: FakeClock) -> None:
    both = EnqueueRequest(type="echo", delay=5, run_at=clock.now() + timedelta(seconds=5))
    with pytest.raises(ValidationFailed) as info:
        svc.build(both, "t1")
    assert info.value.message == "give delay or run_at, not both"


def test_a_run_at_past_the_bound_names_the_latest_allowed(svc: Service, clock: FakeClock) -> None:
    too_far = EnqueueRequest(type="echo", run_at=clock.now() + MAX_DELAY + timedelta(seconds=1))
    with pytest.raises(ValidationFailed) as info:
        svc.build(too_far, "t1")
    assert info.value.details == {
        "field": "run_at",
        "max_seconds": MAX_DELAY_SECONDS,
        "latest": (clock.now() + MAX_DELAY).isoformat(),
    }


def test_an_invalid_job_in_a_batch_is_reported_with_its_message_and_details(
    svc: Service,
) -> None:
    with pytest.raises(ValidationFailed) as info:
        svc.enqueue([req(), req(payload={"x": float("inf")})], "t1")
    assert info.value.message == "some jobs in the batch are invalid; none were stored"
    assert info.value.details == [
        {
            "index": 1,
            "message": "payload holds NaN or Infinity, which JSON cannot carry",
            "details": {"field": "payload"},
        }
    ]


# -- reused idempotency keys: the exact error --------------------------------------------


def test_a_key_reused_in_one_batch_is_refused_saying_so(svc: Service) -> None:
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(idempotency_key="k"), req(idempotency_key="k", priority=3)], "t1")
    assert info.value.message == (
        "jobs in this batch share an idempotency key but differ; none were stored"
    )


def test_one_reused_key_names_the_job_and_every_field_that_differs(svc: Service) -> None:
    [first] = svc.enqueue([req(idempotency_key="k")], "t1")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(idempotency_key="k", priority=3, queue="mail")], "t1")
    assert info.value.message == (
        f"this idempotency key already names job {first.job.id}, which differs in "
        "queue, priority; send the same request to get that job, or use a new key"
    )


def test_reused_keys_in_a_batch_say_what_was_and_was_not_stored(svc: Service) -> None:
    svc.enqueue([req(idempotency_key="a"), req(idempotency_key="b")], "t1")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(idempotency_key="a", priority=1), req(idempotency_key="b")], "t1")
    assert info.value.message == (
        "1 job(s) reuse an idempotency key that names a different job; "
        "no job without a key was stored"
    )
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(idempotency_key="a", priority=1), req(idempotency_key="new")], "t1")
    assert info.value.message == (
        "1 job(s) reuse an idempotency key that names a different job; "
        "no job without a key was stored, and 1 keyed job(s) were (see details.stored)"
    )
