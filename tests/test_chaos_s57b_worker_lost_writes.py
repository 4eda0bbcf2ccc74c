"""A worker whose store write lost its connection says what becomes of its jobs.

A write whose reply is lost may have been applied, and the store's error says so in
words for an API client: "check its state before retrying (an enqueue is safe to
retry with the same idempotency_key)". The worker's log carried those words as they
were ("store unavailable (the database connection failed before it answered, so this
change may have been applied: check its state before retrying (an enqueue is safe to
retry with the same idempotency_key)): the worker waits it out"): its operator has
no request to retry and no key, and was not told what happens to the jobs. The line
now names the call and the jobs' fate (a claim's jobs run again once their leases
lapse; outcomes are held and written again), and the API's 503 keeps its text.

The connection is cut for real: the write waits on a lock another session holds, and
the test ends the write's session on the server (tests/test_chaos_s51g_log_lines.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.errors import StoreUnavailable, UncertainWrite
from chalicelib.handlers import Registry
from chalicelib.storage.memory import MemoryStore
from chalicelib.storage.postgres import PostgresStore, parse_url
from chalicelib.webhooks import signing
from chalicelib.webhooks.deliver import Deliverer
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job
from tests.pg_support import BASE_URL, fresh_schema, terminate, wait_until_blocked_by

pytestmark = [pytest.mark.timeout(60)]

LEASE = 40.0
CLIENT_WORDS = ("idempotency_key", "before retrying", "retry your request")


@contextmanager
def store_and_locker() -> Iterator[tuple[PostgresStore, psycopg.Connection, str]]:
    """A store on a fresh schema and a second session (not the schema's: the cut
    spares it) that can lock the store's jobs table."""
    with fresh_schema() as url:
        settings = parse_url(url)
        assert settings.schema is not None
        store = PostgresStore(settings, FakeClock())
        locker = psycopg.connect(BASE_URL, autocommit=False)
        try:
            yield store, locker, settings.schema
        finally:
            locker.close()
            store.close()


def cut_when_blocked(locker: psycopg.Connection, schema: str) -> threading.Thread:
    """Once a store call waits for the locker's lock, end the store's sessions (the
    call's connection is lost mid-write), then let the lock go."""

    def cut() -> None:
        watcher = psycopg.connect(BASE_URL, autocommit=True)
        try:
            wait_until_blocked_by(watcher, locker.info.backend_pid)
        finally:
            watcher.close()
        terminate(schema)
        locker.rollback()

    thread = threading.Thread(target=cut)
    thread.start()
    return thread


def lock_jobs(locker: psycopg.Connection, schema: str) -> None:
    locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')


def worker_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("spool")]


def assert_no_client_advice(lines: list[str]) -> None:
    for line in lines:
        assert not any(words in line for words in CLIENT_WORDS), line


@pytest.mark.postgres
def test_a_claim_whose_connection_was_lost_says_its_jobs_run_when_leases_lapse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    registry = Registry()
    registry.handler("echo")(lambda payload: payload)
    with store_and_locker() as (store, locker, schema):
        store.add([new_job(store.clock)])
        worker = Worker(store, registry, WorkerConfig(concurrency=1, lease_seconds=LEASE))
        worker._beat(force=True)  # the beat's write before the lock: the claim is cut
        lock_jobs(locker, schema)
        cutter = cut_when_blocked(locker, schema)
        caplog.clear()
        try:
            with pytest.raises(StoreUnavailable):
                worker.drain()
        finally:
            cutter.join(30)
            worker.close()
    lines = worker_lines(caplog)
    said = [line for line in lines if line.startswith("store unavailable")]
    assert said, lines
    assert "claim" in said[0] and "may have been applied" in said[0], said[0]
    assert f"run again once their leases lapse (in at most {LEASE:g}s)" in said[0], said[0]
    assert_no_client_advice(lines)


@pytest.mark.postgres
def test_an_outcome_write_whose_connection_was_lost_says_it_is_written_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with store_and_locker() as (store, locker, schema):

        def locking(payload: object) -> object:
            lock_jobs(locker, schema)  # the worker's write of this outcome waits, is cut
            return payload

        registry = Registry()
        registry.handler("echo")(locking)
        job_id = store.add([new_job(store.clock)])[0].job.id
        worker = Worker(store, registry, WorkerConfig(concurrency=1, lease_seconds=LEASE))
        cutter = cut_when_blocked(locker, schema)
        caplog.clear()
        try:
            worker.drain()
        finally:
            cutter.join(30)
            worker.close()
        job = store.get(job_id)
        assert job is not None and job.state.value == "succeeded", job
    lines = worker_lines(caplog)
    said = [line for line in lines if line.startswith("store unavailable")]
    assert said, lines
    assert "outcome" in said[0] and "may have been applied" in said[0], said[0]
    assert "held and written again once the store answers" in said[0], said[0]
    assert_no_client_advice(lines)


def test_a_webhook_claim_whose_reply_was_lost_says_when_its_deliveries_are_sent(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhook delivery runs in the worker's process and logs the same way."""
    caplog.set_level(logging.WARNING)
    store = MemoryStore(FakeClock())

    def lost(limit: int, lease_seconds: float) -> list[object]:
        raise UncertainWrite("the job store connection failed before it answered")

    monkeypatch.setattr(store, "claim_webhooks", lost)
    hooks = {"acme": {"secrets": [signing.new_secret()]}}
    settings = Settings(extra={"SPOOL_WEBHOOKS": json.dumps(hooks), "SPOOL_WEBHOOK_TIMEOUT": "10"})
    deliverer = Deliverer(store, settings)
    try:
        assert deliverer.drain() == 0
    finally:
        deliverer.close()
    lines = worker_lines(caplog)
    said = [line for line in lines if line.startswith("store unavailable")]
    assert said, lines
    assert "a claim of webhook deliveries" in said[0], said[0]
    assert "sent once their leases lapse (in at most 25s)" in said[0], said[0]
    assert_no_client_advice(lines)


def test_a_tick_whose_enqueue_reply_was_lost_says_it_is_fired_again_under_its_key(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic scheduler (in `spool worker` and `spool serve`) enqueues each tick
    under a key of its own and tries it again after a failure: the line says so, not
    the client's "safe to retry with the same idempotency_key"."""
    from chalicelib.periodic import Schedule, Scheduler

    caplog.set_level(logging.WARNING)
    store = MemoryStore(FakeClock())
    registry = Registry()
    registry.handler("report")(lambda payload: payload)

    def lost(jobs: object, cap: object = None) -> list[object]:
        raise UncertainWrite("the job store connection failed before it answered")

    monkeypatch.setattr(store, "add", lost)
    schedule = Schedule(name="minutely", type="report", every=60)
    [fired] = Scheduler(store, registry, [schedule]).fire_due()
    assert fired.outcome == "error" and fired.retry, fired
    lines = worker_lines(caplog)
    said = [line for line in lines if "periodic minutely: enqueue failed" in line]
    assert said, lines
    assert "the tick's job is enqueued again under its own key" in said[0], said[0]
    assert_no_client_advice(lines)
