"""The SQLite store's job lists (`list_jobs`): one tenant's jobs by one state's index.

A tenant's list is walked on `jobs_by_state` (tenant, state, created_at, id): a list
filtered by state walks that state's range; a list of every state walks each state's
range (six of them, each stopping after a page) and merges them in (created_at, id)
order. Until stop 40 an index on (tenant, created_at, id) served the second kind in
one walk, and every add wrote an entry to it (about 19,000 instructions, a twentieth of
an add, bench/store_add_instructions.py): lists are far rarer than adds, and the six
walks read at most six pages' rows. A list of every tenant reads the table, as before.

A file made before loses that index when this Spool first opens it (one DROP INDEX).
An older Spool opening the file afterwards builds it again (its schema says CREATE
INDEX IF NOT EXISTS: a pass over every job, under the write lock), and this one drops
it again on its next open: correct either way, but run one release per file.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from chalicelib.models import Job, JobPage, JobQuery, JobState
from chalicelib.storage.base import check_limit, decode_cursor, encode_cursor

_T = TypeVar("_T")

# The index that stops 36-39 wrote on every add; a file that has it loses it on open.
RETIRED_INDEX = "jobs_by_tenant"
CREATED_AT, ID = 15, 0  # their places in the store's COLUMNS


def drop_retired(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction."""
    db.execute(f"DROP INDEX IF EXISTS {RETIRED_INDEX}")


def has_retired(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?", (RETIRED_INDEX,)
    ).fetchone()
    return bool(row[0])


def list_jobs(
    db: sqlite3.Connection,
    columns: str,
    query: JobQuery,
    to_job: Callable[[Sequence[Any]], Job],
) -> JobPage:
    limit = check_limit(query.limit)
    if query.tenant is not None and query.state is None:
        walks = _in_one_snapshot(
            db, lambda: [_rows(db, columns, query, s, limit) for s in JobState]
        )
        key = lambda row: (row[CREATED_AT], row[ID])  # noqa: E731
        merged = heapq.merge(*walks, key=key, reverse=query.newest_first)
        rows = [row for _, row in zip(range(limit + 1), merged, strict=False)]
    else:
        rows = _rows(db, columns, query, query.state, limit)
    jobs = [to_job(r) for r in rows[:limit]]
    cursor = (
        encode_cursor(jobs[-1].created_at, jobs[-1].id, query.newest_first)
        if len(rows) > limit
        else None
    )
    return JobPage(jobs, cursor)


def _in_one_snapshot(db: sqlite3.Connection, read: Callable[[], _T]) -> _T:
    """`read`'s statements in one read transaction. Each walk above is a statement of
    its own, and outside a transaction each reads the file as it is then: a job a
    worker moved from queued to running to succeeded between two walks was listed by
    each of them, twice or three times in one page."""
    if db.in_transaction:  # the caller's transaction is the snapshot already
        return read()
    db.execute("BEGIN")
    try:
        return read()
    finally:
        db.execute("COMMIT")


def select(columns: str, query: JobQuery, state: JobState | None) -> tuple[str, list[Any]]:
    """One walk's statement and parameters, in (created_at, id) order (reversed for
    newest first), from the cursor on; LIMIT is the last parameter."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("tenant", query.tenant),
        ("state", state.value if state else None),
        ("queue", query.queue),
        ("type", query.type),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    after, order = (">", "") if not query.newest_first else ("<", " DESC")
    if query.cursor:
        created, last_id = decode_cursor(query.cursor, query.newest_first)
        where.append(f"(created_at {after} ? OR (created_at = ? AND id {after} ?))")
        params.extend([created, created, last_id])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {columns} FROM jobs {clause} ORDER BY created_at{order}, id{order} LIMIT ?"
    return sql, params


def _rows(
    db: sqlite3.Connection, columns: str, query: JobQuery, state: JobState | None, limit: int
) -> list[Any]:
    sql, params = select(columns, query, state)
    return db.execute(sql, [*params, limit + 1]).fetchall()
