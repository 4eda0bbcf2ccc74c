"""The SQLite store's queue_totals: a scrape that costs the named queues, not every name.

Counter rows are kept for every queue name ever used, and tenants name queues
freely: a scrape that read them all took seconds with 200,000 names. Triggers
on `counters` keep two summaries in the same transaction as every counter bump,
whichever code path wrote it:

- `queue_volume`: per queue, jobs ever enqueued (a row as soon as the queue has
  any counter), with an index in ranking order, so the busiest N are the first
  N entries of the index;
- `counter_totals`: per (type, event), the sum over every queue, so `_other` is
  the totals less the named queues' own rows (read by primary key).

And a count row of `job_counts` that reaches zero is deleted (a count is a
gauge: absent reads as zero) by the dashboard's trigger that decremented it
(sqlite_dashboard.py), so the per-state counts hold the (tenant, queue, state)
triples that hold jobs now, not every one there ever was; the dashboard's
overview reads the same rows. A file made by an older Spool gets the tables,
triggers and a one-time sum of its counters in one write transaction when it is
first opened (`install`), as the dashboard's counts do.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from chalicelib.models import OTHER_QUEUE, STATE_BY_VALUE, CounterKey, JobState
from chalicelib.storage import stored_rows
from chalicelib.storage.queue_totals import QueueTotals, kept

DDL = (
    "CREATE TABLE IF NOT EXISTS queue_volume (queue TEXT PRIMARY KEY, "
    "enqueued INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS queue_volume_rank ON queue_volume (enqueued DESC, queue)",
    "CREATE TABLE IF NOT EXISTS counter_totals (type TEXT NOT NULL, event TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (type, event)) WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS counters_summed_insert AFTER INSERT ON counters BEGIN "
    "INSERT INTO counter_totals (type, event, n) VALUES (NEW.type, NEW.event, NEW.n) "
    "ON CONFLICT (type, event) DO UPDATE SET n = n + excluded.n; "
    "INSERT INTO queue_volume (queue, enqueued) "
    "VALUES (NEW.queue, CASE WHEN NEW.event = 'enqueued' THEN NEW.n ELSE 0 END) "
    "ON CONFLICT (queue) DO UPDATE SET enqueued = enqueued + excluded.enqueued; END",
    # The counters' upsert (sqlite.BUMP) fires this on its DO UPDATE path.
    "CREATE TRIGGER IF NOT EXISTS counters_summed_update AFTER UPDATE OF n ON counters BEGIN "
    "UPDATE counter_totals SET n = n + NEW.n - OLD.n WHERE type = NEW.type AND event = NEW.event; "
    "UPDATE queue_volume SET enqueued = enqueued + NEW.n - OLD.n "
    "WHERE queue = NEW.queue AND NEW.event = 'enqueued'; END",
)
BACKFILL = (
    "INSERT INTO queue_volume (queue, enqueued) "
    "SELECT queue, SUM(CASE WHEN event = 'enqueued' THEN n ELSE 0 END) FROM counters "
    "GROUP BY queue",
    "INSERT INTO counter_totals (type, event, n) "
    "SELECT type, event, SUM(n) FROM counters GROUP BY type, event",
)
# Count rows left at zero by an older Spool, which kept them.
FORGET_EMPTY = "DELETE FROM job_counts WHERE n = 0"
LAST_TRIGGER = "counters_summed_update"

# The named set: the known queues to keep, and the busiest others off the index.
_KEPT = "SELECT queue FROM queue_volume WHERE queue IN (SELECT value FROM json_each(?))"
_BUSIEST = (
    "SELECT queue FROM queue_volume INDEXED BY queue_volume_rank "
    "WHERE queue NOT IN (SELECT value FROM json_each(?)) ORDER BY enqueued DESC, queue LIMIT ?"
)
_OWN = "SELECT queue, type, event, n FROM counters WHERE queue IN (SELECT value FROM json_each(?))"
_TOTALS = "SELECT type, event, n FROM counter_totals"
_COUNTS = (
    "SELECT CASE WHEN queue IN (SELECT value FROM json_each(?)) THEN queue END, state, SUM(n) "
    "FROM job_counts GROUP BY 1, 2 HAVING SUM(n) > 0"
)


def installed(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?", (LAST_TRIGGER,)
    ).fetchone()
    return bool(row[0])


def install(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction (after the dashboard's tables): the
    summaries, their triggers and, only when the tables are new, the sums of the
    counters already in the file, so nothing counts twice or is missed."""
    if installed(db):
        return
    fresh = not db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'queue_volume'"
    ).fetchone()[0]
    for statement in DDL:
        db.execute(statement)
    if fresh:
        for statement in BACKFILL:
            db.execute(statement)
    db.execute(FORGET_EMPTY)


def read(db: sqlite3.Connection, keep: Sequence[str], busiest: int) -> QueueTotals:
    """The rule of storage/queue_totals.py in five statements, one read snapshot: the
    rows read are the named queues' and the totals', whatever the names ever used."""
    own = db.in_transaction  # a caller's transaction is already one snapshot
    if not own:
        db.execute("BEGIN")
    try:
        return _read(db, keep, busiest)
    finally:
        if not own and db.in_transaction:
            db.rollback()  # a read: nothing to keep, and it ends the snapshot


def _read(db: sqlite3.Connection, keep: Sequence[str], busiest: int) -> QueueTotals:
    """The five statements, inside read()'s snapshot."""
    always = kept(keep)
    named = {q for (q,) in db.execute(_KEPT, (json.dumps(always),))} if always else set()
    if busiest > 0:
        excluded = json.dumps([*always, OTHER_QUEUE])
        named.update(q for (q,) in db.execute(_BUSIEST, (excluded, busiest)))
    names = json.dumps(sorted(named))
    counters: dict[CounterKey, int] = {}
    rest: dict[tuple[str, str], int] = {}
    for type_, event, n in db.execute(_TOTALS):
        rest[(type_, event)] = int(n)
    for queue, type_, event, n in db.execute(_OWN, (names,)):
        if n:
            counters[CounterKey(queue, type_, event)] = int(n)
        rest[(type_, event)] = rest.get((type_, event), 0) - int(n)
    other = False
    for (type_, event), n in rest.items():
        if n > 0:
            counters[CounterKey(OTHER_QUEUE, type_, event)] = n
            other = True
    counts: dict[tuple[str, JobState], int] = {}
    for queue, value, n in db.execute(_COUNTS, (names,)):
        state = stored_rows.counted_state(queue, value, n, STATE_BY_VALUE)
        if state is None:  # a state set by hand: left out, with a WARNING
            continue
        other = other or queue is None
        counts[(OTHER_QUEUE if queue is None else queue, state)] = int(n)
    return QueueTotals(frozenset(named), counters, counts, other)
