"""The SQLite store's dashboard reads: kept counts, minute tallies, two indexes.

Triggers keep `job_counts` (jobs per tenant, queue and state) and
`job_minutes` (attempts that ended per tenant, queue and minute) in the same
transaction as the statement that moved a job, whichever code path wrote it,
so the dashboard reads a few small rows instead of counting a million jobs.
A file made by an older Spool gets the tables, triggers and a one-time count
of its jobs in one write transaction when it is first opened (`install`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chalicelib.models import STATE_BY_VALUE, JobState, MinuteTally
from chalicelib.storage import stored_rows
from chalicelib.storage.base import MINUTES_KEPT, from_micros, minute_of, to_micros

MINUTE = 60_000_000  # microseconds

_OLD_ROW = "tenant = OLD.tenant AND queue = OLD.queue AND state = OLD.state"
# The count triggers of stops 36-39: a decrement, and a trigger on job_counts that
# deleted a row at zero, which ran (its WHEN tested) on every increment too: about 7,000
# instructions of each add (bench/store_add_instructions.py). upgrade_counts drops them.
OLD_COUNT_TRIGGERS = ("jobs_count_update", "jobs_count_delete", "job_counts_emptied")
COUNT_TRIGGERS = (
    # A count that reaches zero goes (a gauge: absent reads as zero), by the
    # trigger that decremented it, so no trigger on job_counts itself runs on
    # every increment (sqlite_queue_totals.py says why the rows go).
    "CREATE TRIGGER IF NOT EXISTS jobs_count_moved AFTER UPDATE OF state ON jobs "
    "WHEN OLD.state IS NOT NEW.state BEGIN "
    f"UPDATE job_counts SET n = n - 1 WHERE {_OLD_ROW}; "
    f"DELETE FROM job_counts WHERE {_OLD_ROW} AND n = 0; "
    "INSERT INTO job_counts (tenant, queue, state, n) "
    "VALUES (NEW.tenant, NEW.queue, NEW.state, 1) "
    "ON CONFLICT (tenant, queue, state) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER IF NOT EXISTS jobs_count_removed AFTER DELETE ON jobs BEGIN "
    f"UPDATE job_counts SET n = n - 1 WHERE {_OLD_ROW}; "
    f"DELETE FROM job_counts WHERE {_OLD_ROW} AND n = 0; END",
)

DDL = (
    "CREATE TABLE IF NOT EXISTS job_counts (tenant TEXT NOT NULL, queue TEXT NOT NULL, "
    "state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tenant, queue, state)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS job_minutes (minute INTEGER NOT NULL, tenant TEXT NOT NULL, "
    "queue TEXT NOT NULL, succeeded INTEGER NOT NULL, failed INTEGER NOT NULL, "
    "PRIMARY KEY (minute, tenant, queue)) WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS jobs_count_insert AFTER INSERT ON jobs BEGIN "
    "INSERT INTO job_counts (tenant, queue, state, n) VALUES (NEW.tenant, NEW.queue, NEW.state, 1) "
    "ON CONFLICT (tenant, queue, state) DO UPDATE SET n = n + 1; END",
    *COUNT_TRIGGERS,
    # An attempt ended: running -> succeeded, retrying or dead (a finish or a reap).
    f"CREATE TRIGGER IF NOT EXISTS jobs_minute AFTER UPDATE OF state ON jobs "
    f"WHEN OLD.state = 'running' AND NEW.state IN ('succeeded', 'retrying', 'dead') BEGIN "
    f"INSERT INTO job_minutes (minute, tenant, queue, succeeded, failed) "
    f"VALUES (NEW.updated_at / {MINUTE} * {MINUTE}, NEW.tenant, NEW.queue, "
    f"NEW.state = 'succeeded', NEW.state <> 'succeeded') "
    f"ON CONFLICT (minute, tenant, queue) DO UPDATE SET "
    f"succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed; END",
    # Filtered lists (state) and a tenant's oldest due job per queue, by index.
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (tenant, state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_waiting_by_queue ON jobs (tenant, queue, run_at) "
    "WHERE state IN ('queued', 'retrying')",
)
BACKFILL = (
    "INSERT INTO job_counts (tenant, queue, state, n) "
    "SELECT tenant, queue, state, COUNT(*) FROM jobs GROUP BY tenant, queue, state"
)
WAITING = "state IN ('queued', 'retrying')"


def installed(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'jobs_minute'"
    ).fetchone()
    return bool(row[0])


def install(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: tables, triggers, indexes, and the counts
    of jobs already in the file (only when the tables are new, so nothing counts twice)."""
    if installed(db):
        return
    fresh = not db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'job_counts'"
    ).fetchone()[0]
    for statement in DDL:
        db.execute(statement)
    if fresh:
        db.execute(BACKFILL)


def counts_current(db: sqlite3.Connection) -> bool:
    """The count triggers are this Spool's: the two that delete at zero, none of the old."""
    names = {
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?, ?, ?)",
            ("jobs_count_moved", "jobs_count_removed", *OLD_COUNT_TRIGGERS),
        )
    }
    return names == {"jobs_count_moved", "jobs_count_removed"}


def upgrade_counts(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: the old count triggers out, the new in.

    An older Spool that opens the file afterwards adds its `job_counts_emptied` back
    (its own install runs when that trigger is missing); both delete a row at zero,
    so counts stay right, and the next open by this Spool drops it again."""
    if counts_current(db):
        return
    for name in OLD_COUNT_TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in COUNT_TRIGGERS:
        db.execute(statement)
    db.execute("DELETE FROM job_counts WHERE n = 0")


def state_counts(db: sqlite3.Connection, tenant: str | None) -> dict[tuple[str, JobState], int]:
    where, params = ("WHERE tenant = ?", [tenant]) if tenant is not None else ("", [])
    rows = db.execute(
        f"SELECT queue, state, SUM(n) FROM job_counts {where} "
        "GROUP BY queue, state HAVING SUM(n) > 0",
        params,
    ).fetchall()
    counts: dict[tuple[str, JobState], int] = {}
    for queue, value, n in rows:
        state = stored_rows.counted_state(queue, value, n, STATE_BY_VALUE)
        if state is not None:
            counts[(queue, state)] = int(n)
    return counts


def throughput(db: sqlite3.Connection, since: datetime, tenant: str | None) -> list[MinuteTally]:
    params: list[Any] = [to_micros(minute_of(since))]
    where = "minute >= ?"
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    rows = db.execute(
        f"SELECT minute, queue, SUM(succeeded), SUM(failed) FROM job_minutes WHERE {where} "
        "GROUP BY minute, queue ORDER BY minute, queue",
        params,
    ).fetchall()
    return [MinuteTally(q, from_micros(m), int(ok), int(bad)) for m, q, ok, bad in rows]


def oldest_due(
    db: sqlite3.Connection, now: datetime, tenant: str, queues: Sequence[str] | None
) -> dict[str, datetime]:
    """One index seek per queue that holds waiting jobs of the tenant (from the counts)."""
    waiting = db.execute(
        "SELECT DISTINCT queue FROM job_counts WHERE tenant = ? AND state IN "
        "('queued', 'retrying') AND n > 0",
        (tenant,),
    ).fetchall()
    out: dict[str, datetime] = {}
    limit = to_micros(now)
    for (queue,) in waiting:
        if queues is not None and queue not in queues:
            continue
        at = db.execute(
            f"SELECT MIN(run_at) FROM jobs WHERE tenant = ? AND queue = ? AND {WAITING}",
            (tenant, queue),
        ).fetchone()[0]
        if at is not None and at <= limit:
            out[queue] = from_micros(at)
    return out


def forget_old_minutes(db: sqlite3.Connection, now: datetime) -> None:
    db.execute("DELETE FROM job_minutes WHERE minute < ?", (to_micros(now - MINUTES_KEPT),))
