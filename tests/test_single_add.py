"""A single job's enqueue skips the batch bookkeeping (stop 42): no keyed and plain
parts, no line holding. What it stores, answers, refuses and logs is what the batch
path gave a batch of one: a plain job, a key seen before with the same job (not
created, no second row) and with another (409 naming the job)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chalicelib.errors import IdempotencyConflict
from chalicelib.service import EnqueueRequest, Service
from tests.frame_watch import frames_entered


def req(**fields: Any) -> EnqueueRequest:
    fields.setdefault("type", "echo")
    return EnqueueRequest.model_validate(fields)


def test_a_single_job_runs_no_contextlib_frame(svc: Service) -> None:
    called = frames_entered(lambda: svc.enqueue([req(payload={"n": 1})], "acme"), "contextlib.py")
    assert called == []


def test_single_jobs_store_answer_and_log_as_a_batch_of_one(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spool.jobs")
    [plain] = svc.enqueue([req(payload={"n": 1})], "acme")
    assert plain.created and plain.job.tenant == "acme"
    [first] = svc.enqueue([req(payload={"n": 2}, idempotency_key="k-1")], "acme")
    [again] = svc.enqueue([req(payload={"n": 2}, idempotency_key="k-1")], "acme")
    assert first.created and not again.created and again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict) as conflict:
        svc.enqueue([req(payload={"n": 3}, idempotency_key="k-1")], "acme")
    assert conflict.value.details["id"] == first.job.id
    assert conflict.value.details["fields"] == ["payload"]
    assert sum(svc.store.counts().values()) == 2
    events = [r.__dict__.get("event") for r in caplog.records if r.name == "spool.jobs"]
    assert events == ["enqueued", "enqueued", "enqueue_repeated", "enqueue_repeated"]
