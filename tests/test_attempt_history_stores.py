"""Attempt history on data written before it existed, and within each store's limits.

The contract suite (tests/contract/) holds every store to the rules; these are
the backend-specific paths: an old SQLite file gains its columns on open, a
Postgres database at version 2 migrates with jobs in flight, a DynamoDB job
claimed before the upgrade still finishes, and a DynamoDB item never outgrows
400 KB however long its history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Attempt, Completion, JobState
from chalicelib.storage import migrations
from chalicelib.storage.base import LEASE_EXPIRED_ERROR, to_micros
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job, token
from tests.threads import run_together

LEASE = 30.0

# The jobs table as Spool created it before attempt history (no attempt_log, lease_worker).
OLD_SQLITE_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, type TEXT NOT NULL, queue TEXT NOT NULL,
    priority INTEGER NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, run_at INTEGER NOT NULL,
    lease_token TEXT, lease_expires_at INTEGER, result TEXT, last_error TEXT,
    idempotency_key TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    started_at INTEGER, finished_at INTEGER
);
CREATE TABLE counters (queue TEXT NOT NULL, type TEXT NOT NULL, event TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (queue, type, event));
"""


def attempt(number: int, outcome: str, clock: FakeClock, **fields: Any) -> Attempt:
    return Attempt(
        number=number,
        started_at=clock.now(),
        finished_at=clock.now(),
        worker="host:1",
        outcome=outcome,
        **fields,
    )


def running_row(clock: FakeClock, job_id: str, expires_in: float) -> tuple[Any, ...]:
    now = to_micros(clock.now())
    return (
        job_id, "default", "echo", "default", 0, "{}", "running", 1, 3, now, "old-token",
        now + int(expires_in * 1_000_000), None, None, None, now, now, now, None,
    )  # fmt: skip


# -- SQLite ------------------------------------------------------------------------------


def test_an_sqlite_file_from_before_attempt_history_gains_it_on_open(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(OLD_SQLITE_SCHEMA)
    raw.execute(f"INSERT INTO jobs VALUES ({','.join('?' * 19)})", running_row(clock, "j_old", 5))
    raw.commit()
    raw.close()
    # Two processes' stores opening the old file at once: each column is added once.
    opened: list[SQLiteStore] = []

    def open_it() -> None:
        opened.append(SQLiteStore(str(path), clock))

    errors = run_together(open_it, 4, timeout=30)
    assert not errors and len(opened) == 4
    store = opened[0]
    try:
        assert store.attempts("j_old") == []
        clock.advance(10)  # the old lease lapsed: reaped with an unknown worker
        [again] = store.claim(1, LEASE)
        [lost] = store.attempts("j_old") or []
        assert (lost.number, lost.outcome, lost.worker, lost.error) == (
            1,
            "lease_expired",
            "unknown",
            LEASE_EXPIRED_ERROR,
        )
        done = attempt(2, "succeeded", clock)
        completion = Completion(again.id, token(again), JobState.SUCCEEDED, attempt=done)
        assert store.finish([completion]) == [True]
        assert store.attempts("j_old") == [lost, done]
    finally:
        for s in opened:
            s.close()


# -- Postgres ----------------------------------------------------------------------------


def test_postgres_at_version_2_migrates_with_jobs_in_flight(clock: FakeClock) -> None:
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 2)
            now = clock.now()
            conn.execute(
                "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, attempts,"
                " max_attempts, run_at, lease_token, lease_expires_at, created_at, updated_at,"
                " started_at) VALUES ('j_old', 'default', 'echo', 'default', 0, '{}', 'running',"
                " 1, 1, %s, 'old-token', %s, %s, %s, %s)",
                (now, now + timedelta(seconds=5), now, now, now),
            )
            assert migrations.status(conn).current == 2
            ran = migrations.migrate(conn, settings.schema)
            later = [m.version for m in migrations.available() if m.version > 2]
            assert [m.version for m in ran] == later and later[0] == 3
        store = PostgresStore(settings, clock)
        try:
            assert store.attempts("j_old") == []
            clock.advance(10)
            assert store.claim(1, LEASE) == []  # its last attempt: buried
            [lost] = store.attempts("j_old") or []
            assert (lost.outcome, lost.worker, lost.next_delay) == (
                "lease_expired",
                "unknown",
                None,
            )
            assert lost.finished_at == now + timedelta(seconds=5)
        finally:
            store.close()


# -- DynamoDB ----------------------------------------------------------------------------


@pytest.fixture
def moto() -> Iterator[Any]:
    from moto import mock_aws

    from chalicelib.storage.dynamodb import DynamoConfig, create_resources, make_clients

    with mock_aws():
        config = DynamoConfig(table="jobs", queue=None, bucket=None)
        ddb, sqs, s3 = make_clients(config)
        create_resources(config, ddb, sqs, s3)
        yield config, ddb


def dynamo(moto: Any, clock: FakeClock) -> Any:
    from chalicelib.storage.dynamodb import DynamoStore

    config, ddb = moto
    return DynamoStore(config, clock, ddb=ddb)


def item_of(moto: Any, job_id: str) -> dict[str, Any]:
    from chalicelib.storage.dynamodb_schema import job_key

    _, ddb = moto
    found: dict[str, Any] = ddb.get_item(
        TableName="jobs", Key=job_key(job_id), ConsistentRead=True
    )["Item"]
    return found


def test_a_dynamodb_job_claimed_before_the_upgrade_still_finishes(
    moto: Any, clock: FakeClock
) -> None:
    from chalicelib.storage.dynamodb_schema import job_key

    store = dynamo(moto, clock)
    job = store.add([new_job(clock)])[0].job
    [claimed] = store.claim(1, LEASE)
    _, ddb = moto
    ddb.update_item(  # what a claim made by the previous release left behind
        TableName="jobs",
        Key=job_key(job.id),
        UpdateExpression="REMOVE att_seq, attempt_log, lease_worker",
    )
    upgraded = dynamo(moto, clock)  # a new process: it never saw that claim
    done = Completion(
        job.id,
        token(claimed),
        JobState.RETRYING,
        error="x",
        retry_at=clock.now(),
        attempt=attempt(1, "retrying", clock, error="x"),
    )
    assert upgraded.finish([done]) == [True]
    assert upgraded.attempts(job.id) == []  # nothing to put it in: recorded from now on
    [again] = upgraded.claim(1, LEASE)
    ok = attempt(2, "succeeded", clock)
    assert upgraded.finish([Completion(job.id, token(again), JobState.SUCCEEDED, attempt=ok)]) == [
        True
    ]
    assert upgraded.attempts(job.id) == [ok]


def test_a_dynamodb_item_stays_under_400_kb_however_long_its_history(
    moto: Any, clock: FakeClock
) -> None:
    store = dynamo(moto, clock)
    job = store.add([new_job(clock, payload={"blob": "x" * 250_000}, max_attempts=40)])[0].job
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 4000 + "OSError: end\n"
    for number in range(1, 31):
        [claimed] = store.claim(1, LEASE)
        failed = Completion(
            job.id,
            token(claimed),
            JobState.RETRYING,
            error="e" * 30_000,
            retry_at=clock.now(),
            attempt=attempt(number, "retrying", clock, error="e" * 30_000, traceback=traceback),
        )
        assert store.finish([failed]) == [True], number
    size = len(json.dumps(item_of(moto, job.id)))
    assert size < 400 * 1024
    kept = store.attempts(job.id) or []
    assert [a.number for a in kept] == list(range(6, 31))
    assert all(a.traceback and a.traceback.endswith("OSError: end\n") for a in kept)


def test_dynamodb_beats_expire_by_ttl(moto: Any, clock: FakeClock) -> None:
    from chalicelib.storage.dynamodb_schema import worker_key

    store = dynamo(moto, clock)
    store.beat("lambda:req-9", ["mail"], clock.now())
    _, ddb = moto
    item = ddb.get_item(TableName="jobs", Key=worker_key("lambda:req-9"))["Item"]
    assert int(item["expires_at"]["N"]) == int(clock.now().timestamp()) + 24 * 3600
    assert store.counts() == {}  # beats are not jobs
