"""chalicelib/idempotency.py at its edges: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.idempotency*'` left
alive (docs/testing.md): lists that differ only in their items, a schedule that
differs by exactly SCHEDULE_TOLERANCE (the same request) or by a microsecond more
(a different one), and the field a batch conflict names when the later job used
run_at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import IdempotencyConflict
from chalicelib.handlers import Registry
from chalicelib.idempotency import SCHEDULE_TOLERANCE, same_json
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore

TOLERANCE = SCHEDULE_TOLERANCE.total_seconds()
JUST_OVER = SCHEDULE_TOLERANCE + timedelta(microseconds=1)


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    fields.setdefault("idempotency_key", "k")
    return EnqueueRequest.model_validate(fields)


@pytest.fixture
def svc(clock: FakeClock, handlers: Registry) -> Iterator[Service]:
    store = MemoryStore(clock)
    yield Service(store, handlers)
    store.close()


def conflict_fields(svc: Service, request: EnqueueRequest) -> list[str]:
    """[] when `request` gets the keyed job back; else the fields its 409 names."""
    try:
        [result] = svc.enqueue([request], "t1")
    except IdempotencyConflict as exc:
        fields: list[str] = exc.details["fields"]
        return fields
    assert not result.created
    return []


# -- same_json: lists ---------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [([1, 2], [1, 3]), ([1], [2]), ((1, 2), [1, 3]), ([{"a": 1}], [{"a": 2}]), (["x"], "y")],
)
def test_lists_of_one_length_differ_when_an_item_does(a: Any, b: Any) -> None:
    assert not same_json(a, b)
    assert not same_json(b, a)


@pytest.mark.parametrize(("a", "b"), [([1, 2], [1, 2]), ((1, 2.0), [1.0, 2]), ([], ())])
def test_lists_with_the_same_items_are_the_same(a: Any, b: Any) -> None:
    assert same_json(a, b)


def test_a_payload_list_with_one_item_changed_is_a_conflict(svc: Service) -> None:
    svc.enqueue([req(payload={"items": [1, 2]})], "t1")
    assert conflict_fields(svc, req(payload={"items": [1, 3]})) == ["payload"]
    assert conflict_fields(svc, req(payload={"items": [1, 2]})) == []


# -- the schedule, exactly at the tolerance ------------------------------------


def test_a_delay_off_by_exactly_the_tolerance_is_the_same_request(
    svc: Service, clock: FakeClock
) -> None:
    svc.enqueue([req(delay=10)], "t1")
    clock.advance(300)  # sent again much later: the delay still counts from creation
    assert conflict_fields(svc, req(delay=10 + TOLERANCE)) == []
    assert conflict_fields(svc, req(delay=10 - TOLERANCE)) == []
    over = JUST_OVER.total_seconds()
    assert conflict_fields(svc, req(delay=10 + over)) == ["delay"]


def test_a_run_at_off_by_exactly_the_tolerance_is_the_same_request(
    svc: Service, clock: FakeClock
) -> None:
    at = clock.now() + timedelta(seconds=100)
    svc.enqueue([req(run_at=at)], "t1")
    assert conflict_fields(svc, req(run_at=at + SCHEDULE_TOLERANCE)) == []
    assert conflict_fields(svc, req(run_at=at - SCHEDULE_TOLERANCE)) == []
    assert conflict_fields(svc, req(run_at=at + JUST_OVER)) == ["run_at"]
    assert conflict_fields(svc, req(run_at=at - JUST_OVER)) == ["run_at"]


def test_a_past_run_at_matches_a_job_due_within_the_tolerance_of_creation(
    svc: Service, clock: FakeClock
) -> None:
    created = clock.now()
    svc.enqueue([req(delay=TOLERANCE)], "t1")  # due exactly one tolerance after creation
    clock.advance(60)
    past = created - timedelta(seconds=5)  # "at once", when first asked or now
    assert conflict_fields(svc, req(run_at=past)) == []


def test_a_past_run_at_does_not_match_a_job_due_later_than_the_tolerance(
    svc: Service, clock: FakeClock
) -> None:
    created = clock.now()
    svc.enqueue([req(delay=JUST_OVER.total_seconds())], "t1")
    assert conflict_fields(svc, req(run_at=created - timedelta(seconds=5))) == ["run_at"]


# -- one batch, one key ---------------------------------------------------------


def batch_conflicts(svc: Service, *requests: EnqueueRequest) -> list[dict[str, Any]]:
    try:
        svc.enqueue(list(requests), "t1")
    except IdempotencyConflict as exc:
        conflicts: list[dict[str, Any]] = exc.details["conflicts"]
        return conflicts
    return []


def test_a_batch_schedule_off_by_exactly_the_tolerance_is_one_job(svc: Service) -> None:
    assert batch_conflicts(svc, req(), req(delay=TOLERANCE)) == []
    assert batch_conflicts(svc, req(delay=5), req(delay=5 + JUST_OVER.total_seconds())) == [
        {"index": 1, "same_key_as": 0, "fields": ["delay"]}
    ]


def test_a_batch_conflict_names_run_at_when_the_later_job_used_it(
    svc: Service, clock: FakeClock
) -> None:
    later = clock.now() + timedelta(minutes=5)
    assert batch_conflicts(svc, req(), req(run_at=later)) == [
        {"index": 1, "same_key_as": 0, "fields": ["run_at"]}
    ]
    assert batch_conflicts(svc, req(run_at=later), req(delay=60)) == [
        {"index": 1, "same_key_as": 0, "fields": ["delay"]}
    ]
