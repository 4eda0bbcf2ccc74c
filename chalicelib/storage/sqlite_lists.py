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
from dataclasses import replace
from typing import Any, TypeVar

from chalicelib.models import Job, JobPage, JobQuery, JobState
from chalicelib.storage import stored_rows
from chalicelib.storage.base import check_limit, decode_cursor, encode_cursor, from_micros

_T = TypeVar("_T")

# Index entries a walk filtered by queue or type may read in one request. Such a list
# tests each of the tenant's jobs in the state's range, and all of a list's walks read
# in one snapshot: a tenant with 400,000 jobs had each `GET /jobs?type=...` hold a
# snapshot for 0.2-0.6 s, past the 200 ms after which the WAL cannot be started again,
# and two such requests in a loop grew another tenant's WAL to 299 MB in 25 s (stop 50,
# helper K). A page then ends at the place where a walk reaches the bound, shorter
# than its limit (or empty), with a cursor to go on from there.
SCAN_BOUND = 10_000

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
    frontier: Position | None = None
    if query.tenant is not None and query.state is None:
        walks, frontier = _in_one_snapshot(db, lambda: _walks(db, columns, query, list(JobState)))
        key = lambda row: (row[CREATED_AT], row[ID])  # noqa: E731
        merged = heapq.merge(*walks, key=key, reverse=query.newest_first)
        rows = [row for _, row in zip(range(limit + 1), merged, strict=False)]
    elif _bounded(query):
        [rows], frontier = _in_one_snapshot(db, lambda: _walks(db, columns, query, [query.state]))
    else:
        rows = _rows(db, columns, query, query.state, limit)
    jobs = stored_rows.readable(to_job, rows[:limit])  # a damaged row is left out
    end = stored_rows.page_end(rows, jobs, limit, lambda r: (from_micros(r[CREATED_AT]), r[ID]))
    if end is not None:
        cursor: str | None = encode_cursor(*end, query.newest_first)
    elif frontier is not None:  # a short page (even an empty one): the rest lies beyond
        cursor = encode_cursor(from_micros(frontier[0]), frontier[1], query.newest_first)
    else:
        cursor = None
    return JobPage(jobs, cursor)


Position = tuple[int, str]  # (created_at in microseconds, id): a place in a list's order


def _bounded(query: JobQuery) -> bool:
    """Whether the walks read rows that the index cannot tell apart: a tenant's list
    filtered by queue or type tests each row of the state's range (SCAN_BOUND)."""
    return query.tenant is not None and (query.queue is not None or query.type is not None)


def _walks(
    db: sqlite3.Connection, columns: str, query: JobQuery, states: Sequence[JobState | None]
) -> tuple[list[list[Any]], Position | None]:
    """Each state's walk, none past the frontier: the nearest place at which some walk
    has SCAN_BOUND index entries behind it (None: no walk has that many left). Every
    job up to the frontier is read, so the next page may start after it."""
    limit = check_limit(query.limit)
    frontier = None
    if _bounded(query):
        places = [p for p in (_frontier(db, query, s) for s in states) if p is not None]
        if places:
            frontier = max(places) if query.newest_first else min(places)
    return [_rows(db, columns, query, s, limit, frontier) for s in states], frontier


def _frontier(db: sqlite3.Connection, query: JobQuery, state: JobState | None) -> Position | None:
    """The place of the state's SCAN_BOUND-th job from the cursor on, whatever its queue
    or type, or None when fewer are left: read from jobs_by_state alone (no row)."""
    sql, params = select("created_at, id", replace(query, queue=None, type=None), state)
    row = db.execute(f"{sql} OFFSET ?", [*params, 1, SCAN_BOUND - 1]).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


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


def select(
    columns: str, query: JobQuery, state: JobState | None, until: Position | None = None
) -> tuple[str, list[Any]]:
    """One walk's statement and parameters, in (created_at, id) order (reversed for
    newest first), from the cursor on, up to `until` (included); LIMIT is the last
    parameter."""
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
        # A row value, which SQLite seeks to in the index: the same test spelt with OR
        # was not, and every page after the first walked the range from its start.
        where.append(f"(created_at, id) {after} (?, ?)")
        params.extend([created, last_id])
    if until is not None:
        before = "<" if not query.newest_first else ">"
        where.append(f"(created_at, id) {before}= (?, ?)")
        params.extend(until)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {columns} FROM jobs {clause} ORDER BY created_at{order}, id{order} LIMIT ?"
    return sql, params


def _rows(
    db: sqlite3.Connection,
    columns: str,
    query: JobQuery,
    state: JobState | None,
    limit: int,
    until: Position | None = None,
) -> list[Any]:
    sql, params = select(columns, query, state, until)
    return db.execute(sql, [*params, limit + 1]).fetchall()
