"""Enqueue and the other service calls: refused input stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.clock import FakeClock
from chalicelib.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    UnknownJobType,
    ValidationFailed,
)
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import JobStore
from tests.factories import token


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    return EnqueueRequest.model_validate(fields)


def stored(store: JobStore) -> int:
    return sum(store.counts().values())


def test_enqueue_applies_handler_defaults(svc: Service, clock: FakeClock) -> None:
    [result] = svc.enqueue([req(type="fail", payload={"times": 1})], "acme")
    job = result.job
    assert result.created
    assert job.id.startswith("j_") and len(job.id) == 34
    assert (job.tenant, job.type, job.queue, job.priority) == ("acme", "fail", "default", 0)
    assert job.max_attempts == 5  # the fail handler's policy
    assert job.payload == {"times": 1, "always": False, "message": "planned failure"}
    assert job.run_at == clock.now()
    assert svc.status(job.id, "acme") == job


def test_request_fields_override_defaults(svc: Service) -> None:
    [result] = svc.enqueue([req(queue="mail", priority=7, max_attempts=2)], "default")
    assert (result.job.queue, result.job.priority, result.job.max_attempts) == ("mail", 7, 2)


def test_unknown_type_is_refused_and_nothing_stored(svc: Service) -> None:
    with pytest.raises(UnknownJobType) as info:
        svc.enqueue([req(type="nope")], "default")
    assert info.value.status == 422
    assert "echo" in info.value.details["known"]
    assert stored(svc.store) == 0


def test_bad_payload_is_refused_and_nothing_stored(svc: Service) -> None:
    with pytest.raises(ValidationFailed) as info:
        svc.enqueue([req(type="sleep", payload={"seconds": "soon"})], "default")
    assert info.value.details["errors"][0]["loc"] == ["seconds"]
    with pytest.raises(ValidationFailed):
        svc.enqueue([req(type="sleep", payload={"seconds": 1, "extra": True})], "default")
    assert stored(svc.store) == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("state", "succeeded"),
        ("attempts", 3),
        ("tenant", "someone-else"),
        ("id", "j_" + "0" * 32),
        ("result", {"forged": True}),
        ("lease_token", "x"),
    ],
)
def test_server_owned_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        req(**{field: value})
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": ""},
        {"type": "has space"},
        {"queue": "bad/queue"},
        {"priority": 5000},
        {"delay": -1},
        {"max_attempts": 0},
        {"run_at": "2030-01-01T00:00:00"},  # no time zone
        {"run_at": "9999-12-31T23:59:59-14:00"},  # year 10000 in UTC
        {"run_at": "0001-01-01T00:00:00+14:00"},  # year 0 in UTC
        {"delay": float("inf")},
        {"idempotency_key": ""},
    ],
    ids=str,
)
def test_malformed_requests_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        req(**fields)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1800000000", ", with a time zone"),  # pydantic read Unix seconds, zone unasked
        ("1800000000.5", ", with a time zone"),
        ("2030-01-01 00:00:00Z", ""),  # a space for 'T'
        ("2030-01-01T00:00Z", ""),  # no seconds
        ("2030-01-01T00:00:00+0530", ""),  # no colon in the offset
        ("2030-01-01", ", with a time zone"),
        ("2030-01-01T00:00:00\u00a0Z", ""),
        ("\uff12030-01-01T00:00:00Z", ""),  # a fullwidth digit
        ("2030-01-01T00:00:00", ", with a time zone"),
    ],
)
def test_run_at_is_an_rfc_3339_date_time(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        req(run_at=text)
    message = info.value.errors()[0]["msg"]
    assert f"run_at must be an RFC 3339 date-time{says}, such as 2030-01-01T00:00:00Z" in message


@pytest.mark.parametrize(
    "text",
    [
        "2030-01-01T00:00:00Z",
        "2030-01-01t00:00:00z",  # RFC 3339 allows lower case
        "2030-01-01T05:30:00.123456789+05:30",
        "2030-01-01T00:00:00-00:00",
    ],
)
def test_rfc_3339_date_times_are_taken(text: str) -> None:
    assert req(run_at=text).run_at == datetime(2030, 1, 1, tzinfo=UTC) + (
        timedelta(microseconds=123456) if "." in text else timedelta(0)
    )


def test_batch_is_all_or_nothing(svc: Service) -> None:
    batch = [
        req(payload={"i": 0}),
        req(type="sleep", payload={"seconds": -5}),
        req(payload={"i": 2}),
        req(type="missing"),
    ]
    with pytest.raises(ValidationFailed) as info:
        svc.enqueue(batch, "default")
    assert [p["index"] for p in info.value.details] == [1, 3]
    assert "none were stored" in info.value.message
    assert stored(svc.store) == 0
    results = svc.enqueue([batch[0], batch[2]], "default")
    assert [r.job.payload for r in results] == [{"i": 0}, {"i": 2}]
    assert stored(svc.store) == 2


def test_a_batch_is_listed_in_the_order_it_was_sent(svc: Service) -> None:
    """Its jobs share one created_at, so a list orders them by id: ids drawn at random
    (within their millisecond) used to list a batch shuffled."""
    for _ in range(3):  # a shuffle that happens to come out in order is 1 in 50!
        sent = [req(payload={"n": n}) for n in range(50)]
        ids = [r.job.id for r in svc.enqueue(sent, "acme")]
        page = svc.store.list_jobs(JobQuery(tenant="acme", limit=200))
        listed = [j.id for j in page.jobs if j.id in set(ids)]
        assert listed == ids
        assert [svc.status(i, "acme").payload["n"] for i in listed] == list(range(50))


def test_idempotency_key_returns_the_same_job(svc: Service) -> None:
    [first] = svc.enqueue([req(payload={"v": 1}, idempotency_key="order-7")], "t1")
    [again] = svc.enqueue([req(payload={"v": 1}, idempotency_key="order-7")], "t1")
    [other_tenant] = svc.enqueue([req(idempotency_key="order-7")], "t2")
    assert first.created and not again.created and other_tenant.created
    assert again.job.id == first.job.id
    assert again.job.payload == {"v": 1}
    assert other_tenant.job.id != first.job.id
    assert stored(svc.store) == 2


def test_idempotency_key_reused_for_another_payload_is_a_conflict(svc: Service) -> None:
    # tests/test_idempotency_conflict.py covers every field and every store.
    [first] = svc.enqueue([req(payload={"v": 1}, idempotency_key="order-7")], "t1")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(payload={"v": 2}, idempotency_key="order-7")], "t1")
    assert info.value.status == 409
    assert info.value.details == {"id": first.job.id, "fields": ["payload"]}
    assert stored(svc.store) == 1


def test_idempotency_survives_the_job_running(svc: Service) -> None:
    [first] = svc.enqueue([req(idempotency_key="k")], "default")
    [claimed] = svc.store.claim(1, 30)
    svc.store.finish([Completion(claimed.id, token(claimed), JobState.SUCCEEDED)])
    [again] = svc.enqueue([req(idempotency_key="k")], "default")
    assert not again.created
    assert again.job.id == first.job.id
    assert again.job.state is JobState.SUCCEEDED


def test_delay_and_run_at(svc: Service, clock: FakeClock) -> None:
    [delayed] = svc.enqueue([req(delay=90)], "default")
    assert delayed.job.run_at == clock.now() + timedelta(seconds=90)
    when = clock.now() + timedelta(hours=2)
    [scheduled] = svc.enqueue([req(run_at=when.isoformat())], "default")
    assert scheduled.job.run_at == when
    # A time in another zone is the same instant.
    local = when.astimezone(datetime.now().astimezone().tzinfo)
    [same] = svc.enqueue([req(run_at=local)], "default")
    assert same.job.run_at == when
    # The past means now.
    [past] = svc.enqueue([req(run_at=datetime(2000, 1, 1, tzinfo=UTC))], "default")
    assert past.job.run_at == clock.now()
    assert [j.id for j in svc.store.claim(10, 30)] == [past.job.id]


def test_delay_and_run_at_together_are_refused(svc: Service, clock: FakeClock) -> None:
    with pytest.raises(ValidationFailed):
        svc.enqueue([req(delay=5, run_at=clock.now())], "default")
    assert stored(svc.store) == 0


def test_status_is_tenant_scoped(svc: Service) -> None:
    [result] = svc.enqueue([req()], "t1")
    assert svc.status(result.job.id, "t1").id == result.job.id
    assert svc.status(result.job.id, None).id == result.job.id
    with pytest.raises(JobNotFound):
        svc.status(result.job.id, "t2")
    with pytest.raises(JobNotFound):
        svc.status("j_" + "9" * 32, None)


def test_cancel_and_redrive(svc: Service) -> None:
    [waiting] = svc.enqueue([req(delay=60)], "t1")
    assert svc.cancel(waiting.job.id, "t1").state is JobState.CANCELLED
    with pytest.raises(InvalidTransition):
        svc.redrive(waiting.job.id, "t1")  # only dead jobs
    [doomed] = svc.enqueue([req()], "t1")
    [claimed] = svc.store.claim(1, 30)
    assert claimed.id == doomed.job.id
    svc.store.finish([Completion(claimed.id, token(claimed), JobState.DEAD)])
    with pytest.raises(JobNotFound):
        svc.redrive(doomed.job.id, "t2")
    back = svc.redrive(doomed.job.id, "t1")
    assert back.state is JobState.QUEUED and back.attempts == 0


def test_of_two_racing_redrives_only_the_one_that_moved_the_job_answers_it(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loser read the job dead, then the winner moved it: it used to answer 200
    with the winner's job (Postgres, Redis, DynamoDB), so neither caller could tell
    whose call redrove it. Now it is 409, as SQLite and memory answered."""
    [doomed] = svc.enqueue([req()], "t1")
    [claimed] = svc.store.claim(1, 30)
    svc.store.finish([Completion(claimed.id, token(claimed), JobState.DEAD)])
    real = svc.store.redrive

    def winner_first(ids: Any, tenant: Any, *more: Any, **kw: Any) -> Any:
        monkeypatch.setattr(svc.store, "redrive", real)
        assert len(real(ids, tenant, *more, **kw)) == 1  # the other caller's lands first
        return real(ids, tenant, *more, **kw)

    monkeypatch.setattr(svc.store, "redrive", winner_first)
    with pytest.raises(InvalidTransition) as info:
        svc.redrive(doomed.job.id, "t1")
    assert info.value.details == {"state": "queued"}
    assert svc.status(doomed.job.id, "t1").state is JobState.QUEUED


def test_redrive_all_pages_through_dead_jobs(svc: Service) -> None:
    svc.enqueue([req(payload={"i": i}) for i in range(12)], "t1")
    claimed = svc.store.claim(12, 30)
    svc.store.finish([Completion(j.id, token(j), JobState.DEAD) for j in claimed])
    assert len(svc.redrive_all("t2")) == 0
    moved = svc.redrive_all("t1", limit=5)
    assert len(moved) == 5
    assert len(svc.redrive_all("t1")) == 7
    dead = svc.list_jobs(JobQuery(tenant="t1", state=JobState.DEAD))
    assert dead.jobs == []
