"""The Deliverer over a real loopback receiver: what each answer does to a delivery
(delivered, retried with backoff, failed), the guard checked again at delivery
time, and the signed body a receiver gets."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from spool_client.webhooks import verify
from tests.factories import new_job, token
from tests.webhook_receiver import Receiver

NEW, OLD = signing.new_secret(), signing.new_secret()


def settings(**extra: str) -> Settings:
    hooks = {"acme": {"secrets": [NEW, OLD]}}
    values = {
        "SPOOL_WEBHOOKS": json.dumps(hooks),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_TIMEOUT": "2",
        "SPOOL_WEBHOOK_MAX_ATTEMPTS": "3",
        "SPOOL_WEBHOOK_BACKOFF": "10",
        "SPOOL_WEBHOOK_BACKOFF_MAX": "40",
        **extra,
    }
    return Settings(extra=values)


@pytest.fixture
def store() -> MemoryStore:
    clock = FakeClock()
    return MemoryStore(clock)


def finished_job(store: MemoryStore, url: str, result: object = None, state=JobState.SUCCEEDED):
    clock = store.clock
    assert isinstance(clock, FakeClock)
    job = store.add([new_job(clock, tenant="acme", callback_url=url)])[0].job
    [running] = store.claim(1, 30)
    store.finish([Completion(job.id, token(running), state, result=result, error="x")])
    return store.get(job.id)


def test_a_2xx_delivers_a_signed_body(store: MemoryStore, receiver: Receiver) -> None:
    job = finished_job(store, receiver.url, result={"width": 640})
    deliverer = Deliverer(store, settings())
    assert deliverer.drain() == 1
    [got] = receiver.requests
    [d] = store.webhooks(job.id)
    assert d.state == "delivered" and d.attempts == 1 and d.finished_at is not None
    assert got.headers["webhook-id"] == d.id
    assert got.headers["content-type"] == "application/json"
    stamp = int(got.headers["webhook-timestamp"])
    assert stamp == int(store.clock.now().timestamp())
    event = verify(got.body, got.headers, OLD, now=stamp)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job.id and event["data"]["result"] == {"width": 640}
    assert event["data"]["state"] == "succeeded" and event["data"]["attempts"] == 1
    assert "payload" not in event["data"]  # never sent: it may hold secrets
    assert store.webhook_counts() == {}


def test_a_failing_receiver_is_retried_with_backoff_then_failed(
    store: MemoryStore, receiver: Receiver
) -> None:
    receiver.status = 503
    job = finished_job(store, receiver.url)
    deliverer = Deliverer(store, settings())
    clock = store.clock
    assert isinstance(clock, FakeClock)
    assert deliverer.drain() == 1
    [d] = store.webhooks(job.id)
    assert d.state == "pending" and d.last_error == "HTTP 503 from the receiver"
    assert d.next_at is not None
    assert timedelta(seconds=5) <= d.next_at - clock.now() <= timedelta(seconds=10)
    assert deliverer.drain() == 0  # not due yet
    clock.advance(10)
    assert deliverer.drain() == 1
    [d] = store.webhooks(job.id)
    assert d.next_at is not None
    assert timedelta(seconds=10) <= d.next_at - clock.now() <= timedelta(seconds=20)
    clock.advance(20)
    assert deliverer.drain() == 1  # the third and last attempt
    [d] = store.webhooks(job.id)
    assert d.state == "failed" and d.attempts == 3 and d.next_at is None
    assert d.last_error is not None
    assert d.last_error.startswith("gave up after 3 attempts: HTTP 503")
    assert store.webhook_counts() == {"failed": 1}
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one id throughout


def test_retry_after_is_honoured_when_longer(store: MemoryStore, receiver: Receiver) -> None:
    receiver.status = 429
    job = finished_job(store, receiver.url)

    class LongRetryAfter(Deliverer):
        def _post(self, *args, **kwargs):  # the receiver's answer, with its header
            answer = super()._post(*args, **kwargs)
            return {**answer, "headers": {"retry-after": "600"}}

    LongRetryAfter(store, settings()).drain()
    [d] = store.webhooks(job.id)
    assert d.next_at is not None
    assert d.next_at - store.clock.now() == timedelta(seconds=600)


def test_410_gone_fails_at_once(store: MemoryStore, receiver: Receiver) -> None:
    receiver.status = 410
    job = finished_job(store, receiver.url, state=JobState.DEAD)
    Deliverer(store, settings()).drain()
    [d] = store.webhooks(job.id)
    assert d.state == "failed" and d.attempts == 1 and "Gone" in (d.last_error or "")
    assert json.loads(receiver.requests[0].body)["type"] == "job.dead"


def test_a_receiver_that_is_down_is_retried(store: MemoryStore, receiver: Receiver) -> None:
    receiver.down()
    job = finished_job(store, receiver.url)
    Deliverer(store, settings()).drain()
    [d] = store.webhooks(job.id)
    assert d.state == "pending" and "ConnectionError" in (d.last_error or "")


def test_the_guard_is_checked_again_at_delivery(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A name that resolved to a public address at enqueue may point at the metadata
    service by delivery time: refused then, without a connection, and failed. The
    tenant reads that the name leads nowhere allowed; the operator's log, where."""
    job = finished_job(store, "http://hooks.example.com/x")

    def rebinding(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    Deliverer(store, settings(), resolver=rebinding).drain()
    [d] = store.webhooks(job.id)
    assert d.state == "failed" and "SSRF guard" in (d.last_error or "")
    assert "does not resolve to an address" in (d.last_error or "")
    assert "metadata" not in (d.last_error or "")
    assert any("metadata" in r.getMessage() for r in caplog.records)


def test_private_addresses_need_the_operator_to_open_them(
    store: MemoryStore, receiver: Receiver
) -> None:
    job = finished_job(store, receiver.url)
    Deliverer(store, settings(SPOOL_WEBHOOK_ALLOW_PRIVATE="false")).drain()
    [d] = store.webhooks(job.id)
    assert d.state == "failed" and "refused" in (d.last_error or "")
    assert receiver.requests == []


def test_a_tenant_whose_secrets_were_removed_fails_its_deliveries(
    store: MemoryStore, receiver: Receiver
) -> None:
    job = finished_job(store, receiver.url)
    other = json.dumps({"someone-else": {"secrets": [NEW]}})
    Deliverer(store, settings(SPOOL_WEBHOOKS=other)).drain()
    [d] = store.webhooks(job.id)
    assert d.state == "failed" and "no webhook secret" in (d.last_error or "")
    assert receiver.requests == []


def test_a_big_result_is_left_out_of_the_body(store: MemoryStore, receiver: Receiver) -> None:
    job = finished_job(store, receiver.url, result={"blob": "x" * 5000})
    Deliverer(store, settings(SPOOL_WEBHOOK_MAX_RESULT_BYTES="1000")).drain()
    data = json.loads(receiver.requests[0].body)["data"]
    assert data["result"] is None and data["result_omitted"] is True
    assert data["id"] == job.id


def test_a_job_redriven_since_sends_only_its_id_and_the_event(
    store: MemoryStore, receiver: Receiver
) -> None:
    job = finished_job(store, receiver.url, state=JobState.DEAD)
    store.redrive([job.id])
    Deliverer(store, settings()).drain()
    event = json.loads(receiver.requests[0].body)
    assert event["type"] == "job.dead" and event["data"] == {"id": job.id, "state": "dead"}


def test_deliveries_run_in_parallel_up_to_the_concurrency(
    store: MemoryStore, receiver: Receiver
) -> None:
    """A receiver that stalls holds one slot each; the others are still attempted."""
    receiver.hang.set()
    for _ in range(3):
        finished_job(store, receiver.url)
    deliverer = Deliverer(store, settings(SPOOL_WEBHOOK_TIMEOUT="0.5"))
    assert deliverer.drain() == 3
    assert len(receiver.requests) == 3
    assert store.webhook_counts() == {"pending": 3}  # each timed out, to be retried


def test_a_store_failure_mid_attempt_leaves_the_delivery_to_its_lease(
    store: MemoryStore, receiver: Receiver
) -> None:
    job = finished_job(store, receiver.url)

    def broken_get(job_id: str, tenant: str | None = None):
        raise ConnectionError("the store went away")

    original = store.get
    store.get = broken_get  # type: ignore[method-assign]
    try:
        assert Deliverer(store, settings()).drain() == 1
    finally:
        store.get = original  # type: ignore[method-assign]
    [d] = store.webhooks(job.id)
    assert d.state == "pending" and d.lease_token is not None  # claimed, left to its lease
    assert receiver.requests == []
    clock = store.clock
    assert isinstance(clock, FakeClock)
    clock.advance(2 * 2 + 5)  # the lease: SPOOL_WEBHOOK_TIMEOUT 2 s, x 2, + 5 s
    assert Deliverer(store, settings()).drain() == 1
    [d] = store.webhooks(job.id)
    assert d.state == "delivered" and d.attempts == 2


def test_a_refusal_hides_the_address_and_still_reads_as_a_sentence() -> None:
    from chalicelib.webhooks.deliver import _without_addresses

    said = _without_addresses("IP address 10.0.0.5 is not on the allowlist (a private address)")
    assert said == "an IP address is not on the allowlist (a private address)"
