"""The durability word every store takes in its URL (docs/self-hosting.md says what each
mode survives): `durability=full` fsyncs every SQLite commit and makes Postgres claims
wait for the WAL flush like every other write; a bad value is the operator's error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.config import ConfigError
from chalicelib.storage import open_store
from chalicelib.storage.sqlite import SQLiteStore
from tests.factories import new_job


def synchronous_level(store: SQLiteStore) -> int:
    """PRAGMA synchronous on the store's own connection: 1 NORMAL, 2 FULL."""
    return int(store._db().execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(
    ("query", "level"),
    [("", 1), ("?durability=full", 2), ("?durability=FULL", 2), ("?durability=normal", 1),
     ("?synchronous=full", 2), ("?durability=full&synchronous=full", 2)],
)  # fmt: skip
def test_sqlite_durability_sets_the_fsync_level(tmp_path: Path, query: str, level: int) -> None:
    store = open_store(f"sqlite:///{tmp_path}/spool.db{query}")
    try:
        assert isinstance(store, SQLiteStore)
        assert synchronous_level(store) == level
        store.add([new_job(FakeClock(), "t")])  # and it still works
    finally:
        store.close()


@pytest.mark.parametrize(
    "query",
    ["?durability=bogus", "?durability=off", "?durability=full&synchronous=normal"],
)
def test_sqlite_bad_durability_is_a_config_error_naming_the_setting(
    tmp_path: Path, query: str
) -> None:
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(f"sqlite:///{tmp_path}/spool.db{query}")
    assert "durability" in str(caught.value)
    assert not (tmp_path / "spool.db").exists()


@pytest.mark.parametrize("query", ["durability=bogus", "pool_max=0", "pool_max=many"])
def test_postgres_bad_url_options_are_config_errors_with_the_password_masked(query: str) -> None:
    # Refused while parsing the URL: no connection is ever attempted.
    with pytest.raises(ConfigError, match="SPOOL_STORE_URL") as caught:
        open_store(f"postgresql://spool:hunter2@127.0.0.1:5432/test?{query}")
    assert "hunter2" not in str(caught.value)


class _Recording:
    """A connection that remembers every statement the store sends through it."""

    def __init__(self, conn: Any, sent: list[str]) -> None:
        self._conn = conn
        self._sent = sent

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._sent.append(str(query))
        return self._conn.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@contextlib.contextmanager
def recorded_pg_store(**options: Any) -> Iterator[tuple[Any, list[str]]]:
    from chalicelib.storage.postgres import PostgresStore, from_url
    from tests.pg_support import fresh_schema

    sent: list[str] = []
    with fresh_schema(**options) as url:
        store = from_url(url, FakeClock())
        original = PostgresStore._run

        def run(self: Any, fn: Any, read: bool = False, **options: Any) -> Any:
            return original(self, lambda conn: fn(_Recording(conn, sent)), read, **options)

        store._run = run.__get__(store)  # type: ignore[method-assign]
        try:
            yield store, sent
        finally:
            store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(("options", "fast"), [({}, True), ({"durability": "full"}, False)])
def test_postgres_claims_skip_the_wal_flush_only_in_normal_mode(
    options: dict[str, str], fast: bool
) -> None:
    with recorded_pg_store(**options) as (store, sent):
        job = store.add([new_job(store.clock, "t")])[0].job
        enqueue_sql = list(sent)
        sent.clear()
        claimed = store.claim(1, 30)
        assert [j.id for j in claimed] == [job.id]
        turned_off = [q for q in sent if "synchronous_commit" in q]
        assert bool(turned_off) is fast, sent
        # Enqueues never skip the flush, in either mode.
        assert not [q for q in enqueue_sql if "synchronous_commit" in q]
