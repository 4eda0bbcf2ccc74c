"""Stores made when the invalidation epoch was one per store keep working, with
epochs per tenant, after an upgrade: a SQLite file opened by this Spool (no manual
step), a Postgres schema of migration 0006 after `spool db migrate`, and a Redis
keyspace holding the old store-wide key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore
from tests.factories import new_job, token


def _bury(store: JobStore, clock: FakeClock, tenant: str) -> str:
    [added] = store.add([new_job(clock, tenant=tenant, max_attempts=1)])
    [claimed] = store.claim(1, 30, ids=[added.job.id])
    store.finish([Completion(claimed.id, token(claimed), JobState.DEAD, error="x")])
    return claimed.id


def _epochs_work(store: JobStore, clock: FakeClock) -> None:
    """A redrive bumps the tenant it touched and no other, on the upgraded store."""
    mine, theirs = _bury(store, clock, "a"), _bury(store, clock, "b")
    assert (store.cache_epoch("a"), store.cache_epoch("b")) == (0, 0)
    assert [j.id for j in store.redrive([mine], "a")] == [mine]
    assert (store.cache_epoch("a"), store.cache_epoch("b")) == (1, 0)
    assert store.discard([theirs], "b") == [theirs]
    assert (store.cache_epoch("a"), store.cache_epoch("b")) == (1, 1)


def test_an_old_sqlite_file_gets_epochs_per_tenant_when_opened(tmp_path: Path) -> None:
    from chalicelib.storage.sqlite import SQLiteStore

    clock = FakeClock()
    path = str(tmp_path / "old.db")
    SQLiteStore(path, clock).close()
    # What a file from before looks like: the one-row epoch, no per-tenant table.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE tenant_epochs")
    db.execute("CREATE TABLE cache_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER)")
    db.execute("INSERT INTO cache_epoch (id, n) VALUES (1, 41)")
    db.commit()
    db.close()
    store = SQLiteStore(path, clock)
    try:
        _epochs_work(store, clock)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_schema_of_0006_gets_epochs_per_tenant_from_migrate() -> None:
    from chalicelib.errors import StoreNotMigrated
    from chalicelib.storage import migrations
    from chalicelib.storage.postgres import PostgresStore, connect, parse_url
    from tests.pg_support import fresh_schema, schema_at

    clock = FakeClock()
    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 6)
        with pytest.raises(StoreNotMigrated):  # as for every migration: migrate first
            PostgresStore(settings, clock)
        with connect(settings) as conn:
            migrations.migrate(conn, settings.schema)
        store = PostgresStore(settings, clock)
        try:
            _epochs_work(store, clock)
        finally:
            store.close()


def test_a_redis_keyspace_with_the_old_epoch_key_reads_epochs_per_tenant() -> None:
    from chalicelib.storage.redis_store import from_url
    from tests.redis_support import fresh_prefix

    clock = FakeClock()
    with fresh_prefix() as url:
        store = from_url(url, clock)
        try:
            store.client.set(store._p + "epoch", 41)  # left by the previous release
            _epochs_work(store, clock)
        finally:
            store.close()
