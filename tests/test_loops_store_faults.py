"""Webhook delivery and `spool serve`'s emulated worker ride out any store error.

Delivery logged a traceback per poll while the store was down, and an attempt whose
outcome the store refused was forgotten: its lease ran out and the receiver got it
again. The emulator logged a traceback a second for an error the store had not
mapped. Now both say an outage once when it starts and once when it ends, back off,
and delivery holds the outcome it could not record and records it when the store
is back (the receiver is not sent it twice).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any, cast

import pytest
import redis

import app as spool_app
from chalicelib.errors import StoreNotMigrated
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.memory import MemoryStore
from chalicelib.webhooks.deliver import Deliverer
from local.emulator import Emulator
from tests.test_events import add, state
from tests.test_webhook_deliver import finished_job, settings
from tests.test_worker import WAIT, wait_until
from tests.test_worker_store_faults import Faulty
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(120)


def said(caplog: pytest.LogCaptureFixture, logger: str) -> tuple[int, int]:
    lines = [r.getMessage() for r in caplog.records if r.name == logger]
    return (
        sum(line.startswith("store unavailable") for line in lines),
        sum(line.startswith("store is back") for line in lines),
    )


@pytest.fixture
def store() -> MemoryStore:
    from chalicelib.clock import FakeClock

    return MemoryStore(FakeClock())


def delivering(deliverer: Deliverer) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=deliverer.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_a_delivery_whose_outcome_meets_an_outage_is_recorded_later_not_sent_twice(
    store: MemoryStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    job = finished_job(store, receiver.url)
    reset = redis.ConnectionError("Connection reset by peer")
    faulty = Faulty(store, reset, frozenset({"finish_webhook"}))
    faulty.arm(3)
    deliverer = Deliverer(faulty, settings(SPOOL_WEBHOOK_POLL="0.05"))
    with caplog.at_level(logging.INFO, logger="spool"):
        stop, thread = delivering(deliverer)
        try:
            assert wait_until(lambda: store.webhooks(job.id)[0].state == "delivered")
        finally:
            stop.set()
            thread.join(WAIT)
            deliverer.close()
    assert len(receiver.requests) == 1
    assert faulty.raised == 3
    assert said(caplog, "spool.webhooks") == (1, 1)


def test_claims_that_meet_an_outage_are_said_once_then_resume(
    store: MemoryStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    io_error = sqlite3.OperationalError("disk I/O error")
    faulty = Faulty(store, io_error, frozenset({"claim_webhooks"}))
    faulty.arm(5)
    deliverer = Deliverer(faulty, settings(SPOOL_WEBHOOK_POLL="0.01"))
    with caplog.at_level(logging.INFO, logger="spool"):
        stop, thread = delivering(deliverer)
        try:
            assert wait_until(lambda: faulty.raised == 5)
            job = finished_job(store, receiver.url)
            assert wait_until(lambda: store.webhooks(job.id)[0].state == "delivered")
        finally:
            stop.set()
            thread.join(WAIT)
            deliverer.close()
    assert said(caplog, "spool.webhooks") == (1, 1)
    tracebacks = [r for r in caplog.records if r.exc_info and r.name == "spool.webhooks"]
    assert tracebacks == []


def test_the_emulated_worker_waits_out_an_error_the_store_did_not_map(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    claim = rt.store.claim
    left = [4]

    def refusing(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return claim(*args, **kwargs)

    monkeypatch.setattr(rt.store, "claim", refusing)
    job_id = add(rt)
    emulator = Emulator(spool_app.app, rt)
    with caplog.at_level(logging.INFO, logger="spool"):
        emulator.start()
        try:
            assert wait_until(lambda: state(rt, job_id) is JobState.SUCCEEDED, timeout=30)
            assert wait_until(lambda: said(caplog, "spool.worker")[1] == 1)
        finally:
            emulator.stop()
    assert left == [0]
    assert said(caplog, "spool.worker") == (1, 1)
    assert [r for r in caplog.records if r.exc_info and r.name.startswith("spool")] == []


def test_the_emulated_worker_stops_on_what_waiting_cannot_fix(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema changed under the server: the built-in worker stops, saying the fix,
    instead of a traceback a second for as long as the server runs."""

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise StoreNotMigrated("database is not migrated: run `spool db migrate`")

    monkeypatch.setattr(rt.store, "claim", refusing)
    emulator = Emulator(spool_app.app, rt)
    with caplog.at_level(logging.INFO, logger="spool"):
        emulator.start()
        try:
            thread = emulator._thread
            assert thread is not None
            thread.join(WAIT)
            assert not thread.is_alive(), "the emulated worker kept retrying"
        finally:
            emulator.stop()
    [line] = [r.getMessage() for r in caplog.records if "built-in worker stops" in r.getMessage()]
    assert "spool db migrate" in line


class _Queue:
    """An SQS client whose receive fails `left` times (the queue unreachable), then
    answers empty; `answered` counts the answers."""

    def __init__(self, error: BaseException, left: int) -> None:
        self.error = error
        self.left = left
        self.answered = 0

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        if self.left > 0:
            self.left -= 1
            raise self.error
        self.answered += 1
        return {"Messages": []}


def test_spool_serves_sqs_poller_says_an_outage_once_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It logged a line a second for as long as the queue could not be reached."""
    from botocore.exceptions import EndpointConnectionError

    from local.sqs_poller import SqsPoller

    queue = _Queue(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), 5)
    poller = SqsPoller(spool_app.app, cast(Any, queue), "http://127.0.0.1:1/q", wait_seconds=0)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.INFO, logger="spool"):
        thread.start()
        try:
            assert wait_until(lambda: queue.answered >= 2, timeout=60)
        finally:
            stop.set()
            thread.join(WAIT)
    assert said(caplog, "spool.sqs_poller") == (1, 1)


def test_spool_serves_sqs_poller_stops_on_refused_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from botocore.exceptions import ClientError

    from local.sqs_poller import SqsPoller

    refused = ClientError(
        {"Error": {"Code": "InvalidClientTokenId", "Message": "no such key"}}, "ReceiveMessage"
    )
    poller = SqsPoller(
        spool_app.app, cast(Any, _Queue(refused, 10**9)), "http://127.0.0.1:1/q", wait_seconds=0
    )
    thread = threading.Thread(target=poller.run, args=(threading.Event(),), daemon=True)
    with caplog.at_level(logging.INFO, logger="spool"):
        thread.start()
        thread.join(WAIT)
    assert not thread.is_alive(), "the poller kept retrying refused credentials"
    assert any("refused this process's credentials" in r.getMessage() for r in caplog.records)


def test_an_outcome_refused_for_a_lapsed_lease_is_not_logged_as_the_deliverys(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery thread stalled past its lease (SIGSTOP, a POST that hung): another
    worker claims the delivery and delivers it, and the store refuses the stale outcome.
    The stale worker logged its own outcome as the delivery's, a WARNING that it had
    "failed: gave up" beside the store's `delivered`."""
    from chalicelib.clock import FakeClock

    clock = cast(FakeClock, store.clock)
    job = finished_job(store, "http://127.0.0.1:9/hook")

    def stalled(*args: Any) -> dict[str, Any]:
        clock.advance(3600)  # its lease lapses; another worker takes the delivery
        [other] = store.claim_webhooks(1, 30)
        assert store.finish_webhook(other.id, other.lease_token or "", "delivered")
        return {"status": 500}

    deliverer = Deliverer(store, settings(SPOOL_WEBHOOK_MAX_ATTEMPTS="1"), send=stalled)
    try:
        with caplog.at_level(logging.INFO, logger="spool.webhooks"):
            deliverer.drain()
    finally:
        deliverer.close()
    [delivery] = store.webhooks(job.id)
    assert delivery.state == "delivered"
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "spool.webhooks"]
    assert [level for level, _ in lines] == [logging.INFO], lines
    assert "gave up" not in lines[0][1]
    assert "not recorded" in lines[0][1] and "another worker" in lines[0][1]
    assert deliverer.failed == 0


class _ReplyLost:
    """finish_webhook applied, but its reply lost the first time (the connection cut
    after the commit): the deliverer holds the outcome and writes it again."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.lost = 0

    def finish_webhook(self, *args: Any, **kwargs: Any) -> bool:
        applied: bool = self._store.finish_webhook(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            raise redis.ConnectionError("Connection reset by peer")
        return applied

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_an_outcome_whose_reply_was_lost_is_logged_and_counted_as_written(
    store: MemoryStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    job = finished_job(store, receiver.url)
    faulty = _ReplyLost(store)
    deliverer = Deliverer(cast(Any, faulty), settings(SPOOL_WEBHOOK_POLL="0.05"))
    with caplog.at_level(logging.INFO, logger="spool"):
        stop, thread = delivering(deliverer)
        try:
            assert wait_until(lambda: faulty.lost == 1 and not deliverer._held)
        finally:
            stop.set()
            thread.join(WAIT)
            deliverer.close()
    assert store.webhooks(job.id)[0].state == "delivered"
    assert len(receiver.requests) == 1
    assert deliverer.delivered == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "spool.webhooks"]
    assert any(" delivered: job " in line for line in lines), lines
    assert not any("not recorded" in line for line in lines), lines
