"""Completion webhooks end to end: `spool serve` (waitress + the emulated worker) on a
SQLite file, a receiver on a loopback socket, jobs enqueued over HTTP.

Checked: signatures (the client's verify, both secrets of a rotation) and the
payload; each terminal event; the tenant's default endpoint; a receiver down
then up gets the delivery after retries, always under one webhook-id; a failed
delivery shows on the job and in /metrics; a stalled receiver does not hold up
jobs; a callback URL the guard refuses is a 422 over the socket too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.webhooks import signing
from spool_client import AsyncClient, Client, NotFound
from spool_client.webhooks import verify
from tests.apikit import API_KEYS, KEY_A, KEY_B, OPERATOR_KEY
from tests.procs import Served, guarded_env, spool_serve, stop
from tests.webhook_receiver import Receiver

NEW, OLD = signing.new_secret(), signing.new_secret()
B_SECRET = signing.new_secret()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().up()
    yield receiver
    receiver.released.set()
    receiver.down()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("webhooks")
    hooks = {
        "tenant-a": {"secrets": [NEW, OLD]},  # rotating: both sign
        "tenant-b": {"url": receiver.url + "/b-default", "secrets": [B_SECRET]},
    }
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db",
        SPOOL_API_KEYS=API_KEYS,
        SPOOL_METRICS_KEYS=f"{OPERATOR_KEY}=operator",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_WEBHOOKS=json.dumps(hooks),
        SPOOL_WEBHOOK_ALLOWLIST="127.0.0.1",  # the receiver, and nothing else private
        SPOOL_WEBHOOK_BACKOFF="0.2",
        SPOOL_WEBHOOK_BACKOFF_MAX="0.4",
        SPOOL_WEBHOOK_MAX_ATTEMPTS="100",
        SPOOL_WEBHOOK_TIMEOUT="1",
        SPOOL_WEBHOOK_POLL="0.05",
    )
    log = open(Path(folder) / "serve.log", "w")  # noqa: SIM115 (closed below)
    served = spool_serve("--threads", "8", env=env, stderr=log.fileno())
    try:
        yield served
    finally:
        stop(served.proc)
        log.close()
        if os.environ.get("SPOOL_TEST_SHOW_LOGS"):
            print((Path(folder) / "serve.log").read_text())


def enqueue(served: Served, job: dict[str, Any], key: str = KEY_A) -> requests.Response:
    return requests.post(served.url + "/enqueue", json=job, headers={"X-API-Key": key}, timeout=10)


def webhooks_of(served: Served, job_id: str, key: str = KEY_A) -> list[dict[str, Any]]:
    reply = requests.get(
        f"{served.url}/status/{job_id}",
        params={"webhooks": "true"},
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return list(reply.json()["webhooks"])


def until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        time.sleep(0.05)


def delivered(served: Served, job_id: str, key: str = KEY_A) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        hooks = webhooks_of(served, job_id, key)
        return hooks[0] if hooks and hooks[0]["state"] != "pending" else None

    return dict(until(done))


def for_job(receiver: Receiver, job_id: str) -> list[Any]:
    return [r for r in receiver.requests if json.loads(r.body)["data"]["id"] == job_id]


def test_a_finished_job_posts_a_signed_event(served: Served, receiver: Receiver) -> None:
    reply = enqueue(
        served, {"type": "echo", "payload": {"hi": 1}, "callback_url": receiver.url + "/a"}
    )
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    hook = delivered(served, job_id)
    assert hook["state"] == "delivered" and hook["attempts"] == 1
    assert hook["event"] == "job.succeeded" and hook["url"] == receiver.url + "/a"
    [got] = for_job(receiver, job_id)
    assert got.path == "/hooks/a"
    assert got.headers["webhook-id"] == hook["id"]
    stamp = int(got.headers["webhook-timestamp"])
    assert abs(stamp - time.time()) < 60
    # Rotation: both secrets sign, so receivers holding either one verify.
    assert len(got.headers["webhook-signature"].split()) == 2
    for secret in (NEW, OLD):
        event = verify(got.body, got.headers, secret)
        assert event["type"] == "job.succeeded"
        assert event["data"]["id"] == job_id and event["data"]["result"] == {"hi": 1}


def test_dead_and_cancelled_jobs_post_their_events(served: Served, receiver: Receiver) -> None:
    url = receiver.url + "/events"
    dead = enqueue(
        served,
        {"type": "fail", "payload": {"always": True}, "max_attempts": 1, "callback_url": url},
    ).json()["id"]
    later = enqueue(served, {"type": "echo", "delay": 600, "callback_url": url}).json()["id"]
    cancel = requests.post(
        f"{served.url}/jobs/{later}/cancel", headers={"X-API-Key": KEY_A}, timeout=10
    )
    assert cancel.status_code == 200
    assert delivered(served, dead)["event"] == "job.dead"
    assert delivered(served, later)["event"] == "job.cancelled"
    [died] = for_job(receiver, dead)
    event = verify(died.body, died.headers, NEW)
    assert event["data"]["state"] == "dead" and "planned failure" in event["data"]["last_error"]


def test_the_tenants_default_endpoint_is_used(served: Served, receiver: Receiver) -> None:
    job_id = enqueue(served, {"type": "echo"}, key=KEY_B).json()["id"]
    hook = delivered(served, job_id, KEY_B)
    assert hook["url"] == receiver.url + "/b-default" and hook["state"] == "delivered"
    [got] = for_job(receiver, job_id)
    assert verify(got.body, got.headers, B_SECRET)["data"]["id"] == job_id
    # tenant-a cannot see tenant-b's job, nor its webhooks
    assert (
        requests.get(
            f"{served.url}/status/{job_id}?webhooks=true", headers={"X-API-Key": KEY_A}, timeout=10
        ).status_code
        == 404
    )


def test_a_receiver_down_then_up_gets_it_after_retries(served: Served) -> None:
    flaky = Receiver()  # not listening yet: connections are refused
    try:
        job_id = enqueue(served, {"type": "echo", "callback_url": flaky.url}).json()["id"]

        def retried() -> bool:
            hooks = webhooks_of(served, job_id)
            return bool(hooks) and hooks[0]["attempts"] >= 3

        until(retried)
        [pending] = webhooks_of(served, job_id)
        assert pending["state"] == "pending" and "ConnectionError" in pending["last_error"]
        flaky.up()
        hook = delivered(served, job_id)
        assert hook["state"] == "delivered" and hook["attempts"] >= 4
        assert len(flaky.requests) == 1
        assert flaky.requests[0].headers["webhook-id"] == pending["id"]
        verify(flaky.requests[0].body, flaky.requests[0].headers, NEW)
    finally:
        flaky.down()


def test_a_failed_delivery_shows_on_the_job_and_in_metrics(served: Served) -> None:
    gone = Receiver()
    gone.status = 410
    gone.up()
    try:
        job_id = enqueue(served, {"type": "echo", "callback_url": gone.url}).json()["id"]
        hook = delivered(served, job_id)
        assert hook["state"] == "failed" and "410" in hook["last_error"]
        assert hook["finished_at"] is not None and hook["next_attempt_at"] is None
    finally:
        gone.down()
    metrics = requests.get(
        served.url + "/metrics", headers={"X-API-Key": OPERATOR_KEY}, timeout=10
    ).text
    failed = next(
        line
        for line in metrics.splitlines()
        if line.startswith('spool_webhook_deliveries{state="failed"}')
    )
    assert float(failed.split()[-1]) >= 1


def test_a_stalled_receiver_does_not_hold_up_jobs(served: Served) -> None:
    stalled = Receiver()
    stalled.hang.set()
    stalled.up()
    try:
        enqueue(served, {"type": "echo", "callback_url": stalled.url})
        stalled.wait_for(lambda got: len(got) >= 1)  # the delivery is stuck in there now
        started = time.monotonic()
        ids = [
            enqueue(served, {"type": "echo", "payload": {"i": i}}).json()["id"] for i in range(5)
        ]
        for job_id in ids:
            reply = requests.get(
                f"{served.url}/status/{job_id}",
                params={"wait": 10},
                headers={"X-API-Key": KEY_A},
                timeout=20,
            )
            assert reply.json()["state"] == "succeeded"
        assert time.monotonic() - started < 10
    finally:
        stalled.released.set()
        stalled.down()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://localhost/"]
)
def test_a_refused_callback_url_is_a_422_over_the_socket(served: Served, url: str) -> None:
    reply = enqueue(served, {"type": "echo", "callback_url": url})
    assert reply.status_code == 422
    assert reply.json()["error"]["details"] == {"field": "callback_url", "loc": ["callback_url"]}
    if url == "http://localhost/":  # a host off the list: the message names the webhooks' one
        message = reply.json()["error"]["message"]
        assert "SPOOL_WEBHOOK_ALLOWLIST" in message and "SPOOL_HTTP_ALLOWLIST" not in message


def test_the_clients_get_shows_a_jobs_webhooks_when_asked(
    served: Served, receiver: Receiver
) -> None:
    """Client.get(id, webhooks=True) and AsyncClient's: the `webhooks` list of
    GET /status/{id}?webhooks=true, as the HTTP API answers it; without it, None."""
    reply = enqueue(
        served, {"type": "echo", "payload": {"c": 1}, "callback_url": receiver.url + "/client"}
    )
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    hook = delivered(served, job_id)
    with Client(served.url, KEY_A) as spool:
        job = spool.get(job_id, webhooks=True)
        assert job.webhooks == [hook] and job.state == "succeeded"
        assert spool.get(job_id).webhooks is None  # not asked: not sent
        both = spool.get(job_id, webhooks=True, attempts=True)
        assert both.webhooks == [hook] and both.attempt_history is not None
        assert len(both.attempt_history) == 1

    async def scenario() -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        async with AsyncClient(served.url, KEY_A) as spool:
            asked = await spool.get(job_id, webhooks=True)
            plain = await spool.get(job_id)
            return asked.webhooks, plain.webhooks

    assert asyncio.run(scenario()) == ([hook], None)
    with Client(served.url, KEY_B) as other, pytest.raises(NotFound):
        other.get(job_id, webhooks=True)  # another tenant's job, its webhooks with it
