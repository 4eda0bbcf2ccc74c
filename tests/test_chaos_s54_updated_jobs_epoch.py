"""A finished job changed by hand (SQL outside Spool) empties the result cache's answer.

Left open in stop 50: on Postgres and SQLite a DELETE by hand moved the tenant's cache
epoch (migration 0013, jobs_deleted_epoch), but an UPDATE did not. An operator's
redrive by hand (`UPDATE jobs SET state = 'queued' ... WHERE state = 'dead'`) or a
result mended in psql or the sqlite3 shell left `GET /status` answering the old
"dead" or "succeeded" from the cache for its whole TTL (300 s by default). Now the
store's update trigger bumps the epoch of each tenant one of whose finished rows
changed (Postgres migration 0014, SQLite's jobs_finished_changed_epoch), while a
worker's claims, start marks, lease renewals and finishes, which never change a
finished row, move none.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from chalicelib.api.cache import ResultCache
from chalicelib.api.schemas import job_view
from chalicelib.clock import FakeClock
from chalicelib.models import Completion, Job, JobState
from chalicelib.storage.base import JobStore
from chalicelib.storage.postgres import PostgresStore, connect, parse_url
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job, stored, token
from tests.pg_support import admin_connect, fresh_schema, schema_at

pytestmark = pytest.mark.timeout(120)

TENANT = "default"
OTHER = "other-tenant"

# An operator's redrive by hand, and a result mended by hand.
REDRIVE_BY_HAND = (
    "UPDATE {jobs} SET state = 'queued', attempts = 0, finished_at = NULL WHERE state = 'dead'"
)
RESULT_BY_HAND = "UPDATE {jobs} SET result = '\"mended\"' WHERE state = 'succeeded'"


def _sample() -> Job:
    """Any job: what job_view shows of one."""
    now = FakeClock().now()
    return Job(id="j_x", type="echo", run_at=now, created_at=now, updated_at=now)


def _finished(store: JobStore, state: JobState, tenant: str = TENANT) -> str:
    """A job of `tenant` that ran once and ended in `state` (succeeded or dead)."""
    clock = FakeClock(store.clock.now())
    [added] = store.add([new_job(clock, tenant=tenant, max_attempts=1)])
    [claimed] = store.claim(1, 30, ids=[added.job.id])
    store.finish([Completion(claimed.id, token(claimed), state, result="ok", error="e")])
    assert stored(store, claimed.id).state == state
    return claimed.id


def _cached(store: JobStore, state: JobState, tenant: str = TENANT) -> tuple[ResultCache, str]:
    """A cache holding one finished job's answer (the status route's own steps)."""
    job_id = _finished(store, state, tenant)
    cache = ResultCache(10, 600, epoch=store.cache_epoch, recheck=0)
    body = json.dumps({"id": job_id, "state": state.value})
    assert cache.put(tenant, job_id, body, cache.ticket(tenant))
    assert cache.lookup(tenant, job_id) == body
    return cache, job_id


def _redrive_by_hand_is_seen(store: JobStore, write: Callable[[str], None]) -> None:
    cache, job_id = _cached(store, JobState.DEAD)
    other_cache, other_id = _cached(store, JobState.SUCCEEDED, OTHER)
    other_epoch = store.cache_epoch(OTHER)
    write(REDRIVE_BY_HAND)
    assert stored(store, job_id).state == JobState.QUEUED
    assert cache.lookup(TENANT, job_id) is None  # was the cached "dead"
    assert store.cache_epoch(OTHER) == other_epoch  # OTHER had no dead job
    assert other_cache.lookup(OTHER, other_id) is not None


def _result_by_hand_is_seen(store: JobStore, write: Callable[[str], None]) -> None:
    cache, job_id = _cached(store, JobState.SUCCEEDED)
    write(RESULT_BY_HAND)
    assert stored(store, job_id).result == "mended"
    assert cache.lookup(TENANT, job_id) is None  # was the cached "ok"


# Each column a cached answer shows (job_view), and the tenant that owns it, changed
# by hand on a finished row; the id is left out (Postgres joins old and new rows by it).
SHOWN = sorted((set(job_view(_sample()).keys()) | {"tenant"}) - {"id"})
TIMES = {"run_at", "created_at", "updated_at", "started_at", "finished_at"}


def _changed(column: str, times: str) -> str:
    """An UPDATE by hand giving the finished job {id} another value of `column`."""
    if column == "state":
        value = "'dead'"
    elif column in ("payload", "result"):
        value = f"' ' || {column}"  # still JSON
    elif column in TIMES:
        value = times.format(column=column)
    elif column in ("priority", "attempts", "max_attempts"):
        value = f"{column} + 1"
    else:
        value = f"COALESCE({column}, '') || 'x'"
    return f"UPDATE {{jobs}} SET {column} = {value} WHERE id = '{{id}}'"


def _each_shown_column_is_seen(
    store: JobStore, write: Callable[[str], None], column: str, times: str
) -> None:
    job_id = _finished(store, JobState.SUCCEEDED)
    before = store.cache_epoch(TENANT)
    write(_changed(column, times).replace("{id}", job_id))
    assert store.cache_epoch(TENANT) != before, column


def _workers_move_no_epoch(store: JobStore, write: Callable[[str], None]) -> None:
    """Claims, start marks, renewals, finishes of each kind, a cancel, a waiting job
    changed by hand and a finished row updated to what it was: no epoch moves."""
    clock = FakeClock(store.clock.now())
    _finished(store, JobState.SUCCEEDED)  # a finished row the statements below pass by
    _finished(store, JobState.DEAD)
    before = store.cache_epoch(TENANT)
    added = store.add([new_job(clock, max_attempts=2) for _ in range(4)])
    claimed = store.claim(3, 30, started=False)
    assert len(claimed) == 3
    assert store.start([(job.id, token(job)) for job in claimed]) == [True] * 3
    assert store.extend_leases([(job.id, token(job)) for job in claimed], 60) == [True] * 3
    ends = [JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD]
    retry_at = clock.now() + timedelta(seconds=5)
    done = store.finish(
        [
            Completion(job.id, token(job), end, error="e", retry_at=retry_at)
            if end == JobState.RETRYING
            else Completion(job.id, token(job), end, result=1, error="e")
            for job, end in zip(claimed, ends, strict=True)
        ]
    )
    assert done == [True] * 3
    waiting = {a.job.id for a in added} - {job.id for job in claimed}
    store.cancel(waiting.pop(), TENANT)
    write("UPDATE {jobs} SET priority = 5 WHERE state IN ('queued', 'retrying')")
    write("UPDATE {jobs} SET state = state, result = result")  # nothing changed
    assert store.cache_epoch(TENANT) == before


# -- Postgres ----------------------------------------------------------------------


def _psql(url: str) -> Callable[[str], None]:
    """An operator's psql session on the store's schema."""

    def write(statement: str) -> None:
        with connect(parse_url(url)) as conn:
            conn.execute(statement.format(jobs="jobs").encode())

    return write


def test_a_postgres_update_naming_the_schema_under_another_search_path() -> None:
    """psql's default search path and `UPDATE <schema>.jobs`: the trigger finds the
    epochs where the store keeps them (the function keeps its search path)."""
    with fresh_schema() as url:
        jobs = f'"{parse_url(url).schema}".jobs'
        store = PostgresStore(parse_url(url))

        def write(statement: str) -> None:
            admin = admin_connect()
            try:
                admin.execute(statement.format(jobs=jobs).encode())
            finally:
                admin.close()

        try:
            _redrive_by_hand_is_seen(store, write)
        finally:
            store.close()


def test_a_postgres_redrive_of_more_than_one_statement_moves_every_job_and_the_epoch() -> None:
    """Over REDRIVE_CHUNK ids, every row is locked before the first statement's bump."""
    from chalicelib.storage.postgres import REDRIVE_CHUNK

    with fresh_schema() as url:
        store = PostgresStore(parse_url(url))
        try:
            clock = FakeClock(store.clock.now())
            added = store.add([new_job(clock) for _ in range(REDRIVE_CHUNK + 1)])
            _psql(url)("UPDATE {jobs} SET state = 'dead', finished_at = now()")  # buried
            before = store.cache_epoch(TENANT)
            ids = [a.job.id for a in added]
            assert sorted(job.id for job in store.redrive(ids, TENANT)) == sorted(ids)
            assert store.cache_epoch(TENANT) != before
        finally:
            store.close()


def test_a_postgres_schema_of_0013_gets_the_update_trigger_from_migrate() -> None:
    from chalicelib.storage import migrations

    with fresh_schema(migrate=False) as url:
        settings = parse_url(url)
        with connect(settings) as conn:
            schema_at(conn, settings.schema, 13)
            ran = [m.version for m in migrations.migrate(conn, settings.schema)]
            assert ran == list(range(14, migrations.latest_version() + 1))
        store = PostgresStore(settings)
        try:
            _redrive_by_hand_is_seen(store, _psql(url))
        finally:
            store.close()


# -- SQLite ------------------------------------------------------------------------


def _shell(path: Path) -> Callable[[str], None]:
    """The sqlite3 shell: another process's connection to the file."""

    def write(statement: str) -> None:
        shell = sqlite3.connect(path)
        try:
            with shell:
                shell.execute(statement.format(jobs="jobs"))
        finally:
            shell.close()

    return write


@dataclass(frozen=True)
class ByHand:
    """A store, an operator's session writing to it by hand, and how its SQL moves a
    column's value one step on ({column} stands for the column)."""

    store: JobStore
    write: Callable[[str], None]
    later: str


@pytest.fixture(params=["postgres", "sqlite"])
def by_hand(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ByHand]:
    if request.param == "postgres":
        with fresh_schema() as url:
            pg = PostgresStore(parse_url(url))
            try:
                yield ByHand(pg, _psql(url), "{column} + interval '1 second'")
            finally:
                pg.close()
        return
    path = tmp_path / "spool.db"
    lite = SQLiteStore(str(path))
    try:
        yield ByHand(lite, _shell(path), "{column} + 1")
    finally:
        lite.close()


def test_a_redrive_by_hand_empties_the_cache_for_its_tenant_only(by_hand: ByHand) -> None:
    _redrive_by_hand_is_seen(by_hand.store, by_hand.write)


def test_a_result_changed_by_hand_empties_the_cache(by_hand: ByHand) -> None:
    _result_by_hand_is_seen(by_hand.store, by_hand.write)


@pytest.mark.parametrize("column", SHOWN)
def test_each_shown_column_changed_by_hand_moves_the_epoch(by_hand: ByHand, column: str) -> None:
    _each_shown_column_is_seen(by_hand.store, by_hand.write, column, by_hand.later)


def test_workers_writes_move_no_epoch(by_hand: ByHand) -> None:
    _workers_move_no_epoch(by_hand.store, by_hand.write)


def test_redrive_still_moves_the_epoch(by_hand: ByHand) -> None:
    store = by_hand.store
    job_id = _finished(store, JobState.DEAD)
    before = store.cache_epoch(TENANT)
    assert [job.id for job in store.redrive([job_id], TENANT)] == [job_id]
    assert store.cache_epoch(TENANT) != before


def test_a_sqlite_file_made_before_the_update_trigger_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    SQLiteStore(str(path)).close()
    old = sqlite3.connect(path)
    try:
        # A file an earlier Spool made (no such trigger: nothing to drop there).
        old.execute("DROP TRIGGER IF EXISTS jobs_finished_changed_epoch")
        old.commit()
    finally:
        old.close()
    store = SQLiteStore(str(path))
    try:
        _redrive_by_hand_is_seen(store, _shell(path))
    finally:
        store.close()
