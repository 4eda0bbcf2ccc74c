"""A Postgres lease's end, moved on by what its transaction waited on the server.

A claim or a lease extension reads its clock once it holds a pooled connection, then
sends its statements, which may wait on a lock (a migration's ALTER TABLE, a CREATE
INDEX without CONCURRENTLY, an operator's LOCK TABLE) for longer than the lease: the
end they wrote was over before they returned, and the next claim reaped a job whose
handler was running, or took a webhook delivery being sent
(tests/test_chaos_s47_pg_lock.py). So the end written adds the time from the
transaction's start to the row's write. The parameter `late` is 1 on the server's
clock and 0 on a test's clock, whose times stay exact.
"""

from __future__ import annotations

LEASE_END = (
    "(%(expires)s::timestamptz + (clock_timestamp() - transaction_timestamp()) * %(late)s::int)"
)
