"""The webhook outbox in the SQLite file: its table and every statement on it.

The store calls `write_deliveries` inside the transaction of each terminal
transition (finish, reap, cancel), so a job's state change and its webhook
commit together or not at all; the rest is the outbox's own reads and writes.
Times are integer microseconds, as everywhere in the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from chalicelib.ids import new_lease_token
from chalicelib.storage.base import from_micros, utf8_text
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    lease_token TEXT,
    lease_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhook_deliveries (next_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhooks_by_job ON webhook_deliveries (job_id);
CREATE INDEX IF NOT EXISTS webhooks_failed ON webhook_deliveries (created_at)
    WHERE state = 'failed';
-- A purge takes its jobs' deliveries along, in its own transaction.
CREATE TRIGGER IF NOT EXISTS webhooks_follow_jobs AFTER DELETE ON jobs BEGIN
    DELETE FROM webhook_deliveries WHERE job_id = OLD.id;
END;
"""

COLUMNS = (
    "id, job_id, tenant, url, event, state, attempts, next_at, lease_token, "
    "lease_expires_at, created_at, finished_at, last_error"
)
INSERT = (
    "INSERT INTO webhook_deliveries (id, job_id, tenant, url, event, state, attempts, "
    "next_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)

# A job's finished deliveries beyond its newest `kept` (pending ones stay).
PRUNE = (
    "DELETE FROM webhook_deliveries WHERE job_id = ? AND state != 'pending' AND id NOT IN "
    "(SELECT id FROM webhook_deliveries WHERE job_id = ? AND state != 'pending' "
    "ORDER BY created_at DESC, id DESC LIMIT ?)"
)


def write_deliveries(
    db: sqlite3.Connection,
    terminal: Iterable[tuple[str, str, str | None, str]],
    now: int,
    kept: int,
) -> None:
    """One pending delivery per (job id, tenant, callback URL, terminal state) that
    has a URL, and each such job's finished deliveries beyond the newest `kept`
    (SPOOL_WEBHOOK_HISTORY) dropped; called inside the transition's transaction."""
    rows = [
        (outbox.new_delivery_id(), job_id, tenant, url, outbox.event_for(state), now, now)
        for job_id, tenant, url, state in terminal
        if url
    ]
    if rows:
        db.executemany(INSERT, rows)
        db.executemany(PRUNE, [(r[1], r[1], kept) for r in rows])


def row_to_delivery(row: Sequence[Any]) -> Delivery:
    def maybe(value: int | None) -> Any:
        return None if value is None else from_micros(value)

    return Delivery(
        id=row[0],
        job_id=row[1],
        tenant=row[2],
        url=row[3],
        event=row[4],
        state=row[5],
        attempts=row[6],
        next_at=maybe(row[7]),
        lease_token=row[8],
        lease_expires_at=maybe(row[9]),
        created_at=from_micros(row[10]),
        finished_at=maybe(row[11]),
        last_error=row[12],
    )


def claim(db: sqlite3.Connection, limit: int, now: int, expires: int) -> list[Delivery]:
    """Due pending deliveries, earliest first, leased and counted (inside a write)."""
    rows = db.execute(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_token = ?, "
        "lease_expires_at = ? WHERE id IN (SELECT id FROM webhook_deliveries "
        "WHERE state = 'pending' AND next_at <= ? "
        "AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
        f"ORDER BY next_at, created_at, id LIMIT ?) RETURNING {COLUMNS}",
        (new_lease_token(), expires, now, now, max(0, limit)),
    ).fetchall()
    found = [row_to_delivery(r) for r in rows]
    found.sort(key=lambda d: (d.next_at, d.created_at, d.id))
    return found


def finish(
    db: sqlite3.Connection,
    delivery_id: str,
    lease_token: str,
    outcome: str,
    retry_at: int | None,
    error: str | None,
    now: int,
) -> bool:
    ended = outcome != outbox.RETRYING
    row = db.execute(
        "UPDATE webhook_deliveries SET state = ?, next_at = ?, lease_token = NULL, "
        "lease_expires_at = NULL, finished_at = ?, last_error = ? "
        "WHERE id = ? AND lease_token = ? AND state = 'pending' RETURNING id",
        (
            outcome if ended else outbox.PENDING,
            None if ended else (now if retry_at is None else retry_at),
            now if ended else None,
            utf8_text(outbox.short_error(error)),
            delivery_id,
            lease_token,
        ),
    ).fetchone()
    return row is not None


def for_job(db: sqlite3.Connection, job_id: str) -> list[Delivery]:
    rows = db.execute(
        f"SELECT {COLUMNS} FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id",
        (job_id,),
    ).fetchall()
    return [row_to_delivery(r) for r in rows]


def counts(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute(
        "SELECT state, COUNT(*) FROM webhook_deliveries WHERE state IN ('pending', 'failed') "
        "GROUP BY state"
    ).fetchall()
    return {state: n for state, n in rows}
