"""A store an earlier release filled, with its own code, opened by today's Spool.

tests/old_release_fill.py runs under a pinned earlier release (its chalicelib taken
from git with `git archive`) and leaves one job in every state: queued (with a webhook
URL), scheduled, a periodic tick, cancelled, retrying, succeeded (a result and a
pending webhook), dead (its webhook pending), and running under a lease whose worker
never came back. Today's code must keep every state and result, run each waiting job
once, retry the lapsed lease (an old claim counts as started), redrive the dead one,
keep the idempotency keys, deliver the pending webhooks, and count what the rows hold.

Without git or the pinned commits (an sdist, a shallow clone) the tests skip saying so.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobQuery, JobState, NewJob
from chalicelib.storage.base import JobStore

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2030, 1, 1, tzinfo=UTC)  # old_release_fill.START
LEASE = 30.0
# Pinned earlier releases: Postgres schema 0007 (two stops back) and 0010 (the stop
# before claims could be unstarted).
RELEASES = {
    "0007": "e23e72e056b94aeb056d860a30e6a835de9c4d20",
    "0010": "9254919145ca778e0243df5d232c5d228f4990d2",
}


@pytest.fixture(scope="module", params=sorted(RELEASES))
def old_tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned release's chalicelib, unpacked from git into a directory of its own."""
    commit = RELEASES[request.param]
    where = tmp_path_factory.mktemp(f"release_{request.param}")
    archive = where / "src.tar"
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "-o", str(archive), commit, "chalicelib"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the earlier release {commit[:7]} is not in this checkout's git: {exc}")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where


def fill(old_tree: Path, *args: str) -> dict[str, Any]:
    """Run old_release_fill.py under the old release; what it printed."""
    env = {**os.environ, "PYTHONPATH": str(old_tree)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "old_release_fill.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    filled: dict[str, Any] = json.loads(done.stdout)
    assert Path(filled["code"]).is_relative_to(old_tree)  # the old code, not today's
    return filled


def rows_by_state(store: JobStore) -> Counter[tuple[str, JobState]]:
    """Every job, tallied by (queue, state) from the rows themselves."""
    tally: Counter[tuple[str, JobState]] = Counter()
    for tenant in ("default", "_system"):
        page = store.list_jobs(JobQuery(tenant=tenant, limit=100))
        tally.update((job.queue, job.state) for job in page.jobs)
    return tally


def agree(store: JobStore) -> None:
    rows = rows_by_state(store)
    assert {k: n for k, n in store.counts().items() if n} == dict(rows)
    dashboard: Counter[tuple[str, JobState]] = Counter()
    for (queue, state), n in store.state_counts().items():
        dashboard[(queue, state)] += n
    assert {k: n for k, n in dashboard.items() if n} == dict(rows)
    scraped = store.queue_totals(["default"], 10)  # the metrics scrape's reading
    assert {k: n for k, n in scraped.counts.items() if n} == dict(rows)
    enqueued = sum(n for key, n in store.counters().items() if key.event == "enqueued")
    assert enqueued == sum(rows.values())  # every job was enqueued once, old or new


def run_due(store: JobStore) -> list[str]:
    """Claim every due job as today's worker does (unstarted, then started), succeed it."""
    ran: list[str] = []
    while jobs := store.claim(10, LEASE, started=False):
        assert store.start([(j.id, j.lease_token or "") for j in jobs]) == [True] * len(jobs)
        store.finish([Completion(j.id, j.lease_token or "", JobState.SUCCEEDED) for j in jobs])
        ran.extend(j.id for j in jobs)
    return ran


def check_upgraded(store: JobStore, clock: FakeClock, filled: dict[str, Any]) -> None:
    ids: dict[str, str] = filled["ids"]
    old_counts = {f"{q}/{s.value}": n for (q, s), n in store.counts().items() if n}
    assert old_counts == filled["counts"]
    expected = {
        "queued": JobState.QUEUED,
        "scheduled": JobState.QUEUED,
        "periodic": JobState.QUEUED,
        "cancelled": JobState.CANCELLED,
        "retrying": JobState.RETRYING,
        "succeeded": JobState.SUCCEEDED,
        "dead": JobState.DEAD,
        "running": JobState.RUNNING,
    }
    for name, state in expected.items():
        job = store.get(ids[name], "_system" if name == "periodic" else None)
        assert job is not None and job.state is state, name
    assert store.get(ids["succeeded"]).result == {"answer": 42}  # type: ignore[union-attr]
    assert store.get(ids["dead"]).last_error == "boom"  # type: ignore[union-attr]
    agree(store)

    # The keys still hold: the same key names the old job, nothing new is added.
    again = NewJob(
        id="j_again", type="echo", payload={}, run_at=clock.now(), idempotency_key="key-queued"
    )
    [result] = store.add([again])
    assert not result.created and result.job.id == ids["queued"]
    assert store.get_by_key("_system", "key-periodic").id == ids["periodic"]  # type: ignore[union-attr]

    # Pending webhooks of the old release are delivered by today's code.
    hooks = store.claim_webhooks(10, LEASE)
    assert {d.job_id for d in hooks} == {ids["succeeded"], ids["dead"]}

    assert run_due(store) == [ids["queued"]]  # only the due one, once
    clock.advance(LEASE + 1)  # past the retry time and the old lease
    assert sorted(run_due(store)) == sorted([ids["retrying"], ids["running"]])
    assert store.get(ids["running"]).attempts == 2  # type: ignore[union-attr]
    clock.advance(3600)
    assert sorted(run_due(store)) == sorted([ids["scheduled"], ids["periodic"]])
    [redriven] = store.redrive([ids["dead"]])
    assert redriven.state is JobState.QUEUED
    assert run_due(store) == [ids["dead"]]
    assert run_due(store) == []
    assert store.get(ids["cancelled"]).state is JobState.CANCELLED  # type: ignore[union-attr]
    agree(store)


@pytest.mark.parametrize("made_by", ["old", "today"])
def test_a_sqlite_file_of_an_earlier_release(old_tree: Path, tmp_path: Path, made_by: str) -> None:
    """made_by today: the file is today's, an old process still writing to it."""
    from chalicelib.storage.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    if made_by == "today":
        SQLiteStore(str(path), FakeClock(START)).close()
    filled = fill(old_tree, f"sqlite:///{path}")
    clock = FakeClock(START)
    store = SQLiteStore(str(path), clock)
    try:
        check_upgraded(store, clock, filled)
    finally:
        store.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    from tests.pg_support import fresh_schema

    with fresh_schema(migrate=False) as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("made_by", ["old", "today"])
def test_a_postgres_schema_of_an_earlier_release(
    old_tree: Path,
    pg_url: str,
    made_by: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """made_by today: migrated first (the deploy order), an old worker still running."""
    from chalicelib.errors import StoreNotMigrated
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from local.cli import main

    settings = parse_url(pg_url)
    if made_by == "today":
        with connect(settings) as conn:
            migrations.migrate(conn, settings.schema)
    filled = fill(old_tree, pg_url)
    clock = FakeClock(START)
    if made_by == "old":
        with pytest.raises(StoreNotMigrated):
            PostgresStore(settings, clock)
        # As docs/self-hosting.md says: a new worker refuses, saying what to run.
        monkeypatch.setenv("SPOOL_STORE_URL", pg_url)
        assert main(["worker", "--burst", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "database is not migrated: run `spool db migrate`" in err
        assert "Traceback" not in err
        assert main(["db", "status"]) == 3
        status = capsys.readouterr().out.splitlines()
        assert ["0012_unstarted_cleared", "pending"] in [line.split() for line in status]
        assert main(["db", "migrate"]) == 0
        assert main(["db", "status"]) == 0
    with connect(settings) as conn:
        migrations.migrate(conn, settings.schema)
    store = PostgresStore(settings, clock)
    try:
        check_upgraded(store, clock, filled)
    finally:
        store.close()


def old_worker_runs_what_a_new_one_left(old_tree: Path, url: str, store: JobStore) -> None:
    """Rolling upgrade: a new worker claims a job unstarted and dies; an old worker's
    claim reaps that lease (spending the attempt, as it always did), takes the job, starts
    its handler and dies too. The handler ran, so today's reap must spend that attempt:
    a job that kills every worker still ends dead after max_attempts."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    [added] = store.add([NewJob(id="j_rolling", type="echo", payload={}, run_at=clock.now())])
    store.claim(1, LEASE, started=False)  # the new worker dies before starting it
    clock.advance(LEASE + 1)
    old = fill(old_tree, "claim", url, clock.now().isoformat())
    assert old["claimed"] == [added.job.id]
    clock.advance(LEASE + 1)
    store.claim(1, LEASE, started=False)  # today's reap of the old worker's lease
    job = store.get(added.job.id)
    assert job is not None
    assert job.attempts == 3  # the new claim's given back, the old run's and this one


def test_sqlite_an_old_worker_beside_a_new_one(old_tree: Path, tmp_path: Path) -> None:
    from chalicelib.storage.sqlite import SQLiteStore

    path = tmp_path / "rolling.db"
    store = SQLiteStore(str(path), FakeClock(START))
    try:
        old_worker_runs_what_a_new_one_left(old_tree, f"sqlite:///{path}", store)
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_an_old_worker_beside_a_new_one(old_tree: Path, pg_url: str) -> None:
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url

    settings = parse_url(pg_url)
    with connect(settings) as conn:
        migrations.migrate(conn, settings.schema)
    store = PostgresStore(settings, FakeClock(START))
    try:
        old_worker_runs_what_a_new_one_left(old_tree, pg_url, store)
    finally:
        store.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    from tests.redis_support import fresh_prefix

    with fresh_prefix() as url:
        yield url


@pytest.mark.parametrize("made_by", ["old", "today"])
def test_a_redis_key_space_of_an_earlier_release(
    old_tree: Path, redis_url: str, made_by: str
) -> None:
    from chalicelib.storage.redis_store import from_url

    if made_by == "today":
        from_url(redis_url, FakeClock(START)).close()
    filled = fill(old_tree, redis_url)
    clock = FakeClock(START)
    store = from_url(redis_url, clock)
    try:
        check_upgraded(store, clock, filled)
    finally:
        store.close()


def test_redis_an_old_worker_beside_a_new_one(old_tree: Path, redis_url: str) -> None:
    from chalicelib.storage.redis_store import from_url

    store = from_url(redis_url, FakeClock(START))
    try:
        old_worker_runs_what_a_new_one_left(old_tree, redis_url, store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto_server on a port it chose: the old release's process and this one share it."""
    from tests.moto_proc import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as moto:
        yield moto.endpoint


def dynamo_url(endpoint: str) -> str:
    name = f"old{secrets.token_hex(4)}"
    return f"dynamodb://{name}?queue={name}&bucket={name}&endpoint={endpoint}"


def dynamo_store(url: str, clock: FakeClock, create: bool = False) -> JobStore:
    from chalicelib.storage.dynamodb import (
        DynamoConfig,
        DynamoStore,
        create_resources,
        make_clients,
    )

    config = DynamoConfig.from_url(url)
    ddb, sqs, s3 = make_clients(config)
    if create:
        create_resources(config, ddb, sqs, s3)
    return DynamoStore(config, clock, ddb=ddb, sqs=sqs, s3=s3)


@pytest.mark.aws
@pytest.mark.parametrize("made_by", ["old", "today"])
def test_a_dynamodb_table_of_an_earlier_release(
    old_tree: Path, moto_endpoint: str, made_by: str
) -> None:
    url = dynamo_url(moto_endpoint)
    if made_by == "today":
        dynamo_store(url, FakeClock(START), create=True).close()
    filled = fill(old_tree, url)
    clock = FakeClock(START)
    store = dynamo_store(url, clock)
    try:
        check_upgraded(store, clock, filled)
    finally:
        store.close()


@pytest.mark.aws
def test_dynamodb_an_old_worker_beside_a_new_one(old_tree: Path, moto_endpoint: str) -> None:
    url = dynamo_url(moto_endpoint)
    store = dynamo_store(url, FakeClock(START), create=True)
    try:
        old_worker_runs_what_a_new_one_left(old_tree, url, store)
    finally:
        store.close()
