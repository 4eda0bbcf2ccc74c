"""An idempotency key reused with a different callback URL is a 409, on every store.

The URL compared is the one the service resolved (the request's own, else the
tenant's default endpoint, else none) against the one stored with the job,
which the store hands back on AddResult (Job does not carry it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import IdempotencyConflict
from chalicelib.handlers import Registry
from chalicelib.models import JobQuery
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.base import JobStore
from chalicelib.webhooks import signing
from tests.apikit import TENANT_A, Api, installed, settings_for

SECRET = signing.new_secret()
HOOKED_SECRET = signing.new_secret()  # a tenant's secret is its own (config refuses one shared)
URL_A = "http://127.0.0.1:9/a"
URL_B = "http://127.0.0.1:9/b"
DEFAULT = "http://127.0.0.1:9/default"


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    fields.setdefault("payload", {"z": 1})
    fields.setdefault("idempotency_key", "cb-1")
    fields.setdefault("delay", 3600)
    return EnqueueRequest.model_validate(fields)


def stored(store: JobStore) -> int:
    return sum(store.counts().values())


@pytest.fixture
def svc(store: JobStore, handlers: Registry, clock: FakeClock) -> Service:
    """Tenant "plain" has webhooks but no default endpoint; "hooked" has one."""
    hooks = {"plain": {"secrets": [SECRET]}, "hooked": {"url": DEFAULT, "secrets": [HOOKED_SECRET]}}
    settings = Settings(
        extra={
            "SPOOL_WEBHOOKS": json.dumps(hooks),
            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPOOL_WEBHOOK_PORTS": "9",  # the discard port: nothing is ever delivered
        }
    )
    return Service(store, handlers, settings)


# -- across requests -----------------------------------------------------------


def test_another_callback_url_under_a_seen_key_is_a_conflict(
    svc: Service, clock: FakeClock
) -> None:
    [first] = svc.enqueue([req(callback_url=URL_A)], "plain")
    assert first.created
    clock.advance(30)
    [again] = svc.enqueue([req(callback_url=URL_A)], "plain")
    assert not again.created and again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(callback_url=URL_B)], "plain")
    assert (info.value.status, info.value.code) == (409, "idempotency_conflict")
    assert info.value.details == {"id": first.job.id, "fields": ["callback_url"]}
    with pytest.raises(IdempotencyConflict) as info:  # no URL at all resolves to none here
        svc.enqueue([req()], "plain")
    assert info.value.details == {"id": first.job.id, "fields": ["callback_url"]}
    assert stored(svc.store) == 1


def test_a_callback_url_added_to_a_job_that_had_none_is_a_conflict(svc: Service) -> None:
    [first] = svc.enqueue([req()], "plain")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(callback_url=URL_A, payload={"z": 2})], "plain")
    assert info.value.details == {"id": first.job.id, "fields": ["payload", "callback_url"]}
    [again] = svc.enqueue([req()], "plain")
    assert not again.created and again.job.id == first.job.id


def test_the_resolved_callback_url_is_what_compares(svc: Service) -> None:
    [first] = svc.enqueue([req()], "hooked")  # resolved to the tenant's default
    [again] = svc.enqueue([req()], "hooked")
    [spelled] = svc.enqueue([req(callback_url=DEFAULT)], "hooked")
    assert first.created and not again.created and not spelled.created
    assert first.job.id == again.job.id == spelled.job.id
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(callback_url=URL_A)], "hooked")
    assert info.value.details == {"id": first.job.id, "fields": ["callback_url"]}
    assert stored(svc.store) == 1


def test_a_keyed_batch_names_the_callback_url_conflict(svc: Service) -> None:
    [taken] = svc.enqueue([req(callback_url=URL_A, idempotency_key="taken")], "plain")
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue(
            [
                req(callback_url=URL_B, idempotency_key="other"),
                req(callback_url=URL_B, idempotency_key="taken"),
                req(payload={"plain": True}, idempotency_key=None, delay=None),
            ],
            "plain",
        )
    details = info.value.details
    assert details["conflicts"] == [{"index": 1, "id": taken.job.id, "fields": ["callback_url"]}]
    assert [s["index"] for s in details["stored"]] == [0]
    assert stored(svc.store) == 2  # the unkeyed job is not stored


# -- inside one batch ------------------------------------------------------------


def test_one_key_with_two_callback_urls_in_one_batch_is_a_conflict(svc: Service) -> None:
    with pytest.raises(IdempotencyConflict) as info:
        svc.enqueue([req(callback_url=URL_A), req(callback_url=URL_B), req()], "plain")
    assert info.value.details == {
        "conflicts": [
            {"index": 1, "same_key_as": 0, "fields": ["callback_url"]},
            {"index": 2, "same_key_as": 0, "fields": ["callback_url"]},
        ],
        "stored": [],
    }
    assert stored(svc.store) == 0
    results = svc.enqueue([req(callback_url=URL_A), req(callback_url=URL_A)], "plain")
    assert [r.created for r in results] == [True, False]
    assert results[0].job.id == results[1].job.id


# -- over HTTP -------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    extra = {
        "SPOOL_WEBHOOKS": json.dumps({TENANT_A: {"secrets": [SECRET]}}),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_PORTS": "9",
    }
    with installed(settings_for(tmp_path, extra=extra)) as runtime:
        yield runtime


def test_http_another_callback_url_is_409(api: Api, rt: Runtime) -> None:
    job = {
        "type": "echo",
        "payload": {"z": 1},
        "idempotency_key": "cb-1",
        "delay": 3600,
        "callback_url": URL_A,
    }
    first = api.post("/enqueue", job)
    assert first.status == 201, first.body
    job_id = first.json["id"]
    reply = api.post("/enqueue", {**job, "callback_url": URL_B})
    assert reply.status == 409, reply.body
    assert reply.json["error"]["code"] == "idempotency_conflict"
    assert reply.json["error"]["details"] == {"id": job_id, "fields": ["callback_url"]}
    without = {k: v for k, v in job.items() if k != "callback_url"}
    reply = api.post("/enqueue", without)
    assert reply.status == 409, reply.body
    assert reply.json["error"]["details"] == {"id": job_id, "fields": ["callback_url"]}
    again = api.post("/enqueue", job)
    assert again.status == 200, again.body
    assert again.json["id"] == job_id and again.json["created"] is False
    assert [j.id for j in rt.store.list_jobs(JobQuery(limit=10)).jobs] == [job_id]


def test_http_batch_with_two_callback_urls_under_one_key_is_409(api: Api, rt: Runtime) -> None:
    job = {"type": "echo", "payload": {"z": 1}, "idempotency_key": "cb-1", "delay": 3600}
    reply = api.post(
        "/enqueue",
        {"jobs": [{**job, "callback_url": URL_A}, {**job, "callback_url": URL_B}]},
    )
    assert reply.status == 409, reply.body
    assert reply.json["error"]["details"] == {
        "conflicts": [{"index": 1, "same_key_as": 0, "fields": ["callback_url"]}],
        "stored": [],
    }
    assert rt.store.list_jobs(JobQuery(limit=10)).jobs == []
