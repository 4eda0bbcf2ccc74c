"""An idempotency key reused for a different request is a 409, on every store.

The same request again still gets the first job back (created=False); what
counts as "the same" is in chalicelib/idempotency.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import IdempotencyConflict
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import JobStore
from tests.apikit import Api, installed, settings_for
from tests.factories import token


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    return EnqueueRequest.model_validate(fields)


def stored(store: JobStore) -> int:
    return sum(store.counts().values())


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


@pytest.fixture
def svc(store: JobStore, handlers: Registry) -> Service:
    return Service(store, handlers)


# -- the same request again ----------------------------------------------------


def test_the_same_request_again_returns_the_first_job(svc: Service, clock: FakeClock) -> None:
    ask = req(payload={"v": 1, "items": [1, 2]}, queue="mail", priority=3, idempotency_key="k")
    [first] = svc.enqueue([ask], "t1")
    clock.advance(30)
    [again] = svc.enqueue([ask], "t1")
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert stored(svc.store) == 1


def test_the_payload_is_compared_as_the_handler_normalized_it(svc: Service) -> None:
    [first] = svc.enqueue([req(type="fail", payload={"times": 1}, idempotency_key="k")], "t1")
    spelled_out = {"times": 1, "always": False, "message": "planned failure"}
    [again] = svc.enqueue([req(type="fail", payload=spelled_out, idempotency_key="k")], "t1")
    assert not again.created and again.job.id == first.job.id


def test_numbers_compare_by_value_but_true_is_not_one(svc: Service) -> None:
    [first] = svc.enqueue([req(payload={"n": 1, "f": 2.5}, idempotency_key="k")], "t1")
    [again] = svc.enqueue([req(payload={"n": 1.0, "f": 2.5}, idempotency_key="k")], "t1")
    assert again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(payload={"n": True, "f": 2.5}, idempotency_key="k")], "t1")
    assert info.value.details == {"id": first.job.id, "fields": ["payload"]}


# -- a different request under a seen key --------------------------------------


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        ({"payload": {"v": 2}}, "payload"),
        ({"type": "sleep", "payload": {"seconds": 1}}, "type"),
        ({"queue": "other"}, "queue"),
        ({"priority": 9}, "priority"),
        ({"max_attempts": 2}, "max_attempts"),
        ({"delay": 600}, "delay"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_different_request_under_a_seen_key_is_a_conflict(
    svc: Service, changed: dict[str, Any], field: str
) -> None:
    base: dict[str, Any] = {"payload": {"v": 1}, "idempotency_key": "order-7"}
    [first] = svc.enqueue([req(**base)], "t1")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(**{**base, **changed})], "t1")
    error = info.value
    assert (error.status, error.code) == (409, "idempotency_conflict")
    assert error.details["id"] == first.job.id
    assert field in error.details["fields"]
    assert first.job.id in error.message
    assert stored(svc.store) == 1
    [again] = svc.enqueue([req(**base)], "t1")  # the first request still answers
    assert not again.created and again.job.id == first.job.id


def test_keys_stay_per_tenant(svc: Service) -> None:
    svc.enqueue([req(payload={"v": 1}, idempotency_key="k")], "t1")
    [other] = svc.enqueue([req(payload={"v": 2}, idempotency_key="k")], "t2")
    assert other.created


# -- how the schedule compares -------------------------------------------------


def test_a_delay_repeated_later_is_the_same_request(svc: Service, clock: FakeClock) -> None:
    [first] = svc.enqueue([req(delay=3600, idempotency_key="k")], "t1")
    clock.advance(600)
    [again] = svc.enqueue([req(delay=3600, idempotency_key="k")], "t1")
    assert again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(delay=60, idempotency_key="k")], "t1")
    assert info.value.details["fields"] == ["delay"]
    with pytest.raises(IdempotencyConflict):  # no delay at all means "now"
        svc.enqueue([req(idempotency_key="k")], "t1")


def test_an_explicit_run_at_compares_as_an_instant(svc: Service, clock: FakeClock) -> None:
    when = clock.now() + timedelta(hours=2)
    [first] = svc.enqueue([req(run_at=when, idempotency_key="k")], "t1")
    clock.advance(3 * 3600)  # even once that time has passed
    # The same instant in another zone is the same request.
    plus_five = when.astimezone(datetime.now().astimezone().tzinfo)
    [again] = svc.enqueue([req(run_at=plus_five, idempotency_key="k")], "t1")
    assert again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(run_at=when + timedelta(minutes=5), idempotency_key="k")], "t1")
    assert info.value.details["fields"] == ["run_at"]
    # delay 7200 named the same instant when the job was created
    [same] = svc.enqueue([req(delay=7200, idempotency_key="k")], "t1")
    assert same.job.id == first.job.id


def test_a_past_run_at_means_at_once_both_times(svc: Service, clock: FakeClock) -> None:
    past = datetime(2001, 1, 1, tzinfo=UTC)
    [first] = svc.enqueue([req(run_at=past, idempotency_key="k")], "t1")
    clock.advance(60)
    [again] = svc.enqueue([req(run_at=past, idempotency_key="k")], "t1")
    [now] = svc.enqueue([req(idempotency_key="k")], "t1")
    assert first.job.id == again.job.id == now.job.id


def test_once_the_job_ran_its_schedule_is_no_longer_compared(
    svc: Service, clock: FakeClock
) -> None:
    ask = req(run_at=clock.now() + timedelta(seconds=5), idempotency_key="k")
    [first] = svc.enqueue([ask], "t1")
    clock.advance(10)
    [claimed] = svc.store.claim(1, 30)
    retry_at = clock.now() + timedelta(minutes=20)
    svc.store.finish([Completion(claimed.id, token(claimed), JobState.RETRYING, retry_at=retry_at)])
    [again] = svc.enqueue([ask], "t1")  # its run_at is now the retry's, not the request's
    assert not again.created and again.job.id == first.job.id
    assert again.job.state is JobState.RETRYING
    with pytest.raises(IdempotencyConflict):  # the rest still is
        svc.enqueue([req(run_at=ask.run_at, idempotency_key="k", priority=5)], "t1")


# -- batches -------------------------------------------------------------------


def test_a_batch_with_a_conflict_stores_no_unkeyed_job_and_names_what_it_stored(
    svc: Service,
) -> None:
    [taken] = svc.enqueue([req(payload={"v": 1}, idempotency_key="taken")], "t1")
    batch = [
        req(payload={"a": 1}, idempotency_key="fresh"),
        req(payload={"v": 2}, idempotency_key="taken"),
        req(payload={"plain": True}),
    ]
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue(batch, "t1")
    details = info.value.details
    assert details["conflicts"] == [{"index": 1, "id": taken.job.id, "fields": ["payload"]}]
    [fresh] = details["stored"]
    assert fresh["index"] == 0
    assert stored(svc.store) == 2  # the first job and "fresh"; the unkeyed job is not stored
    # The corrected batch, sent again, creates every job exactly once.
    batch[1] = req(payload={"v": 1}, idempotency_key="taken")
    results = svc.enqueue(batch, "t1")
    assert [r.created for r in results] == [False, False, True]
    assert [r.job.id for r in results[:2]] == [fresh["id"], taken.job.id]
    assert stored(svc.store) == 3


def test_a_keyed_only_batch_reports_every_conflict(svc: Service) -> None:
    [a] = svc.enqueue([req(payload={"v": "a"}, idempotency_key="a")], "t1")
    [b] = svc.enqueue([req(payload={"v": "b"}, idempotency_key="b")], "t1")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue(
            [
                req(payload={"v": "b"}, idempotency_key="b"),  # the same: fine
                req(payload={"v": "x"}, idempotency_key="a"),
            ],
            "t1",
        )
    assert info.value.details == {
        "conflicts": [{"index": 1, "id": a.job.id, "fields": ["payload"]}],
        "stored": [],
    }
    assert stored(svc.store) == 2
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(payload={"v": 1}, idempotency_key=k) for k in "ab"], "t1")
    assert info.value.details == {
        "conflicts": [
            {"index": 0, "id": a.job.id, "fields": ["payload"]},
            {"index": 1, "id": b.job.id, "fields": ["payload"]},
        ],
        "stored": [],
    }
    assert stored(svc.store) == 2


def test_two_jobs_of_one_batch_with_one_key_must_be_the_same_job(
    svc: Service, clock: FakeClock
) -> None:
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue(
            [
                req(payload={"v": 1}, idempotency_key="k"),
                req(payload={"v": 1}),
                req(payload={"v": 1}, idempotency_key="k", delay=60),
                req(payload={"v": 9}, idempotency_key="k"),
            ],
            "t1",
        )
    assert info.value.details == {
        "conflicts": [
            {"index": 2, "same_key_as": 0, "fields": ["delay"]},
            {"index": 3, "same_key_as": 0, "fields": ["payload"]},
        ],
        "stored": [],
    }
    assert stored(svc.store) == 0
    # The same job twice under one key is one job, as before.
    results = svc.enqueue(
        [req(payload={"v": 1}, idempotency_key="k"), req(payload={"v": 1}, idempotency_key="k")],
        "t1",
    )
    assert [r.created for r in results] == [True, False]
    assert results[0].job.id == results[1].job.id
    assert stored(svc.store) == 1


# -- over HTTP -----------------------------------------------------------------


def test_http_conflict_is_409_with_the_existing_id(api: Api, rt: Runtime) -> None:
    job = {"type": "echo", "payload": {"v": 1}, "idempotency_key": "order-7"}
    first = api.post("/enqueue", job)
    assert first.status == 201
    job_id = first.json["id"]
    reply = api.post("/enqueue", {**job, "payload": {"v": 2}})
    assert reply.status == 409, reply.body
    assert reply.json == {
        "error": {
            "code": "idempotency_conflict",
            "message": reply.json["error"]["message"],
            "details": {"id": job_id, "fields": ["payload"]},
        }
    }
    again = api.post("/enqueue", job)
    assert again.status == 200
    assert again.json["id"] == job_id and again.json["created"] is False
    assert len(rt.store.list_jobs(JobQuery(limit=10)).jobs) == 1


def test_http_batch_conflict_names_each_index(api: Api, rt: Runtime) -> None:
    taken = api.enqueue({"type": "echo", "payload": {"v": 1}, "idempotency_key": "taken"})
    reply = api.post(
        "/enqueue",
        {
            "jobs": [
                {"type": "echo", "payload": {"plain": 1}},
                {"type": "echo", "payload": {"v": 2}, "idempotency_key": "taken"},
            ]
        },
    )
    assert reply.status == 409
    assert reply.json["error"]["details"] == {
        "conflicts": [{"index": 1, "id": taken, "fields": ["payload"]}],
        "stored": [],
    }
    assert [j.id for j in rt.store.list_jobs(JobQuery(limit=10)).jobs] == [taken]
