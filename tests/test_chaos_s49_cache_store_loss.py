"""The result cache lets go of a Postgres or SQLite store's answers once the store was
emptied under the process (s48 fixed Redis: tests/test_chaos_s48b_cache_store_loss.py).

Found by a chaos run (helper B, s49): `spool serve` on Postgres; an echo job
succeeded and its status was read twice (X-Cache: hit); another process truncated
the schema's tables. `GET /status/<id>` went on answering 200 "succeeded" from the
cache (for up to SPOOL_CACHE_TTL, 300 s by default) while `?attempts=true` answered
404: an emptied store reads a never-touched tenant's epoch as 0 again, what the
cache held. The same after the schema, or the whole database, was dropped and
migrated again by another process. On SQLite, with the file removed and made
again by another `spool` process, the cache went on answering while /health and
/jobs said the file was deleted or replaced.

Postgres's epoch now also reads the identity of the jobs and epoch tables'
storage (TRUNCATE, a schema or database made again, all give them new files) and
differs once that is not what the process saw first; SQLite's epoch is refused
(a 503, which makes the cache vouch for nothing) once the file is not the one the
process opened. DynamoDB (a table deleted and made again by another process with
create=1) had the same fault; its epoch item now carries a birth mark. No timing
is involved in the store-level tests; the end-to-end ones poll (bounded) for the
cache's one-second re-check.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from chalicelib.api.cache import ResultCache
from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.storage import migrations
from chalicelib.storage.base import JobStore
from chalicelib.storage.postgres import PostgresStore, connect, parse_url
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job
from tests.pg_support import BASE_URL, admin_connect, drop_database_later, fresh_schema, url_for
from tests.test_cache_processes import bury, cached_dead, serving, spool, status

pytestmark = pytest.mark.timeout(120)

TENANT = "default"


def _cached(store: JobStore) -> tuple[ResultCache, str]:
    """A cache holding one finished job of the store's (the status route's own steps)."""
    [added] = store.add([new_job(FakeClock(store.clock.now()))])
    cache = ResultCache(10, 600, epoch=store.cache_epoch, recheck=0)
    body = json.dumps({"id": added.job.id, "state": "succeeded"})
    assert cache.put(TENANT, added.job.id, body, cache.ticket(TENANT))
    assert cache.lookup(TENANT, added.job.id) == body
    return cache, added.job.id


# -- Postgres ----------------------------------------------------------------------


def _truncate_all(url: str) -> None:
    """What an operator's (or a test harness's) TRUNCATE of the schema does."""
    settings = parse_url(url)
    with connect(settings) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s"
                " AND tablename <> 'schema_migrations'",
                (settings.schema,),
            ).fetchall()
        ]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


def _remigrate_schema(url: str) -> None:
    """Another process drops the schema and migrates it again (`spool db migrate`)."""
    settings = parse_url(url)
    admin = admin_connect()
    try:
        admin.execute(f'DROP SCHEMA "{settings.schema}" CASCADE')
    finally:
        admin.close()
    with connect(settings) as conn:
        migrations.migrate(conn, settings.schema)


@contextmanager
def _own_database() -> Iterator[tuple[str, str]]:
    """A database of its own on the test server (it is dropped and made again): yields
    (its name, the URL of a schema in it); dropped afterwards."""
    name = f"spool_t_{secrets.token_hex(6)}"
    admin = admin_connect()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(BASE_URL)
        base = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
        yield name, url_for("spool", base)
    finally:
        admin.close()
        drop_database_later(name)


def _migrate(url: str) -> None:
    settings = parse_url(url)
    with connect(settings) as conn:
        migrations.migrate(conn, settings.schema)


def _remake_database(name: str, url: str) -> None:
    """Another process drops the database (ending this process's sessions), makes it
    again and migrates it."""
    admin = admin_connect()
    try:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    _migrate(url)


@pytest.mark.parametrize("how", ["truncated", "schema-remigrated"])
def test_an_emptied_postgres_schema_empties_the_cache_at_the_next_check(how: str) -> None:
    with fresh_schema() as url:
        store = PostgresStore(parse_url(url))
        try:
            cache, job_id = _cached(store)
            (_truncate_all if how == "truncated" else _remigrate_schema)(url)
            assert store.get(job_id) is None
            assert cache.lookup(TENANT, job_id) is None  # was the cached "succeeded"
            assert store.cache_epoch(TENANT) == store.cache_epoch(TENANT)  # stable after
        finally:
            store.close()


def test_a_postgres_database_made_again_empties_the_cache_at_the_next_check() -> None:
    with _own_database() as (name, url):
        _migrate(url)
        store = PostgresStore(parse_url(url))
        try:
            cache, job_id = _cached(store)
            _remake_database(name, url)
            assert store.get(job_id) is None
            assert cache.lookup(TENANT, job_id) is None
        finally:
            store.close()


def test_a_postgres_epoch_never_emptied_reads_as_before_and_moves_after_an_emptying() -> None:
    """The contract's 0 for a tenant never touched still holds; after an emptying the
    epoch still moves with a redrive (a bump), and each emptying reads anew."""
    with fresh_schema() as url:
        store = PostgresStore(parse_url(url))
        try:
            assert store.cache_epoch(TENANT) == 0
            assert store.cache_epoch(TENANT) == 0
            _truncate_all(url)
            first = store.cache_epoch(TENANT)
            assert first != 0
            with connect(parse_url(url)) as conn:  # what a redrive's transaction does
                conn.execute("INSERT INTO tenant_epochs (tenant, n) VALUES (%s, 1)", (TENANT,))
            bumped = store.cache_epoch(TENANT)
            assert bumped not in (0, first)
            _truncate_all(url)
            assert store.cache_epoch(TENANT) not in (0, first, bumped)
        finally:
            store.close()


# -- SQLite ------------------------------------------------------------------------


def test_a_sqlite_file_removed_and_made_again_empties_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    store = SQLiteStore(str(path))
    try:
        cache, job_id = _cached(store)
        for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        SQLiteStore(str(path)).close()  # another process makes the file again
        assert cache.lookup(TENANT, job_id) is None  # was the cached "succeeded"
        with pytest.raises(StoreUnavailable, match="deleted or replaced"):
            store.cache_epoch(TENANT)
    finally:
        store.close()


# -- end to end: `spool serve` and another process -----------------------------------


def _never_a_hit_again(base: str, job_id: str) -> tuple[int, str | None, str | None]:
    """Poll (bounded: 100 x 0.1 s, far past the 1 s re-check, far below the 600 s TTL)
    until the API stops answering from its cache; the last answer."""
    last = status(base, job_id)
    for _ in range(100):
        if last[1] != "hit":
            break
        time.sleep(0.1)
        last = status(base, job_id)
    return last


def test_spool_serve_on_a_truncated_postgres_answers_404_not_its_cache() -> None:
    with fresh_schema() as url:
        job_id = bury(url)
        with serving(url) as base:
            cached_dead(base, job_id)
            _truncate_all(url)
            assert _never_a_hit_again(base, job_id) == (404, None, None)


def test_spool_serve_on_a_remade_postgres_database_answers_404_not_its_cache() -> None:
    with _own_database() as (name, url):
        _migrate(url)
        job_id = bury(url)
        with serving(url) as base:
            cached_dead(base, job_id)
            _remake_database(name, url)
            migrated = spool(url, "db", "status")
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            assert _never_a_hit_again(base, job_id) == (404, None, None)


def test_spool_serve_on_a_sqlite_file_made_again_stops_answering_from_its_cache(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/spool.db"
    job_id = bury(url)
    with serving(url) as base:
        cached_dead(base, job_id)
        for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        made = spool(url, "enqueue", "echo")  # another `spool` process makes the file again
        assert made.returncode == 0, made.stdout + made.stderr
        assert os.path.exists(tmp_path / "spool.db")
        code, cache, _ = _never_a_hit_again(base, job_id)
        # A thread whose connection is still open on the old file reads it (a miss);
        # any other answers 503 until Spool is restarted (tests/test_sqlite_chaos.py).
        assert cache != "hit" and code in (200, 503)


# -- DynamoDB ------------------------------------------------------------------------


def test_a_dynamodb_table_made_again_empties_the_cache_at_the_next_check() -> None:
    """The same on DynamoDB: the table deleted and made again (create=1 by another
    process, as `spool enqueue` does at its start) read a never-touched tenant's
    epoch as 0 again. Against moto in-process, as tests/test_dynamodb.py."""
    from moto import mock_aws

    from chalicelib.storage.dynamodb_aws import DynamoConfig, create_resources
    from chalicelib.storage.dynamodb_schema import epoch_key
    from tests.test_dynamodb import Aws

    with mock_aws():
        aws = Aws(DynamoConfig(table="jobs", queue="jobs", bucket="jobs-bucket"))
        store = aws.store(FakeClock())
        assert store.cache_epoch(TENANT) == 0  # a tenant never touched reads as before
        cache, job_id = _cached(store)
        aws.ddb.delete_table(TableName="jobs")
        create_resources(aws.config, aws.ddb, aws.sqs, aws.s3)  # another process, create=1
        assert store.get(job_id) is None
        assert cache.lookup(TENANT, job_id) is None  # was the cached "succeeded"
        emptied = store.cache_epoch(TENANT)
        assert emptied != 0 and store.cache_epoch(TENANT) == emptied
        other = aws.store(FakeClock())  # a process started after: reads the new table
        before = other.cache_epoch(TENANT)
        aws.ddb.update_item(  # what a redrive's transaction does to the epoch
            TableName="jobs",
            Key=epoch_key(TENANT),
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        assert store.cache_epoch(TENANT) not in (0, emptied)
        assert other.cache_epoch(TENANT) > before
