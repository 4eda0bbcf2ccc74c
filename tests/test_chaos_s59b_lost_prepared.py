"""A pooled connection whose prepared statements the server no longer has is replaced.

psycopg prepares a statement after its fifth use and keeps the name on the
connection. pg_cancel_backend on the worker's sessions every 50 ms under load
(an admin cancelling "stuck" queries, a tool doing it for him) left a connection
whose cache named statements the server did not have: every call that used one
of them failed with `prepared statement "_pg3_20" does not exist`, on that
connection, for good. Two of three workers logged "store unavailable" and "store
is back" every few seconds long after the cancels stopped, and the error, no
outage class, reached callers as it came (a 500 on the API). The connection is
now closed (the pool opens a new one), a read is retried on it, and a write
answers 503 "may have been applied". The server losing its statements is made
here by DEALLOCATE of each on the pooled connection: the state the cancels left.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chalicelib.errors import UncertainWrite
from chalicelib.storage.postgres import PostgresStore, from_url
from tests.factories import new_job
from tests.pg_support import fresh_schema

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

USES = 8  # past psycopg's prepare_threshold (5): the statements are prepared


@contextmanager
def one_connection_store() -> Iterator[PostgresStore]:
    with fresh_schema(pool_min="1", pool_max="1") as url:
        store = from_url(url)
        try:
            yield store
        finally:
            store.close()


def _forget_prepared(store: PostgresStore) -> None:
    """The server drops every prepared statement of the pool's connection; psycopg's
    cache on it still names them."""
    conn = store._pool.getconn()
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")]
        assert names, "nothing was prepared: psycopg's prepare_threshold changed?"
        for name in names:  # one by one: psycopg empties its cache on DEALLOCATE ALL
            conn.execute(f'DEALLOCATE "{name}"')
    finally:
        store._pool.putconn(conn)


def test_reads_answer_after_the_server_lost_the_connection_s_prepared_statements() -> None:
    with one_connection_store() as store:
        [added] = store.add([new_job(store.clock)])
        for _ in range(USES):
            assert store.get(added.job.id) is not None
        _forget_prepared(store)
        for _ in range(USES):
            got = store.get(added.job.id)
            assert got is not None and got.id == added.job.id


def test_a_write_on_such_a_connection_is_a_503_and_the_next_one_lands() -> None:
    with one_connection_store() as store:
        for _ in range(USES):
            store.add([new_job(store.clock)])
        _forget_prepared(store)
        with pytest.raises(UncertainWrite):  # a 503 saying so, never a raw driver error
            store.add([new_job(store.clock)])
        [added] = store.add([new_job(store.clock)])
        assert store.get(added.job.id) is not None
