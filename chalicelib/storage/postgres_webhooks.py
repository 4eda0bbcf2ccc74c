"""The webhook outbox on Postgres: the CTE the transitions carry, and the outbox's
own statements (migration 0005_webhooks.sql holds the table).

`outbox_cte` is spliced into the finish, reap and cancel statements, so the
delivery row is inserted by the very statement that makes the job terminal:
both commit or neither does. Text columns are stored escaped the way the store
escapes all text (postgres._enc), so reads decode them with the given function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from chalicelib.storage.pg_lease import LEASE_END
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery

COLUMNS = (
    "id, job_id, tenant, url, event, state, attempts, next_at, lease_token, "
    "lease_expires_at, created_at, finished_at, last_error"
)


def outbox_cte(source: str, where: str) -> str:
    """A data-modifying CTE: one pending delivery per row of `source` (a CTE that
    RETURNs id, tenant, state and callback_url) that has a URL and matches `where`.
    Uses the statement's %(now)s; ids are msg_ + 128 random bits.

    A second CTE deletes each such job's finished deliveries beyond its newest
    %(hooks_kept)s (SPOOL_WEBHOOK_HISTORY) in the same statement. It sees the rows as they were
    before the statement, which is all it needs: the new delivery is pending,
    and pending ones are never deleted."""
    return (
        f" hooks_{source} AS (INSERT INTO webhook_deliveries"
        " (id, job_id, tenant, url, event, state, attempts, next_at, created_at)"
        " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), id, tenant,"
        " callback_url, 'job.' || state, 'pending', 0, %(now)s, %(now)s"
        f" FROM {source} WHERE callback_url IS NOT NULL AND {where} RETURNING 1),"
        f" pruned_{source} AS (DELETE FROM webhook_deliveries WHERE id IN ("
        f" SELECT old.hook FROM {source} CROSS JOIN LATERAL ("
        " SELECT x.id AS hook FROM webhook_deliveries x"
        f" WHERE x.job_id = {source}.id AND x.state <> 'pending'"
        f" ORDER BY x.created_at DESC, x.id DESC OFFSET %(hooks_kept)s) old"
        f" WHERE {source}.callback_url IS NOT NULL AND {where}) RETURNING 1),"
    )


CLAIM_SQL = (
    "WITH picked AS ("
    " SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= %(now)s"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= %(now)s)"
    " ORDER BY next_at, created_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE webhook_deliveries d SET attempts = d.attempts + 1, lease_token = %(token)s,"
    f" lease_expires_at = {LEASE_END} FROM picked WHERE d.id = picked.id"
    f" RETURNING {', '.join('d.' + c.strip() for c in COLUMNS.split(','))}"
)

FINISH_SQL = (
    "UPDATE webhook_deliveries SET state = %(state)s, next_at = %(next_at)s,"
    " lease_token = NULL, lease_expires_at = NULL, finished_at = %(finished_at)s,"
    " last_error = %(error)s"
    " WHERE id = %(id)s AND lease_token = %(token)s AND state = 'pending' RETURNING id"
)

FOR_JOB_SQL = (
    f"SELECT {COLUMNS} FROM webhook_deliveries WHERE job_id = %(id)s"
    " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s) ORDER BY created_at, id"
)

# Pending and failed only (outbox.COUNTED): each is a partial index.
COUNTS_SQL = (
    "SELECT 'pending', count(*) FROM webhook_deliveries WHERE state = 'pending'"
    " UNION ALL SELECT 'failed', count(*) FROM webhook_deliveries WHERE state = 'failed'"
)


def row_to_delivery(row: Sequence[Any], dec: Callable[[str], str]) -> Delivery:
    return Delivery(
        id=row[0],
        job_id=dec(row[1]),
        tenant=dec(row[2]),
        url=dec(row[3]),
        event=row[4],
        state=row[5],
        attempts=row[6],
        next_at=row[7],
        lease_token=row[8],
        lease_expires_at=row[9],
        created_at=row[10],
        finished_at=row[11],
        last_error=None if row[12] is None else dec(row[12]),
    )


def finish_params(
    delivery_id: str,
    lease_token: str,
    outcome: str,
    retry_at: datetime | None,
    error: str | None,
    now: datetime,
    enc: Callable[[str], str],
) -> dict[str, Any]:
    ended = outcome != outbox.RETRYING
    short = outbox.short_error(error)
    return {
        "state": outcome if ended else outbox.PENDING,
        "next_at": None if ended else (retry_at or now),
        "finished_at": now if ended else None,
        "error": None if short is None else enc(short),
        "id": delivery_id,
        "token": lease_token,
    }
