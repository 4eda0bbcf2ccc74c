"""SQLite's claim under a ClaimPolicy: limits and fair turns (rules in storage/base.py).

The whole decision runs inside the claim's BEGIN IMMEDIATE transaction, which
SQLite lets only one connection of any process hold, so reading what runs, what
started, and taking the jobs is one atomic step for every worker on the file.

State: running jobs are the rows already in state 'running'; starts of
rate-limited keys go to `job_starts` in the same transaction; each tenant's
stride pass and the last turn go to `fair_turns`. The index that finds one
tenant's best due job is built on the first fair claim, so files that never
use fair turns never pay for it on every write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, cast

from chalicelib.limits import (
    STEP_BACK,
    Admission,
    ClaimPolicy,
    bucket_stamp,
    fair_pick,
    limit_keys,
    refill,
    take,
)
from chalicelib.storage.base import micros_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_starts (key TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS job_starts_by_key ON job_starts (key, at);
CREATE TABLE IF NOT EXISTS token_buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL,
    at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fair_turns (tenant TEXT PRIMARY KEY, pass REAL NOT NULL)
    WITHOUT ROWID;
"""
FAIR_INDEX = (
    "CREATE INDEX IF NOT EXISTS jobs_fair ON jobs (tenant, priority DESC, run_at, created_at, id) "
    "WHERE state IN ('queued', 'retrying')"
)
# The claim's order ends with the id, so that every store hands out jobs that tie on
# priority, run_at and created_at (one batch, or adds within one clock tick) in one
# order; an index without it made SQLite take them in insertion order instead. Files
# made before it was added have these indexes without the id: rebuilt on open.
DUE_INDEX = (
    "CREATE INDEX IF NOT EXISTS jobs_due ON jobs (priority DESC, run_at, created_at, id) "
    "WHERE state IN ('queued', 'retrying')"
)
# The clock of the turns (the pass of the last turn taken) is the row under this name.
CLOCK_ROW = "\x00clock"
WAITING = "state IN ('queued', 'retrying')"
# Due: run_at has come, or run_at is no time (text or a blob, set by hand), which SQLite
# orders after every integer, so `run_at <= now` never held and the job waited for
# good, counted but never listed. Taken, it fails to read and the claim makes it dead
# without running it (stored_rows.runnable), its last_error naming the column.
DUE = "(run_at <= ? OR run_at >= '')"
ORDER = "ORDER BY priority DESC, run_at, created_at, id"
_MICRO = 1_000_000


def tie_blind_indexes(db: sqlite3.Connection) -> list[str]:
    """The claim's indexes that a file made before kept without the id (see DUE_INDEX)."""
    blind = []
    for name in ("jobs_due", "jobs_fair"):
        columns = [row[2] for row in db.execute(f"PRAGMA index_info({name})")]
        if columns and "id" not in columns:
            blind.append(name)
    return blind


def rebuild_tie_blind(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: jobs_due made again with the id (a pass
    over the waiting jobs); jobs_fair dropped, and made again by the next fair claim."""
    for name in tie_blind_indexes(db):
        db.execute(f"DROP INDEX {name}")
        if name == "jobs_due":
            db.execute(DUE_INDEX)


def _in(column: str, values: Sequence[str], negate: bool = False) -> tuple[str, list[Any]]:
    if not values:
        return "", []
    op = "NOT IN" if negate else "IN"
    return f" AND {column} {op} ({','.join('?' * len(values))})", list(values)


def usage(db: sqlite3.Connection, policy: ClaimPolicy, now: int) -> Admission:
    """Room under each limit now: running rows, and starts within each rate window."""
    running: dict[str, int] = {}
    if policy.concurrency_keys():
        for queue, type_, n in db.execute(
            "SELECT queue, type, COUNT(*) FROM jobs WHERE state = 'running' GROUP BY queue, type"
        ):
            for key in limit_keys(queue, type_):
                running[key] = running.get(key, 0) + n
    started: dict[str, int] = {}
    for limit in policy.rate_limits():
        assert limit.rate is not None
        since = now - micros_of(limit.rate.window)
        db.execute("DELETE FROM job_starts WHERE key = ? AND at <= ?", (limit.key, since))
        # Starts dated ahead of now were recorded before the clock stepped back: they
        # count as starting now, not until the clock is back where it was.
        db.execute(
            "UPDATE job_starts SET at = ? WHERE key = ? AND at > ?",
            (now, limit.key, now + micros_of(STEP_BACK)),
        )
        started[limit.key] = db.execute(
            "SELECT COUNT(*) FROM job_starts WHERE key = ?", (limit.key,)
        ).fetchone()[0]
    return Admission(policy, running, started)


def choose(
    db: sqlite3.Connection,
    admission: Admission,
    limit: int,
    now: int,
    queues: Sequence[str] | None,
    ids: Sequence[str] | None,
) -> list[str]:
    """The ids of the due jobs to start, best first, within the limits."""
    policy = admission.policy
    if policy.fair and ids is None:
        return _choose_fair(db, admission, limit, now, queues)
    chosen: list[str] = []
    while len(chosen) < limit:
        full = set(admission.full_keys())
        rows = _due(db, admission, now, queues, ids, chosen, skip_full=ids is None)
        refresh = False
        for job_id, queue, type_, _tenant in rows:
            if admission.admit(job_id, queue, type_):
                chosen.append(job_id)
                if len(chosen) >= limit:
                    break
            if ids is None and set(admission.full_keys()) != full:
                refresh = True  # a limit just filled: ask again without its jobs
                break
        if not refresh:
            break
    return chosen


def _due(
    db: sqlite3.Connection,
    admission: Admission,
    now: int,
    queues: Sequence[str] | None,
    ids: Sequence[str] | None,
    taken: Sequence[str],
    skip_full: bool,
    tenant: str | None = None,
) -> Iterator[tuple[str, str, str, str]]:
    where = f"{WAITING} AND {DUE}"
    params: list[Any] = [now]
    if tenant is not None:
        where = f"tenant = ? AND {where}"
        params.insert(0, tenant)
    for clause, values in (
        _in("queue", queues or ()),
        _in("id", ids or ()),
        _in("id", taken, negate=True),
        _in("queue", admission.full("queue") if skip_full else (), negate=True),
        _in("type", admission.full("type") if skip_full else (), negate=True),
    ):
        where += clause
        params.extend(values)
    # Named, or the planner (no statistics) may take the (tenant, queue, run_at) index
    # and sort all of the tenant's due jobs on every claim.
    source = "jobs INDEXED BY jobs_fair" if tenant is not None else "jobs"
    # Stepped lazily: rows past the last one taken are never produced.
    sql = f"SELECT id, queue, type, tenant FROM {source} WHERE {where} {ORDER}"
    return iter(db.execute(sql, params))


def _choose_fair(
    db: sqlite3.Connection,
    admission: Admission,
    limit: int,
    now: int,
    queues: Sequence[str] | None,
) -> list[str]:
    db.execute(FAIR_INDEX)
    clause, params = _in("queue", queues or ())
    tenants = [
        t
        for (t,) in db.execute(
            f"SELECT DISTINCT tenant FROM job_counts WHERE {WAITING} AND n > 0{clause}", params
        )
    ]
    if not tenants:
        return []
    turns = dict(db.execute("SELECT tenant, pass FROM fair_turns"))
    clock = turns.pop(CLOCK_ROW, 0.0)

    Row = tuple[str, str, str, str]

    def fetch(tenant: str) -> Sequence[Row]:
        # fair_pick only iterates what it is given, once, as it takes turns.
        return cast("Sequence[Row]", _tenant_due(db, admission, now, queues, tenant))

    pick = fair_pick(
        tenants,
        turns,
        clock,
        admission.policy,
        fetch,
        lambda row: admission.admit(row[0], row[1], row[2]),
        limit,
    )
    if pick.chosen:
        db.executemany(
            "INSERT INTO fair_turns (tenant, pass) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET pass = excluded.pass",
            [*pick.passes.items(), (CLOCK_ROW, pick.clock)],
        )
    return [row[0] for row in pick.chosen]


def _tenant_due(
    db: sqlite3.Connection,
    admission: Admission,
    now: int,
    queues: Sequence[str] | None,
    tenant: str,
) -> Iterator[tuple[str, str, str, str]]:
    """One tenant's due jobs best first, for fair_pick, which takes them one at a time.

    When a limit fills, the rows still to come are read again without that limit's
    jobs (as `choose` does): a page cut at the claim's size left the tenant's other
    jobs for the next claim whenever its first page all fell under that limit."""
    given: list[str] = []
    while True:
        full = set(admission.full_keys())
        for row in _due(db, admission, now, queues, None, given, skip_full=True, tenant=tenant):
            given.append(row[0])
            yield row
            if set(admission.full_keys()) != full:
                break  # a limit just filled: ask again without its jobs
        else:
            return


def record_starts(
    db: sqlite3.Connection, admission: Admission, jobs: Sequence[tuple[str, str]], now: int
) -> None:
    """One row per start of a rate-limited key, in the claim's transaction."""
    rows = [(key, now) for queue, type_ in jobs for key in admission.rate_starts(queue, type_)]
    if rows:
        db.executemany("INSERT INTO job_starts (key, at) VALUES (?, ?)", rows)


def take_tokens(
    db: sqlite3.Connection, key: str, rate: float, burst: int, cost: int, now: int
) -> float:
    """JobStore.take_tokens inside the caller's write transaction."""
    row = db.execute("SELECT tokens, at FROM token_buckets WHERE key = ?", (key,)).fetchone()
    if row is None:
        tokens, at = float(burst), now
    else:
        elapsed, stamp = bucket_stamp(row[1] / _MICRO, now / _MICRO)
        tokens, at = refill(row[0], elapsed, rate, burst), int(stamp * _MICRO)
    left, wait = take(tokens, rate, cost)
    db.execute(
        "INSERT INTO token_buckets (key, tokens, at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        (key, left, at),
    )
    return wait
