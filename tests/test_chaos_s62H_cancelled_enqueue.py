"""An enqueue the Postgres server cancelled applied nothing, and says so.

Each enqueue path is one transaction (one statement on an autocommit connection, or
BEGIN ... COMMIT): a statement the server cancels (the role's or database's
`lock_timeout`, Spool's `statement_timeout`, an admin's pg_cancel_backend) rolls
all of it back. They were answered as a write whose reply was lost: 503 "this change
may have been applied: check its state before retrying", for an enqueue without an
idempotency key, whose client has no id to check. A careful client dropped the job;
nothing had been stored.

Reproduced with `spool serve` and two `spool worker`s on a database with
`ALTER DATABASE ... SET lock_timeout` (the kept per-state counts' rows are what
concurrent enqueues wait on): 1,128 of 1,500 concurrent enqueues answered "may have
been applied", and not one of them was stored. Here the lock is an admin's
`LOCK TABLE jobs` held across the enqueue, with the URL's lock_timeout.

Stop 62, helper H.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from chalicelib.errors import StoreUnavailable, UncertainWrite
from chalicelib.models import NewJob
from chalicelib.storage.postgres import PostgresStore, from_url, parse_url
from tests.pg_support import admin_connect, fresh_schema
from tests.procs import ROOT, guarded_env, serving_url

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

LOCK_TIMEOUT = "options=-c%20lock_timeout%3D200"  # ms: an operator's setting
KEY = "k-s62h-cancelled-enqueue-0123456789"


@contextmanager
def jobs_locked(url: str) -> Iterator[None]:
    """An admin's transaction holding the schema's jobs table against every insert."""
    schema = parse_url(url).schema
    assert schema is not None
    admin = admin_connect()
    try:
        with admin.transaction():
            admin.execute(
                psycopg.sql.SQL("LOCK TABLE {}.jobs IN EXCLUSIVE MODE").format(
                    psycopg.sql.Identifier(schema)
                )
            )
            yield
    finally:
        admin.close()


def _job(key: str | None = None) -> NewJob:
    return NewJob(
        id=f"j_{uuid.uuid4().hex}",
        tenant="default",
        queue="default",
        type="echo",
        payload={},
        max_attempts=3,
        run_at=datetime.now(UTC),
        idempotency_key=key,
    )


def _stored(store: PostgresStore) -> int:
    return sum(store.counts().values())


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([_job], id="one-keyless"),
        pytest.param([_job, _job, _job], id="keyless-batch"),
        pytest.param([lambda: _job(f"key-{uuid.uuid4().hex}")], id="keyed"),
    ],
)
def test_an_enqueue_the_server_cancelled_says_nothing_was_applied(batch: list[Any]) -> None:
    with fresh_schema() as url:
        store = from_url(f"{url}&{LOCK_TIMEOUT}")
        try:
            jobs = [make() for make in batch]
            with jobs_locked(url), pytest.raises(StoreUnavailable) as refused:
                store.add(jobs)
            assert not isinstance(refused.value, UncertainWrite), str(refused.value)
            assert "may have been applied" not in str(refused.value)
            assert "lock timeout" in str(refused.value)
            assert _stored(store) == 0  # indeed nothing
            assert [r.created for r in store.add(jobs)] == [True] * len(jobs)  # a retry: once
            assert _stored(store) == len(jobs)
        finally:
            store.close()


def _post(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{base}/enqueue",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_spool_serve_answers_a_cancelled_enqueue_as_not_applied() -> None:
    with fresh_schema() as url:
        env = guarded_env(
            SPOOL_STORE_URL=f"{url}&{LOCK_TIMEOUT}",
            SPOOL_API_KEYS=f"{KEY}=default",
            SPOOL_DEMO_HANDLERS="true",
            PYTHONPATH=str(ROOT),
        )
        with serving_url("--no-worker", env=env) as base:
            body = {"type": "echo", "payload": {"message": "hi"}}
            with jobs_locked(url):
                status, answer = _post(base, body)
            assert status == 503, answer
            message = answer["error"]["message"]
            assert "may have been applied" not in message, message
            store = from_url(url)
            try:
                assert _stored(store) == 0
                assert _post(base, body)[0] == 201  # the retry is the only job
                assert _stored(store) == 1
            finally:
                store.close()
