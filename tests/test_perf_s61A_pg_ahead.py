"""Test schemas made ahead and dropped behind (tests/pg_ahead.py, tests/pg_support.py).

About 500 Postgres tests each waited for a new migrated schema (70-240 ms) and for
its drop (30-120 ms). fresh_schema now hands out one a thread made before the test
asked, and the thread drops it after the test: each test still gets a schema no other
test used, holding what migrate makes and nothing else.

The pool's own rules are checked with stand-in make and drop functions (no server);
the Postgres half checks what a test meets: where the work happened, and that the
schema it is handed is new.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests import pg_ahead, pg_support


class Recorder:
    """make and drop functions that record their names and the thread they ran on;
    `fail_drops` names drops that raise."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.made: list[tuple[str, str]] = []
        self.dropped: list[tuple[str, str]] = []
        self.fail_drops: set[str] = set()
        self.fail_makes = False
        self.lock = threading.Lock()

    def make(self) -> str:
        if self.fail_makes:
            raise RuntimeError("server gone")
        name = f"s{next(self.counter)}"
        with self.lock:
            self.made.append((name, threading.current_thread().name))
        return name

    def drop(self, name: str) -> None:
        if name in self.fail_drops:
            raise RuntimeError(f"{name} is locked")
        with self.lock:
            self.dropped.append((name, threading.current_thread().name))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def pool(recorder: Recorder) -> Iterator[pg_ahead.SchemaPool]:
    made = pg_ahead.SchemaPool(recorder.make, recorder.drop)
    yield made
    made.close()


def test_the_first_take_makes_its_own_and_the_next_is_made_ahead(
    pool: pg_ahead.SchemaPool, recorder: Recorder
) -> None:
    assert pool.take() is None  # nothing made yet: the caller makes its own
    second = pool.take()  # waits for the one the thread was making
    assert second == "s1"
    assert recorder.made == [("s1", "pg-ahead")]


def test_each_schema_is_handed_out_once(pool: pg_ahead.SchemaPool) -> None:
    names = [pool.take() for _ in range(6)]
    handed = [n for n in names if n is not None]
    assert len(handed) == len(set(handed)) >= 5


def test_drops_run_on_the_thread_and_close_drops_what_was_made_and_never_used(
    pool: pg_ahead.SchemaPool, recorder: Recorder
) -> None:
    pool.take()
    used = pool.take()
    assert used is not None
    pool.drop_later(used)
    assert pool.close() == []
    made = {name for name, _ in recorder.made}
    dropped = {name for name, _ in recorder.dropped}
    assert dropped == made  # the used one and the one made ahead for a next test
    assert dict(recorder.dropped)[used] == "pg-ahead"


def test_a_failed_drop_is_tried_again_at_close_and_reported_when_it_fails_again(
    pool: pg_ahead.SchemaPool, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.fail_drops = {"late", "stuck"}
    pool.drop_later("late")
    pool.drop_later("stuck")
    pool.drop_later("fine")
    recorder.fail_drops = {"stuck"}  # "late" would drop now; "stuck" still holds on
    with caplog.at_level("WARNING", logger="tests.pg_ahead"):
        assert pool.close() == ["stuck"]
    assert {name for name, _ in recorder.dropped} == {"late", "fine"}
    assert "stuck was not dropped" in caplog.text


def test_a_make_that_fails_leaves_the_caller_to_make_its_own(
    pool: pg_ahead.SchemaPool, recorder: Recorder
) -> None:
    recorder.fail_makes = True
    assert pool.take() is None
    assert pool.take() is None  # the thread's attempt failed: not handed out, not waited on
    recorder.fail_makes = False
    assert pool.take() in (None, *[name for name, _ in recorder.made])


def test_after_close_nothing_is_made_and_drops_happen_in_the_caller(
    pool: pg_ahead.SchemaPool, recorder: Recorder
) -> None:
    pool.close()
    assert pool.take() is None
    pool.drop_later("after")
    assert recorder.dropped == [("after", threading.current_thread().name)]
    assert recorder.made == []


# The shared server: what a test meets.


def _threads_of(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The threads that migrate and drop test schemas, recorded from here on."""
    migrated: list[str] = []
    dropped: list[str] = []
    real_migrate, real_drop = pg_support.migrate_at_once, pg_support.drop_schema

    def migrate(conn: Any, schema: str, **kwargs: Any) -> None:
        migrated.append(threading.current_thread().name)
        real_migrate(conn, schema, **kwargs)

    def drop(admin: Any, schema: str, **kwargs: Any) -> None:
        dropped.append(threading.current_thread().name)
        real_drop(admin, schema, **kwargs)

    monkeypatch.setattr(pg_support, "migrate_at_once", migrate)
    monkeypatch.setattr(pg_support, "drop_schema", drop)
    return migrated, dropped


@pytest.mark.postgres
def test_a_test_schema_is_made_ahead_and_dropped_behind_the_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Red before tests/pg_ahead.py: every schema was migrated and dropped on the
    test's own thread."""
    from chalicelib.storage.postgres import parse_url

    monkeypatch.delenv("SPOOL_TEST_PG_AHEAD", raising=False)
    pool = pg_ahead.SchemaPool(pg_support._make_ahead, pg_support._drop_behind)
    monkeypatch.setattr(pg_support, "_AHEAD", pool)
    migrated, dropped = _threads_of(monkeypatch)
    here = threading.current_thread().name
    try:
        with pg_support.fresh_schema():
            pass
        with pg_support.fresh_schema() as url:
            name = parse_url(url).schema
            assert migrated.count(here) == 1  # the first test's, made in it; not this one
            assert "pg-ahead" in migrated
        assert here not in dropped  # neither test waited for its drop
    finally:
        assert pool.close() == []
    admin = pg_support.admin_connect()
    try:
        gone = admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,))
        assert gone.fetchone() == (0,)
    finally:
        admin.close()


def _contents(conn: Any, schema: str) -> dict[str, object]:
    """Every table's rows (the ledger's versions: its times differ) and every
    sequence's state, in `schema`."""
    found: dict[str, object] = {}
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    for (table,) in tables.fetchall():
        column = "version" if table == "schema_migrations" else "*"
        rows = conn.execute(f'SELECT {column} FROM "{schema}"."{table}"').fetchall()
        found[table] = sorted(map(repr, rows))
    sequences = conn.execute(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s", (schema,)
    )
    found["sequences"] = sorted(sequences.fetchall())
    return found


@pytest.mark.postgres
def test_a_schema_made_ahead_holds_what_a_schema_made_in_the_test_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the test before did to its own schema (rows, a sequence, a table), the
    next test's schema made ahead holds exactly what one made in the test holds."""
    from chalicelib.storage.postgres import connect, parse_url

    monkeypatch.delenv("SPOOL_TEST_PG_AHEAD", raising=False)
    pool = pg_ahead.SchemaPool(pg_support._make_ahead, pg_support._drop_behind)
    monkeypatch.setattr(pg_support, "_AHEAD", pool)
    try:
        with monkeypatch.context() as inline:
            inline.setenv("SPOOL_TEST_PG_AHEAD", "0")
            with pg_support.fresh_schema() as url:
                parsed = parse_url(url)
                assert parsed.schema is not None
                with connect(parsed) as conn:
                    expected = _contents(conn, parsed.schema)
        assert pool.take() is None  # starts the thread making one
        for _ in range(2):  # the second is made while the first is in use
            with pg_support.fresh_schema() as url:
                parsed = parse_url(url)
                assert parsed.schema is not None
                with connect(parsed) as conn:
                    assert _contents(conn, parsed.schema) == expected
                    conn.execute("CREATE TABLE left_behind (n serial)")
                    conn.execute("INSERT INTO left_behind DEFAULT VALUES")
                    conn.execute("UPDATE fair_clock SET clock = clock + 1")
    finally:
        assert pool.close() == []


def test_settle_waits_for_the_drops_under_way_and_queued(recorder: Recorder) -> None:
    release = threading.Event()
    real_drop = recorder.drop

    def slow_drop(name: str) -> None:
        assert release.wait(30)
        real_drop(name)

    pool = pg_ahead.SchemaPool(recorder.make, slow_drop)
    try:
        assert pool.settle(0)  # nothing started: idle
        pool.drop_later("a")
        pool.drop_later("b")
        assert not pool.settle(0)
        release.set()
        assert pool.settle()
        assert [name for name, _ in recorder.dropped] == ["a", "b"]
    finally:
        release.set()
        pool.close()


class _Item:
    def __init__(self, *marks: str) -> None:
        self.marks = marks

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


def test_a_test_without_postgres_starts_once_the_schema_thread_is_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """test_sqlite_wal_watch counts this process's descriptors before and after; the
    thread's connection to drop the schema of the Postgres test just before must not
    open or close between the two counts."""
    assert "tests.conftest" in sys.modules  # pytest's own: imported, not loaded again
    from tests import conftest

    settled: list[bool] = []
    monkeypatch.setattr(pg_support, "settle", lambda: settled.append(True))
    conftest.settle_schemas_for(_Item("postgres"))  # type: ignore[arg-type]
    assert settled == []
    conftest.settle_schemas_for(_Item("aws"))  # type: ignore[arg-type]
    assert settled == [True]


def test_the_thread_keeps_depth_schemas_made_ahead(
    pool: pg_ahead.SchemaPool, recorder: Recorder
) -> None:
    assert pool.take(2) is None
    assert pool.settle()
    assert [name for name, _ in recorder.made] == ["s1", "s2"]
    assert pool.take(2) == "s1"
    assert pool.settle()
    assert [name for name, _ in recorder.made] == ["s1", "s2", "s3"]  # s2, s3 ready
    assert pool.take(2) == "s2"


def test_outside_a_test_nothing_is_made_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/ takes schemas through fresh_schema too: no thread beside a timed run."""
    monkeypatch.delenv("SPOOL_TEST_PG_AHEAD", raising=False)
    assert pg_support.ahead_depth() == 1
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert pg_support.ahead_depth() == 0
    assert not pg_support.ahead_enabled()
