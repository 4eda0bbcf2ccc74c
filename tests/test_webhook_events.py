"""The scheduled path (app.py's drain_due, as EventBridge invokes it on AWS and the
emulator locally) delivers webhooks beside its drain, and the invocation ends
with both done; a process that runs a delivery thread leaves delivery to it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import app as spool_app
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from chalicelib.webhooks import runner, signing
from local.emulator import context, scheduled_event
from spool_client.webhooks import verify
from tests.apikit import TENANT_A, installed, settings_for
from tests.webhook_receiver import Receiver

SECRET = signing.new_secret()


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    extra = {
        "SPOOL_WEBHOOKS": json.dumps({TENANT_A: {"secrets": [SECRET]}}),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    with installed(settings_for(tmp_path, extra=extra)) as runtime:
        yield runtime


def drain_due() -> dict[str, int]:
    handler = spool_app.app.handler_map["drain_due"]
    result: dict[str, int] = handler(scheduled_event(spool_app.app), context("drain_due"))
    return result


def enqueue(rt: Runtime, url: str) -> str:
    request = EnqueueRequest(type="echo", payload={"n": 1}, callback_url=url)
    return rt.service.enqueue([request], TENANT_A)[0].job.id


def test_the_scheduled_drain_delivers_what_is_due(rt: Runtime, receiver: Receiver) -> None:
    first = enqueue(rt, receiver.url)
    assert drain_due()["succeeded"] == 1  # and, after the drain, its webhook
    [got] = receiver.requests
    assert verify(got.body, got.headers, SECRET)["data"]["id"] == first
    [hook] = rt.store.webhooks(first)
    assert hook.state == "delivered"


def test_a_delivery_thread_in_the_process_takes_over(rt: Runtime, receiver: Receiver) -> None:
    job_id = enqueue(rt, receiver.url)
    thread = runner.start_thread(rt)
    assert thread is not None
    try:
        drain_due()
        receiver.wait_for(lambda got: len(got) == 1, timeout=10)
        assert [h.state for h in rt.store.webhooks(job_id)] in (["delivered"], ["pending"])
    finally:
        thread.stop()
    assert [h.state for h in rt.store.webhooks(job_id)] == ["delivered"]
    assert len(receiver.requests) == 1


def test_without_webhook_settings_nothing_starts(tmp_path) -> None:
    with installed(settings_for(tmp_path)) as rt:
        assert runner.start_thread(rt) is None
        assert not runner.enabled(rt.settings)
