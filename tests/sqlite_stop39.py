"""A SQLite file as Spool left it up to stop 39: its count triggers, copied as they were.

Upgrade tests turn a file made by this Spool back into one made by the old code, then
open it with this one.
"""

from __future__ import annotations

import sqlite3

# sqlite_dashboard.py's and sqlite_queue_totals.py's count triggers of stops 36-39.
OLD_COUNT_TRIGGERS = (
    "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs "
    "WHEN OLD.state IS NOT NEW.state BEGIN "
    "UPDATE job_counts SET n = n - 1 "
    "WHERE tenant = OLD.tenant AND queue = OLD.queue AND state = OLD.state; "
    "INSERT INTO job_counts (tenant, queue, state, n) VALUES (NEW.tenant, NEW.queue, NEW.state, 1) "
    "ON CONFLICT (tenant, queue, state) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN "
    "UPDATE job_counts SET n = n - 1 "
    "WHERE tenant = OLD.tenant AND queue = OLD.queue AND state = OLD.state; END",
)
OLD_EMPTIED_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS job_counts_emptied AFTER UPDATE OF n ON job_counts "
    "WHEN NEW.n = 0 BEGIN DELETE FROM job_counts "
    "WHERE tenant = NEW.tenant AND queue = NEW.queue AND state = NEW.state; END"
)


def old_count_triggers(path: str, emptied: bool = True) -> None:
    """Put the old count triggers in place of this Spool's (`emptied`: with the one
    stop 36 added; without it, the file is from before stop 36)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DROP TRIGGER jobs_count_moved")
        db.execute("DROP TRIGGER jobs_count_removed")
        for statement in OLD_COUNT_TRIGGERS:
            db.execute(statement)
        if emptied:
            db.execute(OLD_EMPTIED_TRIGGER)
        db.execute("COMMIT")
    finally:
        db.close()


def triggers(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
