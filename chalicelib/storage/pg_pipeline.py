"""A Postgres transaction sent as one pipeline, for the store's short write steps.

A claim or a token take is a few statements in one transaction, on an autocommit
connection. psycopg's own `with conn.pipeline(),
conn.transaction()` syncs after BEGIN (so the block starts inside a transaction),
on the inner pipeline's exit, with its COMMIT and on the outer exit: four round trips
for a block that reads nothing. Sent here as BEGIN, the block's statements and
COMMIT in one pipeline with a single Sync, the block's round trips are only the reads
it waits for, plus the commit's (stop 53: a claim under a policy 7 -> 2, the plain
claim and the start marks 4 -> 1). The start marks have since become one statement
of their own (postgres.START_FAST_SQL, stop 54): a pipeline still costs psycopg's
work to queue each of its statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

_OPEN = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)


@contextmanager
def pipelined_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """BEGIN, the block, COMMIT: one pipeline, one Sync. A block that raises (or a
    statement the server refused, raised on the pipeline's exit) is rolled back here:
    nothing it sent commits, and the connection is left idle for the pool."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
    except BaseException:
        if conn.pgconn.transaction_status in _OPEN:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise
