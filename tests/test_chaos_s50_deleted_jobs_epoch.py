"""A job deleted by hand (SQL outside Spool) empties the result cache's answer for it.

Found in stop 49's chaos round and left then: on Postgres and SQLite, `DELETE FROM
jobs` by an operator (the usual clean-up of a self-hosted store) moved no cache
epoch, so `GET /status` went on answering 200 "succeeded" from the cache for the
job's whole TTL (300 s by default) after its row was gone. Spool's own purge and
discard bumped the epoch in their statements; a DELETE by hand did not. Now the
store's delete trigger bumps it for every writer (Postgres migration 0013, SQLite's
jobs_deleted_epoch), and purge and discard rely on it.

Also found: on Postgres a DELETE naming the table by its schema under another
search path failed ("relation job_counts does not exist"): the trigger's function
now keeps the search path the store migrated with, and so do the insert and update
triggers' functions, which failed the same way for an INSERT or UPDATE by hand.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from chalicelib.api.cache import ResultCache
from chalicelib.clock import FakeClock
from chalicelib.storage.base import JobStore
from chalicelib.storage.postgres import PostgresStore, connect, parse_url
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job
from tests.pg_support import admin_connect, fresh_schema

pytestmark = pytest.mark.timeout(120)

TENANT = "default"
OTHER = "other-tenant"


def _cached(store: JobStore, tenant: str = TENANT) -> tuple[ResultCache, str]:
    """A cache holding one job of the store's (the status route's own steps)."""
    [added] = store.add([new_job(FakeClock(store.clock.now()), tenant=tenant)])
    cache = ResultCache(10, 600, epoch=store.cache_epoch, recheck=0)
    body = json.dumps({"id": added.job.id, "state": "succeeded"})
    assert cache.put(tenant, added.job.id, body, cache.ticket(tenant))
    assert cache.lookup(tenant, added.job.id) == body
    return cache, added.job.id


# -- Postgres ----------------------------------------------------------------------


def test_a_postgres_delete_by_hand_empties_the_cache_for_its_tenant_only() -> None:
    with fresh_schema() as url:
        store = PostgresStore(parse_url(url))
        try:
            cache, job_id = _cached(store)
            other_cache, other_id = _cached(store, OTHER)
            other_epoch = store.cache_epoch(OTHER)
            with connect(parse_url(url)) as conn:  # an operator's psql session
                conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            assert store.get(job_id) is None
            assert cache.lookup(TENANT, job_id) is None  # was the cached "succeeded"
            assert store.cache_epoch(OTHER) == other_epoch
            assert other_cache.lookup(OTHER, other_id) is not None
        finally:
            store.close()


def test_a_postgres_delete_naming_the_schema_under_another_search_path() -> None:
    """psql's default search path and `DELETE FROM <schema>.jobs`: the trigger's
    tables are found where the store keeps them, not looked for in public."""
    with fresh_schema() as url:
        schema = parse_url(url).schema
        store = PostgresStore(parse_url(url))
        try:
            cache, job_id = _cached(store)
            admin = admin_connect()
            try:
                admin.execute(f'DELETE FROM "{schema}".jobs WHERE id = %s', (job_id,))
            finally:
                admin.close()
            assert store.get(job_id) is None
            assert cache.lookup(TENANT, job_id) is None
            counts = store.state_counts(TENANT)
            assert sum(counts.values()) == 0  # the dashboard's counts followed the delete
        finally:
            store.close()


def test_postgres_updates_and_inserts_by_hand_under_another_search_path() -> None:
    """The same for an UPDATE (a job moved to another queue, or finished by hand) and
    an INSERT naming the schema: each failed on a trigger's unqualified table."""
    with fresh_schema() as url:
        schema = parse_url(url).schema
        store = PostgresStore(parse_url(url))
        try:
            [added] = store.add([new_job(FakeClock(store.clock.now()))])
            admin = admin_connect()
            try:
                jobs = f'"{schema}".jobs'
                admin.execute(f"UPDATE {jobs} SET priority = 3 WHERE id = %s", (added.job.id,))
                admin.execute(
                    f"UPDATE {jobs} SET state = 'cancelled', finished_at = now() WHERE id = %s",
                    (added.job.id,),
                )
                admin.execute(
                    f"INSERT INTO {jobs} SELECT * FROM {jobs} WHERE id = %s ON CONFLICT DO NOTHING",
                    (added.job.id,),
                )
            finally:
                admin.close()
            job = store.get(added.job.id)
            assert job is not None and job.state.value == "cancelled" and job.priority == 3
            counts = {state.value: n for (_, state), n in store.state_counts(TENANT).items() if n}
            assert counts == {"cancelled": 1}  # the dashboard's counts followed the move
        finally:
            store.close()


def test_postgres_purge_and_discard_still_move_the_epoch_once_per_statement() -> None:
    """Purge and discard no longer bump in their own statements: the trigger does it,
    once per deleting statement however many rows it took."""
    with fresh_schema() as url:
        store = PostgresStore(parse_url(url))
        try:
            _assert_purge_and_discard_move_the_epoch(store)
        finally:
            store.close()


def _assert_purge_and_discard_move_the_epoch(store: JobStore) -> None:
    clock = FakeClock(store.clock.now())
    added = store.add([new_job(clock) for _ in range(3)])
    ids = [a.job.id for a in added]
    for job_id in ids:
        store.cancel(job_id, TENANT)
    before = store.cache_epoch(TENANT)
    assert store.purge(store.clock.now() + timedelta(seconds=1)) == 3
    after_purge = store.cache_epoch(TENANT)
    assert after_purge != before
    assert store.purge(store.clock.now() + timedelta(seconds=1)) == 0
    assert store.cache_epoch(TENANT) == after_purge  # nothing deleted: nothing moved
    assert store.discard(["no-such-job"], TENANT) == []
    assert store.cache_epoch(TENANT) == after_purge


# -- SQLite ------------------------------------------------------------------------


def test_a_sqlite_delete_by_hand_empties_the_cache_for_its_tenant_only(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    store = SQLiteStore(str(path))
    try:
        cache, job_id = _cached(store)
        other_cache, other_id = _cached(store, OTHER)
        other_epoch = store.cache_epoch(OTHER)
        shell = sqlite3.connect(path)  # the sqlite3 shell, another process's connection
        try:
            with shell:
                shell.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        finally:
            shell.close()
        assert store.get(job_id) is None
        assert cache.lookup(TENANT, job_id) is None
        assert store.cache_epoch(OTHER) == other_epoch
        assert other_cache.lookup(OTHER, other_id) is not None
    finally:
        store.close()


def test_a_sqlite_file_made_before_the_trigger_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    SQLiteStore(str(path)).close()
    old = sqlite3.connect(path)
    try:
        old.execute("DROP TRIGGER jobs_deleted_epoch")  # a file an earlier Spool made
        old.commit()
    finally:
        old.close()
    store = SQLiteStore(str(path))
    try:
        cache, job_id = _cached(store)
        shell = sqlite3.connect(path)
        try:
            with shell:
                shell.execute("DELETE FROM jobs")
        finally:
            shell.close()
        assert cache.lookup(TENANT, job_id) is None
    finally:
        store.close()


def test_sqlite_purge_and_discard_still_move_the_epoch(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "spool.db"))
    try:
        _assert_purge_and_discard_move_the_epoch(store)
    finally:
        store.close()
