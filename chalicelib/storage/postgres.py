"""Postgres: the store for many workers on many machines.

`SPOOL_STORE_URL=postgresql://user@host:5432/db?schema=spool&pool_max=10`.
Options Spool reads from the URL (the rest go to libpq untouched):
`schema` (tables live there; default: the server's search_path),
`pool_min` / `pool_max` (connections per process), `pool_timeout` (seconds a
call waits for a connection before it answers StoreUnavailable).

How it keeps the JobStore contract with many claimers:
- Claims are one UPDATE over `SELECT ... FOR UPDATE SKIP LOCKED LIMIT n`:
  concurrent workers never wait on each other's rows and never take the same
  job. Expired leases are reaped (with SKIP LOCKED too) just before, in the
  same round trip.
- Every write is one statement whose data-modifying CTEs also upsert the
  counters (an enqueue appends to `enqueued_log` instead: no shared row to
  lock), so a transition and its counters commit together. Wake-ups are
  `pg_notify` inside the same statement: delivered only once it commits.
- A claim with a limits or fairness policy first takes a per-schema advisory
  lock, then counts, chooses and claims in the same transaction
  (postgres_limits), so workers never together exceed a limit: two round trips
  when the lock is free (pg_pipeline.py). Claims without
  one never take it and read nothing more.
- Times come from the injected Clock and are passed as parameters; SQL never
  calls now(), so tests drive time with a FakeClock. Without one the clock is
  the server's (store_clock.ServerClock: clock_timestamp() read every 30 s on a
  held connection), so hosts whose clocks disagree still agree on leases and beats.
- A lost connection surfaces as StoreUnavailable (HTTP 503, worker backs off);
  the pool replaces dead connections on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from chalicelib import worker_id
from chalicelib.clock import Clock, SystemClock
from chalicelib.errors import (
    InvalidTransition,
    JobNotFound,
    StoreNotMigrated,
    StoreUnavailable,
    UncertainWrite,
)
from chalicelib.fdwait import readable
from chalicelib.ids import new_lease_token
from chalicelib.limits import ClaimPolicy, Hold
from chalicelib.models import (
    OTHER_QUEUE,
    STATE_BY_VALUE,
    AddResult,
    Attempt,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    MinuteTally,
    NewJob,
    WorkerBeat,
    queued_job,
    trusted_job,
)
from chalicelib.number_text import too_small, underflows
from chalicelib.redact import redact_text, redact_url
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.storage import (
    config_error,
    history,
    migrations,
    pg_deadline,
    pg_noise,
    pg_pooler,
    pg_refusals,
    postgres_limits,
    postgres_webhooks,
    refuse_repeated,
    stored_rows,
    unknown_option,
)
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    MINUTES_KEPT,
    Backlog,
    StoreUnreachable,
    check_limit,
    decode_cursor,
    encode_cursor,
    epoch_after_emptyings,
    from_micros,
    log_buried_by_reap,
    minute_of,
    redrive_fit,
)
from chalicelib.storage.pg_lease import LEASE_END
from chalicelib.storage.pg_pipeline import pipelined_transaction
from chalicelib.storage.queue_totals import QueueTotals, fold, kept
from chalicelib.storage.store_clock import ServerClock
from chalicelib.storage.stored_rows import stored_json
from chalicelib.store_outage import Quiet
from chalicelib.webhooks import outbox as webhook_outbox
from chalicelib.webhooks.outbox import Delivery

log = logging.getLogger("spool.postgres")


class _ReconnectNoise(logging.Filter):
    """psycopg_pool logs every failed reconnect at WARNING, several a second while
    the database is down. The first names why (a refused password, a host that does
    not answer), so one a minute is let through; the outage itself is said by the
    worker (store_outage.Outage)."""

    EVERY = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("reconnection attempt in pool"):
            return False  # every RECONNECT_WINDOW of an outage; it names no reason
        if not str(record.msg).startswith("error connecting in"):
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.EVERY
        return True


pg_noise.install()
_pool_log = logging.getLogger("psycopg.pool")
if not any(isinstance(f, _ReconnectNoise) for f in _pool_log.filters):
    _pool_log.addFilter(_ReconnectNoise())

T = TypeVar("T")
N = TypeVar("N", int, float)
Conn = psycopg.Connection[Any]

NOT_MIGRATED = "database is not migrated: run `spool db migrate`"
# /health's answer for a database that takes no writes (check_writable).
READ_ONLY_HEALTH = (
    "the database is read-only (a standby, or default_transaction_read_only is on): "
    "point SPOOL_STORE_URL at the primary, or turn default_transaction_read_only off"
)
# Counter rows per (queue, type, event): concurrent writers pick one at random.
COUNTER_SHARDS = 16
# A claim reaps at most this many expired leases; the next claim takes the rest.
REAP_BATCH = 1000
PURGE_BATCH = 5000
DEADLOCK_RETRIES = 5
# How long the pool keeps trying to make one connection before it gives up on it.
# psycopg_pool waits 1, 2, 4, 8 ... s between tries, without a ceiling, until this
# window closes: with a window of a day, an outage of T seconds left its next try up
# to T seconds after the database was back (minutes of 503s after a long restart).
# Once a window closes the pool drops the slot, and the next caller that waits for a
# connection starts a fresh run of tries, the first at once: so the pool tries again
# whenever it is asked, and never waits more than about a second between tries. A
# caller already waiting asks again each window (_getconn), which starts one too.
RECONNECT_WINDOW = 2.0
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,56}$")
_SPOOL_OPTIONS = (
    "schema",
    "pool_min",
    "pool_max",
    "pool_timeout",
    "durability",
    "statement_timeout",
)
# Seconds a statement may run or wait for a lock before the server cancels it; a call
# that has no answer CUT_GRACE seconds after that is cut on the client (pg_deadline).
STATEMENT_TIMEOUT = 30.0
CUT_GRACE = 5.0
# normal: claims commit without waiting for the WAL flush (a server crash may undo a
# claim, and the job simply runs again); full: every commit waits, claims included.
DURABILITY_MODES = ("normal", "full")

COLUMNS = (
    "id, tenant, type, queue, priority, payload, state, attempts, max_attempts, run_at, "
    "lease_token, lease_expires_at, result, last_error, idempotency_key, created_at, "
    "updated_at, started_at, finished_at"
)
J_COLUMNS = ", ".join(f"j.{c.strip()}" for c in COLUMNS.split(","))
# COLUMNS without the payload and result (JobQuery.bodies), in the same places.
SUMMARY_COLUMNS = COLUMNS.replace("payload", "'{}'").replace("result", "NULL")

# `pending` and `dirty` (migration 0008): what the next scrape folds into its summaries.
UPSERT_COUNTERS = (
    "INSERT INTO counters (queue, type, event, shard, n, pending, dirty) "
    "SELECT queue, type, event, %(shard)s, count(*), count(*), true FROM {source} "
    "GROUP BY queue, type, event ORDER BY queue, type, event "
    "ON CONFLICT (queue, type, event, shard) DO UPDATE SET n = counters.n + excluded.n, "
    "pending = counters.pending + excluded.n, dirty = true"
)

# JobStore.queue_totals (migration 0008 keeps the summaries): first the rows changed
# since the last scrape are folded into them; then, in one snapshot, the known queues
# among %(keep)s and the %(busiest)s others by jobs ever enqueued, then by name
# (COLLATE "C": code point order), off queue_volume's index; the named queues' own
# rows (their folded parts, n - pending, so they match the totals in any snapshot);
# and the totals, which less the named rows are `_other`'s.
FOLD_SQL = ("SELECT spool_fold_counters()", "SELECT spool_fold_job_counts()")
NAMED_SQL = (
    "SELECT queue FROM queue_volume WHERE queue = ANY(%(keep)s::text[])"
    " UNION ALL (SELECT queue FROM queue_volume WHERE queue <> ALL(%(excluded)s::text[])"
    " ORDER BY enqueued DESC, queue LIMIT %(busiest)s)"
)
NAMED_COUNTERS_SQL = (
    "SELECT queue, type, event, sum(n - pending)::bigint FROM counters"
    " WHERE queue = ANY(%(named)s::text[]) GROUP BY queue, type, event"
)
COUNTER_TOTALS_SQL = "SELECT type, event, n FROM counter_totals"
NAMED_COUNTS_SQL = (
    "SELECT queue, state, n FROM queue_state_counts WHERE queue = ANY(%(named)s::text[])"
)
STATE_TOTALS_SQL = "SELECT state, n FROM state_totals"

# The columns an enqueue writes, each as (array parameter, row name, SQL type).
_ADD_COLUMNS = (
    ("ids", "id", "text"),
    ("tenants", "tenant", "text"),
    ("types", "type", "text"),
    ("queues", "queue", "text"),
    ("priorities", "priority", "int"),
    ("payloads", "payload", "text"),
    ("max_attempts", "max_attempt", "int"),
    ("run_ats", "run_at", "timestamptz"),
    ("keys", "key", "text"),
    ("callback_urls", "callback_url", "text"),
)
# The dashboard's `queued` counts for the rows inserted, in the enqueue's own statement
# (migration 0009): cheaper than 0004's statement trigger, which the set_config in
# _ADD_TEMPLATE turns off for this transaction. Shards as the triggers pick them.
UPSERT_QUEUED_COUNTS = (
    "INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)"
    " SELECT tenant, queue, 'queued', pg_backend_pid() %% 16, count(*), count(*), true"
    " FROM ins GROUP BY tenant, queue ORDER BY tenant, queue"
    " ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n,"
    " pending = job_counts.pending + excluded.n, dirty = true"
)
# The enqueue's `enqueued` counts (migration 0010): appended to enqueued_log, a table
# without an index, one row per (queue, type) stored, instead of an upsert of a
# shared counters row (a probe, a row lock to commit, an update). JobStore.counters
# adds the log to the counters; the scrape's fold and each beat move it into them.
# A single enqueue's `ins` holds at most one row, taken as it is: no sort and no
# aggregate in front of either write (about 20 us of its server time).
_COUNT_ONE = (
    " logged AS (INSERT INTO enqueued_log (queue, type, n) SELECT queue, type, 1 FROM ins),"
    " counted AS (INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)"
    " SELECT tenant, queue, 'queued', pg_backend_pid() %% 16, 1, 1, true FROM ins"
    " ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + 1,"
    " pending = job_counts.pending + 1, dirty = true)"
)
_COUNT_MANY = (
    " logged AS (INSERT INTO enqueued_log (queue, type, n)"
    " SELECT queue, type, count(*) FROM ins GROUP BY queue, type),"
    " counted AS (" + UPSERT_QUEUED_COUNTS + ")"
)
FOLD_ENQUEUED_SQL = "SELECT spool_fold_enqueued()"
# set_config is volatile, so it runs for each row read, before the insert ends and
# jobs_counted_insert's WHEN is checked: this statement's rows are counted once, here.
_ADD_TEMPLATE = (
    "WITH ins AS ("
    " INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, max_attempts,"
    " run_at, idempotency_key, created_at, updated_at, callback_url)"
    " SELECT {id}, {tenant}, {type}, {queue}, {priority}, {payload}, 'queued', {max_attempt},"
    " {run_at}, {key}, %(now)s, %(now)s, {callback_url}"
    " FROM {rows}"
    " WHERE set_config('spool.inserts_counted', 'on', true) = 'on'"
    " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING id, tenant, queue, type),"
    "{counts}"
    "{answer}"
)
# What add reads back: the ids stored (a keyed row another process stored first is
# not), with the wake-up sent when any was.
_ANSWER_IDS = " SELECT id, (SELECT pg_notify(%(channel)s, '')) IS NULL FROM ins"
# A batch without keys: nothing can conflict, so every row is stored or the statement
# fails; no ids come back, only the wake-up (WITH's inserts run whether read or not).
_ANSWER_NONE = " SELECT pg_notify(%(channel)s, '')"


@functools.cache
def add_sql(shared: frozenset[str] = frozenset(), keyless: bool = False) -> str:
    """A batch's statement: one row per element of parallel arrays, sent in binary
    (psycopg dumps a text array element by element through a quoting regex, ~15 us a
    job for the ten columns; a binary one without). The columns named in `shared`
    (row names; never the id or the payload) hold one value for every job of the
    batch and go as one scalar each instead: psycopg dumps a binary array's elements
    one by one in Python (about 1-2 us each), and a batch's tenant is always one, its
    unkeyed part has no keys, and its jobs mostly share their type, queue, priority
    and attempts. At most 2**9 statements, each prepared once per connection.
    `keyless`: a batch without keys, which reads no ids back (_ANSWER_NONE)."""
    arrays = [(a, r, t) for a, r, t in _ADD_COLUMNS if r not in shared]
    alias = ", ".join(r for _, r, _ in arrays)
    values = {r: f"%({r})s::{t}" if r in shared else f"u.{r}" for _, r, t in _ADD_COLUMNS}
    rows = "unnest(" + ", ".join(f"%({a})b::{t}[]" for a, _, t in arrays) + f") AS u({alias})"
    answer = _ANSWER_NONE if keyless else _ANSWER_IDS
    return _fill(_ADD_TEMPLATE, rows=rows, counts=_COUNT_MANY, answer=answer, **values)


def _fill(template: str, **parts: str) -> str:
    """`template` with each {name} replaced (not str.format: the SQL has other braces)."""
    for name, text in parts.items():
        template = template.replace("{" + name + "}", text)
    return template


ADD_SQL = add_sql()  # every column an array
# One job (the common single enqueue): a VALUES row of scalars. Postgres parses no
# arrays and plans no function scan, about a third less server time per statement.
ADD_ONE_SQL = _fill(
    _ADD_TEMPLATE,
    rows="(VALUES ("
    + ", ".join(f"%({r})s::{t}" for _, r, t in _ADD_COLUMNS)
    + ")) AS u("
    + ", ".join(r for _, r, _ in _ADD_COLUMNS)
    + ")",
    counts=_COUNT_ONE,
    answer=_ANSWER_IDS,
    **{r: f"u.{r}" for _, r, _ in _ADD_COLUMNS},
)


# One job without a key (PostgresStore._add_one, the common call): nothing can conflict
# (a repeated id fails the statement whole), so the row goes in with a plain INSERT of
# scalars, and the two counts take the call's own values instead of reading the row
# back: no ON CONFLICT arbiter on jobs, no RETURNING and no CTE scan of it, about
# 20-30 us of server time (docs/benchmarks.md, stop 43). set_config sits in the jobs
# insert's own SELECT, so it runs before that insert ends and the trigger's WHEN is
# checked (see _ADD_TEMPLATE). Nothing is read back: the wake-up is the answer.
ADD_KEYLESS_ONE_SQL = (
    "WITH ins AS ("
    " INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, max_attempts,"
    " run_at, created_at, updated_at, callback_url)"
    " SELECT %(id)s::text, %(tenant)s::text, %(type)s::text, %(queue)s::text,"
    " %(priority)s::int, %(payload)s::text, 'queued', %(max_attempt)s::int,"
    " %(run_at)s::timestamptz, %(now)s, %(now)s, %(callback_url)s::text"
    " WHERE set_config('spool.inserts_counted', 'on', true) = 'on'),"
    " logged AS (INSERT INTO enqueued_log (queue, type, n) VALUES (%(queue)s, %(type)s, 1)),"
    " counted AS (INSERT INTO job_counts (tenant, queue, state, shard, n, pending, dirty)"
    " VALUES (%(tenant)s, %(queue)s, 'queued', pg_backend_pid() %% 16, 1, 1, true)"
    " ON CONFLICT (tenant, queue, state, shard) DO UPDATE SET n = job_counts.n + 1,"
    " pending = job_counts.pending + 1, dirty = true)"
    " SELECT pg_notify(%(channel)s, '')"
)


def append_attempt(log: str, entry: str) -> str:
    """SQL for `log` (a jsonb array or NULL) with `entry` (jsonb, or NULL for nothing)
    appended, keeping the last %(keep)s entries: one `||` until the history is full,
    then a rebuild from its last keep - 1 entries."""
    return (
        f"CASE WHEN {entry} IS NULL THEN {log}"
        f" WHEN {log} IS NULL THEN jsonb_build_array({entry})"
        f" WHEN jsonb_array_length({log}) < %(keep)s::int THEN {log} || jsonb_build_array({entry})"
        f" ELSE COALESCE((SELECT jsonb_agg(t.e ORDER BY t.i) FROM jsonb_array_elements({log})"
        f" WITH ORDINALITY AS t(e, i) WHERE t.i > jsonb_array_length({log}) - %(keep)s::int + 1),"
        f" '[]'::jsonb) || jsonb_build_array({entry}) END"
    )


def _micros_sql(column: str) -> str:
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


# The attempt a reap records (storage/history.py's encoding, built in SQL).
_REAPED_ATTEMPT = (
    "jsonb_build_object('n', j.attempts,"
    f" 's', {_micros_sql('COALESCE(j.started_at, j.lease_expires_at)')},"
    f" 'f', {_micros_sql('j.lease_expires_at')},"
    " 'w', COALESCE(j.lease_worker, 'unknown'), 'o', 'lease_expired', 'e', %(error)s::text,"
    " 'd', CASE WHEN j.attempts >= j.max_attempts THEN NULL ELSE 0.0 END)"
)

# A claim under a policy may send its reap before it knows it holds the limits' lock
# (postgres_limits.try_lock): gated (postgres_limits.LOCK_GATE), the reap runs only
# under the lock, so it never holds rows or counters locked while that claim goes on
# to wait for the lock.


def _reap_pick(gate: str) -> str:
    return (
        "WITH picked AS ("
        f" SELECT id, unstarted FROM jobs WHERE {gate}state = 'running'"
        f" AND lease_expires_at <= %(now)s"
        f" ORDER BY lease_expires_at LIMIT {REAP_BATCH} FOR UPDATE SKIP LOCKED),"
    )


_REAP_REST = (
    # A lease its claimer never started (JobStore.start) gives its attempt back: the
    # job waits again, due now, and nothing ended, so nothing is counted or recorded.
    " given_back AS ("
    " UPDATE jobs j SET state = 'queued', attempts = greatest(j.attempts - 1, 0),"
    " run_at = %(now)s, lease_token = NULL, lease_expires_at = NULL, lease_worker = NULL,"
    " unstarted = NULL, updated_at = %(now)s"
    " FROM picked WHERE j.id = picked.id AND picked.unstarted RETURNING j.id),"
    " expired AS ("
    " UPDATE jobs j SET"
    " state = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'retrying' END,"
    " run_at = CASE WHEN j.attempts >= j.max_attempts THEN j.run_at ELSE %(now)s END,"
    " finished_at = CASE WHEN j.attempts >= j.max_attempts THEN %(now)s::timestamptz END,"
    " lease_token = NULL, lease_expires_at = NULL, last_error = %(error)s, updated_at = %(now)s,"
    f" attempt_log = {append_attempt('j.attempt_log', _REAPED_ATTEMPT)}, lease_worker = NULL"
    " FROM picked WHERE j.id = picked.id AND picked.unstarted IS NOT TRUE"
    " RETURNING j.id, j.tenant, j.queue, j.type, j.state, j.attempts, j.max_attempts,"
    " j.callback_url),"
    + postgres_webhooks.outbox_cte("expired", "state = 'dead'")
    + " counted AS ("
    + UPSERT_COUNTERS.format(
        source="(SELECT queue, type, e.event FROM expired, LATERAL (VALUES ('failed'),"
        " (CASE WHEN state = 'dead' THEN 'dead' ELSE 'retried' END)) AS e(event)) AS x"
    )
    # The jobs this reap buried (their last attempt's lease expired): the store logs
    # them, since no worker sees that outcome.
    + ") SELECT id, tenant, type, queue, attempts, max_attempts FROM expired"
    " WHERE state = 'dead'"
)
REAP_SQL = _reap_pick("") + _REAP_REST
GATED_REAP_SQL = _reap_pick(postgres_limits.LOCK_GATE + " AND ") + _REAP_REST


def numbered(query: str) -> tuple[str, tuple[str, ...]]:
    """`query` with its %(name)s placeholders as $1, $2...: the names, in that order.

    For a statement longer than psycopg caches the parse of (4,096 characters; the
    gated reap is just over): sent by a RawCursor, it is not split into its parts
    again on every call (~60-90 us of a claim's CPU)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, query)
    assert "%" not in numbered, "only %(name)s placeholders, and no literal %, are numbered"
    return numbered, tuple(names)


_GATED_REAP = numbered(GATED_REAP_SQL)


def gated_reap(conn: Conn, params: dict[str, Any]) -> psycopg.RawCursor[Any]:
    """GATED_REAP_SQL with `params`, sent as numbered placeholders."""
    query, names = _GATED_REAP
    cur = psycopg.RawCursor(conn)
    cur.execute(query, [params[name] for name in names])
    return cur


SYNC_OFF = "SET LOCAL synchronous_commit = off"


# JobStore.start: the claimed jobs whose handlers are about to run, while each
# lease is still the caller's and live. A job is marked only if it is `running`, but
# that is read from RETURNING (start() keeps those rows), not put in the WHERE: with it
# there the partial index jobs_leases (WHERE state = 'running') can serve the scan, and
# with statistics from before the jobs were claimed (an analyze of a fresh backlog, as a
# claim runs) the planner expects it to hold one row and scans every running job for
# the 5 ids: 0.3 ms beside 150 running jobs, 13 ms beside 5,000. Without it only the
# primary key finds the rows. The SET changes nothing on a row that is not running:
# unstarted is NULL there, whoever moved it (migration 0012's trigger).
_START = (
    "UPDATE jobs j SET unstarted = NULL"
    " FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS s(id, token){sync_off}"
    " WHERE j.id = s.id AND j.lease_token = s.token"
    " AND j.lease_expires_at > %(now)s RETURNING j.id, j.state"
)
# The marks as one statement, its own transaction on the autocommit connection, whose
# commit waits for no WAL flush (as SYNC_OFF: set_config(..., true) lasts to the
# transaction's end; a mark that wrote a row read it, joined to every row written). One
# statement to send instead of BEGIN, SET LOCAL, the UPDATE and COMMIT: the marks are
# the drain's critical path, and psycopg's work to queue four statements was ~0.4 ms of
# a ~1.3 ms write in a no-op drain (stop 54).
START_FAST_SQL = _START.format(
    sync_off=", (SELECT set_config('synchronous_commit', 'off', true)) AS sync_off"
)
START_SQL = _START.format(sync_off="")

# The finish and the lease extension keep their `running` guard in the WHERE (one moves
# the job, the other writes its lease), but as `j.state = <list>.was`, a column of the
# MATERIALIZED list they join: a join clause, which the partial index jobs_leases'
# predicate (state = 'running') does not follow from, so only the primary key finds
# their rows. Written `j.state = 'running'`, with statistics from before the jobs were
# claimed, the planner took jobs_leases for one row and read every running job: an
# extension of 20 beside 5,000 running 2.95 ms against 0.47 (stop 54, as START_SQL).
_RUNNING_COLUMN = "'running'::text AS was"

# Renews leases, each by (id, token), while live: extend_lease's rule for many at once.
EXTEND_SQL = (
    f"WITH s AS MATERIALIZED (SELECT *, {_RUNNING_COLUMN}"
    " FROM unnest(%(ids)b::text[], %(tokens)b::text[]) AS s(id, token))"
    f" UPDATE jobs j SET lease_expires_at = {LEASE_END}, updated_at = %(now)s"
    " FROM s WHERE j.id = s.id AND j.lease_token = s.token AND j.state = s.was"
    " AND j.lease_expires_at > %(now)s RETURNING j.id"
)

# Moves the rows of `picked` to running: both claims below share it. The rows are found
# by primary key, as an array of ids: joined to `picked`, the planner hashed the ~50 ids
# and scanned the whole table for them (it costed that below 50 index probes up to ~20k
# rows), 1-2 ms of server time per claim, and more as finished jobs pile up.
_CLAIM_PICKED = (
    " UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_token = %(token)s,"
    f" lease_expires_at = {LEASE_END}, started_at = %(now)s, updated_at = %(now)s,"
    " lease_worker = %(worker)s, unstarted = %(unstarted)s::boolean"
    f" WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) RETURNING {J_COLUMNS}"
)

CLAIM_SQL = (
    "WITH picked AS ("
    " SELECT id FROM jobs WHERE state IN ('queued', 'retrying') AND run_at <= %(now)s{filters}"
    " ORDER BY priority DESC, run_at, created_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    + _CLAIM_PICKED
)
# The jobs a claim took, found by its lease token after its reply was lost
# (PostgresStore._claimed_before): the running rows, by the jobs_leases index.
CLAIMED_BY_SQL = f"SELECT {COLUMNS} FROM jobs WHERE state = 'running' AND lease_token = %s"
# A claim under a policy: postgres_limits.choose picked (and locked) the rows.
CLAIM_CHOSEN_SQL = postgres_limits.claim_chosen_sql(_CLAIM_PICKED)
# The backlog lock's space (postgres_limits.LOCK_SPACE + 1; migrations use 0x5B001).
BACKLOG_LOCK_SPACE = 0x5B003
LOCK_SQL = postgres_limits.LOCK_SQL

FINISH_SQL = (
    f"WITH c AS MATERIALIZED (SELECT *, {_RUNNING_COLUMN}"
    " FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(states)b::text[],"
    " %(results)b::text[], %(errors)b::text[], %(retry_ats)b::timestamptz[],"
    " %(attempts)b::text[])"
    " AS c(id, token, state, result, error, retry_at, attempt)),"
    " done AS ("
    " UPDATE jobs j SET state = c.state, result = c.result, last_error = c.error,"
    " run_at = COALESCE(c.retry_at, j.run_at), lease_token = NULL, lease_expires_at = NULL,"
    " updated_at = %(now)s,"
    " finished_at = CASE WHEN c.state = 'retrying' THEN NULL ELSE %(now)s::timestamptz END,"
    f" attempt_log = {append_attempt('j.attempt_log', 'c.attempt::jsonb')}"
    " FROM c WHERE j.id = c.id AND j.lease_token = c.token AND j.state = c.was"
    " RETURNING j.id, j.queue, j.type, j.state, j.tenant, j.callback_url),"
    + postgres_webhooks.outbox_cte("done", "state <> 'retrying'")
    + " bump AS ("
    + UPSERT_COUNTERS.format(
        source="(SELECT queue, type, e.event FROM done, unnest(CASE state"
        " WHEN 'succeeded' THEN ARRAY['succeeded'] WHEN 'retrying' THEN ARRAY['failed', 'retried']"
        " ELSE ARRAY['failed', 'dead'] END) AS e(event)) AS x"
    )
    + ") SELECT id FROM done"
)

CANCEL_SQL = (
    "WITH done AS ("
    " UPDATE jobs SET state = 'cancelled', updated_at = %(now)s, finished_at = %(now)s"
    " WHERE id = %(id)s AND state IN ('queued', 'retrying')"
    " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
    f" RETURNING {COLUMNS}, callback_url),"
    + postgres_webhooks.outbox_cte("done", "true")
    + " bump AS ("
    + UPSERT_COUNTERS.format(source="(SELECT queue, type, 'cancelled' AS event FROM done) AS e")
    + f") SELECT {COLUMNS} FROM done"
)

# The rows are locked in id order first: an UPDATE ... WHERE id = ANY(...) locks them in
# its plan's order (index order for a few ids, heap order for many), so two redrives of
# overlapping dead jobs could each hold a row the other waits for (deadlock detected:
# 503 after deadlock_timeout). Waiting on a locked row re-checks state = 'dead', so a
# job a racing redrive (or discard) moved is skipped.
REDRIVE_CHUNK = 1000  # ids per statement
REDRIVE_SQL = (
    "WITH locked AS MATERIALIZED ("
    " SELECT id FROM jobs WHERE id = ANY(%(ids)s::text[]) AND state = 'dead'"
    " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
    ' ORDER BY id COLLATE "C" FOR UPDATE),'
    " moved AS ("
    " UPDATE jobs SET state = 'queued', attempts = 0, run_at = %(now)s, result = NULL,"
    # RedriveAttempts.cut: the type's bound from the listed types, else the ceiling.
    " max_attempts = CASE WHEN %(ceiling)s::int IS NULL THEN max_attempts ELSE LEAST("
    " max_attempts, COALESCE((SELECT b.most FROM unnest(%(types)s::text[], %(mosts)s::int[])"
    " AS b (type, most) WHERE b.type = jobs.type), %(ceiling)s::int)) END,"
    " finished_at = NULL, updated_at = %(now)s"
    " WHERE id IN (SELECT id FROM locked) AND state = 'dead'"
    f" RETURNING {COLUMNS})"
    f" SELECT {COLUMNS}, (SELECT pg_notify(%(channel)s, '')) IS NULL FROM moved"
)

# JobStore.cache_epoch(tenant), migration 0007: a row per tenant, made by its first
# bump. The update and delete triggers (migrations 0014, 0013) bump it at the end of
# each statement that changed a finished job or deleted one, after its rows are locked,
# for redrive, purge, discard and SQL by hand alike, taking the epoch rows in tenant
# order. So all lock jobs before epoch rows, and epoch rows in tenant order: no
# deadlock. A redrive of more ids than one statement takes locks them all first
# (REDRIVE_LOCK_SQL): its first statement's bump must not hold an epoch row while a
# later one waits for a job a purge holds, whose own bump waits for that epoch row.
REDRIVE_LOCK_SQL = (
    "SELECT id FROM jobs WHERE id = ANY(%(ids)s::text[]) AND state = 'dead'"
    " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
    ' ORDER BY id COLLATE "C" FOR UPDATE'
)


# JobStore.cache_epoch(tenant) reads the tenant's row and the identity of the storage
# of the jobs and tenant_epochs tables: TRUNCATE gives a table a new file, and so does a
# schema or database dropped and migrated again. Those empty the store under a running
# process and leave a never-touched tenant's epoch at 0, what its caches already held:
# they kept answering "succeeded" for jobs the store no longer had, for their whole TTL
# (found by a chaos run, s49). VACUUM FULL and CLUSTER give new files too: a cache
# emptied for nothing, once. to_regclass resolves the names as the statements do.
EPOCH_SQL = (
    "SELECT (SELECT n FROM tenant_epochs WHERE tenant = %s),"
    " pg_relation_filenode(to_regclass('jobs')),"
    " pg_relation_filenode(to_regclass('tenant_epochs'))"
)


PURGE_SQL = (
    "WITH doomed AS ("
    " SELECT id FROM jobs WHERE finished_at < %(before)s"
    " AND state IN ('succeeded', 'dead', 'cancelled')"
    " ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM jobs j USING doomed WHERE j.id = doomed.id RETURNING j.id)"
    " SELECT count(*) FROM gone"
)


# -- text that Postgres cannot hold -----------------------------------------
# Postgres text refuses NUL, and UTF-8 cannot carry lone surrogates; handler
# errors and client keys may contain either. They are stored escaped as
# U+FFFE + 4 hex digits (U+FFFE itself is escaped the same way), which is
# reversible and leaves every ordinary string as it is.
# Compact JSON from one encoder: json.dumps(separators=...) builds a new one per call
# (~1.2 us of a batch enqueue's ~20 us of Python per job).
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_ESCAPE = re.compile("[\x00\ufffe\ud800-\udfff]")
_UNESCAPE = re.compile("\ufffe([0-9a-f]{4})")


def _enc(value: str) -> str:
    if value.isascii() and "\x00" not in value:
        return value
    return _ESCAPE.sub(lambda m: f"\ufffe{ord(m[0]):04x}", value)


def _enc_opt(value: str | None) -> str | None:
    return None if value is None else _enc(value)


def _dec(value: str | None) -> str | None:
    if value is None or "\ufffe" not in value:
        return value
    return _UNESCAPE.sub(lambda m: chr(int(m[1], 16)), value)


def _dec_str(value: str) -> str:
    return value if "\ufffe" not in value else _UNESCAPE.sub(lambda m: chr(int(m[1], 16)), value)


def _claimed(row: Sequence[Any]) -> stored_rows.Unrunnable:
    """What a finish needs of a claimed row: fields the claim itself wrote."""
    return stored_rows.Unrunnable(_dec_str(row[0]), row[10], row[7], row[17], "")


def row_to_job(row: Sequence[Any]) -> Job:
    """Rows come from our own writes, so skip validation: this is the claim hot path.
    A payload or result that no longer reads (edited by hand, an integer of more than
    4,300 digits stored before the worker refused one) reads as a marker in its place
    (stored_rows); the typed columns and the state's CHECK keep the rest readable."""
    job_id = _dec_str(row[0])
    return trusted_job(
        {
            "id": job_id,
            "tenant": _dec_str(row[1]),
            "type": _dec_str(row[2]),
            "queue": _dec_str(row[3]),
            "priority": row[4],
            "payload": stored_json(job_id, "payload", row[5]),
            "state": STATE_BY_VALUE[row[6]],
            "attempts": row[7],
            "max_attempts": row[8],
            "run_at": row[9],
            "lease_token": row[10],
            "lease_expires_at": row[11],
            "result": None if row[12] is None else stored_json(job_id, "result", row[12]),
            "last_error": _dec(row[13]),
            "idempotency_key": _dec(row[14]),
            "created_at": row[15],
            "updated_at": row[16],
            "started_at": row[17],
            "finished_at": row[18],
        }
    )


# -- settings from the URL ----------------------------------------------------


@dataclass(frozen=True)
class PgSettings:
    conninfo: str
    schema: str | None = None
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 5.0
    url: str = ""  # as given, for messages (always shown through redact_url)
    durability: str = "normal"
    statement_timeout: float = STATEMENT_TIMEOUT  # 0: none from Spool (a role's own applies)
    # False when the URL's options set idle_session_timeout: theirs wins (session_setup).
    idle_session_off: bool = True
    # What the startup options set, for a connection through a pooler that dropped them.
    startup: tuple[tuple[str, str], ...] = ()
    # The schema the tables were found in when the store opened (current_schema()):
    # without schema= that is the search_path's first, which the URL does not name.
    tables: str | None = None

    @property
    def call_deadline(self) -> float | None:
        """Seconds after which a call still waiting for its answer is cut (None: never)."""
        return self.statement_timeout + CUT_GRACE if self.statement_timeout else None

    @property
    def key_schema(self) -> str | None:
        """The name every per-schema key is made from (the NOTIFY channel, the backlog
        and limits locks): the schema the tables are in, None for `public`.

        Taken from the URL's schema= alone, one set of tables had two names: a process
        with `schema=public` and one without schema= (or `schema=X` and a role whose
        search_path is X) took different locks and spoke on different channels, so
        neither saw the other's turn: two `spool db migrate` at once both applied the
        same migration and one failed, capped adds and limited claims were not one at
        a time, and wake-ups were lost. `public` keeps the keys a URL without schema=
        always had."""
        name = self.schema or self.tables
        return None if name in (None, "public") else name

    @property
    def channel(self) -> str:
        """NOTIFY channel: one per schema, so deployments sharing a database stay apart."""
        return f"spool_{self.key_schema}" if self.key_schema else "spool"


# What Spool's code and psycopg's parsers expect the server to print, and the
# isolation its statements are written for (each names its locks and re-checks rows
# it waited on as READ COMMITTED does; a role's default of SERIALIZABLE turned them
# into serialization failures).
SESSION_DEFAULTS = (
    "-c timezone=UTC -c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=1"
    " -c bytea_output=hex -c default_transaction_isolation=read\\ committed"
)


def parse_url(url: str) -> PgSettings:
    """Split Spool's options off a postgresql:// URL; pass the rest to libpq.

    An option neither Spool nor libpq reads (`shcema=x`), one of Spool's given
    twice, or a bad value of one of Spool's is a ConfigError naming it, raised
    here, before any connection: libpq would refuse an unknown one only when
    connecting, as an error that reads like an unreachable server."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgres", "postgresql"):
        raise config_error(f"not a Postgres URL: {redact_url(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    refuse_repeated([k for k, _ in query if k in _SPOOL_OPTIONS])
    ours = {k: v for k, v in query if k in _SPOOL_OPTIONS}
    rest = [
        (k, v)
        for k, v in query
        if k not in _SPOOL_OPTIONS and k not in ("options", "application_name")
    ]
    schema = ours.get("schema") or None
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise config_error(
            f"schema must be lowercase letters, digits and _ (at most 57), not {schema!r}"
        )
    statement_timeout = _option_number(ours, "statement_timeout", float, STATEMENT_TIMEOUT)
    if not 0 <= statement_timeout < 24 * 3600:  # also refuses NaN
        raise config_error(
            "statement_timeout must be a number of seconds from 0 (no bound) to 86399, "
            f"not {ours.get('statement_timeout')}"
        )
    # The session settings ride in the startup packet: no extra round trip per connection.
    # The bounds go first, so `options=-c statement_timeout=...` in the URL overrides them
    # on the server (the last value given wins there).
    options = []
    if statement_timeout:
        ms = max(1, round(statement_timeout * 1000))
        # A transaction left open by a process that froze holds its row locks, and every
        # enqueue waits on the counters it locked: end such a session too.
        options.append(f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}")
    options.extend(v for k, v in query if k == "options")
    # After the URL's: the code reads what these settings print, whatever the role's or
    # database's defaults (ALTER ROLE ... SET datestyle = 'SQL, DMY' made every store
    # fail to open: psycopg parses ISO dates and `postgres` intervals only).
    options.append(SESSION_DEFAULTS)
    if schema is not None:
        options.append(f"-c search_path={schema}")
    rest.append(("options", " ".join(options)))
    rest.append(("application_name", dict(query).get("application_name", "spool")))
    given = {k for k, _ in query}
    rest.extend((k, v) for k, v in TCP_DEFAULTS if k not in given)
    conninfo = urlunsplit(
        ("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")
    )
    _check_libpq_options(conninfo)
    pool_min = _option_number(ours, "pool_min", int, 1)
    pool_max = _option_number(ours, "pool_max", int, 10)
    if pool_min < 0 or pool_max < 1 or pool_min > pool_max:
        raise config_error(
            f"need 0 <= pool_min <= pool_max and pool_max >= 1, not pool_min={pool_min} "
            f"and pool_max={pool_max}"
        )
    pool_timeout = _option_number(ours, "pool_timeout", float, 5.0)
    if not 0 < pool_timeout < float("inf"):  # also refuses NaN
        raise config_error(f"pool_timeout must be a number of seconds above 0, not {pool_timeout}")
    durability = (ours.get("durability") or "normal").lower()
    if durability not in DURABILITY_MODES:
        raise config_error(f"durability must be normal or full, not {ours.get('durability')!r}")
    return PgSettings(
        durability=durability,
        conninfo=conninfo,
        schema=schema,
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=pool_timeout,
        url=url,
        statement_timeout=statement_timeout,
        idle_session_off=not any("idle_session_timeout" in v for k, v in query if k == "options"),
        startup=pg_pooler.startup_settings(" ".join(options)),
    )


# A server that stops answering (its host gone, a network partition) must not hold a
# worker or a request forever: idle connections probe it (keepalives: given up after
# about a minute), and data it never acknowledges fails the call after a minute
# (tcp_user_timeout, ms; Linux). Without them a claim waited on a dead socket, saying
# nothing, for as long as the kernel kept retransmitting (~15 minutes). A connection
# whose server accepts it and then says nothing gives up after connect_timeout. A
# server that is up but silent acknowledges everything: statement_timeout and
# pg_deadline bound that. A URL that sets any of these keeps its own value.
TCP_DEFAULTS = (
    ("connect_timeout", "10"),
    ("keepalives", "1"),
    ("keepalives_idle", "30"),
    ("keepalives_interval", "10"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "60000"),
)


def _option_number(options: dict[str, str], name: str, kind: type[N], default: N) -> N:
    """One of Spool's numeric URL options, or a ConfigError naming it."""
    raw = options.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise config_error(f"{name} must be {what}, not {raw!r}") from None
    if kind is float and underflows(raw, float(value)):
        # statement_timeout=1e-400 was read as 0, which is "no bound" there.
        raise config_error(f"{name}: {too_small(raw)}; write 0 if you mean 0")
    return value


def _check_libpq_options(conninfo: str) -> None:
    """Refuse what libpq would not parse (an unknown parameter, most often a typo of
    one of Spool's options), naming it; libpq checks the values when connecting."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        found = re.search(r'invalid URI query parameter: "([^"]*)"', str(exc))
        if found is None:  # libpq quotes what it could not read, maybe the password: not shown
            reason = str(exc).strip().split(":", 1)[0] or type(exc).__name__
            raise config_error(f"libpq cannot read the URL: {reason}") from None
        libpq = [o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()]
        raise unknown_option(
            found.group(1),
            "postgresql",
            _SPOOL_OPTIONS,
            " and passes libpq's connection parameters on (sslmode, connect_timeout, "
            "application_name, options, ...; see the PostgreSQL docs, "
            '"Parameter Key Words")',
            libpq,
        ) from None


_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)
# SQLSTATE class 40: the server rolled the transaction back, so nothing of it applied
# and running it again is safe. psycopg 3 maps 40P01 and 40001 to their own classes,
# DeadlockDetected and SerializationFailure, which are NOT subclasses of
# TransactionRollback (40000): each must be named.
_ROLLED_BACK = (
    pg_errors.TransactionRollback,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
)


# The server cancelled the statement: its statement_timeout, an operator's lock_timeout
# on the role or database, or pg_cancel_backend. The connection itself is fine.
_CANCELLED = (pg_errors.QueryCanceled, pg_errors.LockNotAvailable)
# Failures of a write that certainly did not apply (never sent, or rolled back).
_NOT_APPLIED = (
    PoolTimeout,
    *_ROLLED_BACK,
    pg_errors.IdleInTransactionSessionTimeout,
    pg_errors.ReadOnlySqlTransaction,
)


def _check_connection(conn: Conn) -> None:
    """Pool check, cheap enough for every checkout.

    An idle connection has nothing to read; if its socket is readable, the
    server sent an error or closed it (restart, pg_terminate_backend), so only
    then pay for a real round trip, which fails and makes the pool replace it.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection is closed")
    try:
        # Not select(): a socket numbered past 1023 is no dead one (chalicelib/fdwait.py).
        unread = readable([conn.fileno()], 0)
    except (OSError, ValueError) as exc:
        raise psycopg.OperationalError(f"connection socket is gone: {exc}") from exc
    if unread:
        ConnectionPool.check_connection(conn)


# The SQLSTATE of a session ended idle in a transaction (rolled back).
IDLE_IN_TRANSACTION = "25P03"

# idle_session_timeout came with Postgres 14; naming it to an older server is an error.
IDLE_SESSION_SINCE = 140000


def session_setup(settings: PgSettings, conn: Conn) -> None:
    """The pool's configure callback: settle_session, its answer unused; the server's
    last words kept for the log (pg_noise.hear_last_words)."""
    pg_noise.hear_last_words(conn)
    settle_session(settings, conn)


def settle_session(settings: PgSettings, conn: Conn) -> bool:
    """What the startup packet cannot carry: idle_session_timeout off for this session;
    through a pooler, the startup options too (pg_pooler). True when behind one.

    Spool's sessions are idle by design: the worker's LISTEN connection waits for
    wake-ups, a pooled one for the next call (the pool closes those it does not need,
    max_idle). An operator's idle_session_timeout on the role or database ended
    them: the LISTEN connection was cut and logged as lost every time, and a pooled
    one ended as a call took it failed that call (an enqueue answered 503 "may have
    been applied"). Not in the startup packet's options: Postgres 13 refuses a
    connection naming a setting it does not know. One round trip per new connection;
    a URL whose options set idle_session_timeout keeps its own value. The same round
    trip reads the server's backend pid, which tells a pooler apart (pg_pooler)."""
    idle = settings.idle_session_off and conn.info.server_version >= IDLE_SESSION_SINCE
    off = ", set_config('idle_session_timeout', '0', false)" if idle else ""
    row = conn.execute(f"SELECT pg_backend_pid(){off}").fetchone()
    pooled = row is not None and pg_pooler.behind_pooler(conn, row[0])
    if pooled:
        pg_pooler.apply_settings(conn, settings.startup)
    return pooled


def connect(settings: PgSettings, timeout: float = 5.0) -> Conn:
    """One autocommit connection with the store's session settings (migrations, LISTEN).

    Through a pooler that shares server sessions (PgBouncer's transaction mode) a
    ConfigError naming the fix: LISTEN, the settings and migrate's lock need a session."""
    conn = psycopg.connect(settings.conninfo, autocommit=True, connect_timeout=max(1, int(timeout)))
    pg_noise.hear_last_words(conn)
    try:
        if settle_session(settings, conn):
            pg_pooler.refuse_shared_sessions(settings.conninfo, conn, max(1, int(timeout)))
    except BaseException:
        conn.close()
        raise
    return conn


def probe(settings: PgSettings) -> Conn:
    """Connect once, or raise StoreUnreachable: one line naming the (redacted) URL,
    the server's reason and what to check. For start-up (store, `spool db`)."""
    try:
        return connect(settings, timeout=settings.pool_timeout)
    except psycopg.OperationalError as exc:
        raise StoreUnreachable(unreachable_message(settings, exc), retry_after=5) from exc


def unreachable_message(settings: PgSettings, exc: BaseException) -> str:
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    # libpq's own hint repeats what the sentence below says, for every host tried.
    reasons = [line for line in lines if line and not line.startswith("Is the server running")]
    reason = redact_text("; ".join(reasons) or type(exc).__name__)
    where = redact_url(settings.url or settings.conninfo)
    hint = pg_pooler.refused_parameter_hint(reason)
    if hint is not None:
        return f"cannot connect to the Postgres store at {where}: {hint}"
    if pg_refusals.server_full(exc):  # it answered: neither the network nor the URL
        full = pg_refusals.full_hint(exc)
        return (
            f"cannot connect to the Postgres store at {where}: {reason}; "
            f"the server in SPOOL_STORE_URL answered but {full}"
        )
    return (
        f"cannot reach the Postgres store at {where}: "
        f"{reason}. Check that the server is running and accepts connections on that host "
        "and port, and that the user, password and database in SPOOL_STORE_URL are right."
    )


def _key_order(new: NewJob) -> tuple[bool, str, str]:
    """Keyed jobs first, by tenant and key: the order every batch inserts them in."""
    return (new.idempotency_key is None, new.tenant, new.idempotency_key or "")


class PostgresStore:
    # Each call takes its own pooled connection, so the worker may write completions
    # while it claims (see Worker._flush_beside).
    concurrent_writes = True

    def __init__(
        self,
        settings: PgSettings,
        clock: Clock | None = None,
        attempt_history: int | None = None,
        webhook_history: int | None = None,
    ) -> None:
        # The server's clock unless a test brings its own (store_clock.py says why).
        self._server_clock = ServerClock() if clock is None else None
        self.clock: Clock = clock or self._server_clock or SystemClock()
        self._quiet = Quiet()  # one warning per run of failed calls (store_outage.Quiet)
        self.settings = settings
        self.history_limit = attempt_history or history.history_limit()
        self.webhook_history = webhook_history or webhook_outbox.kept_finished()
        # One plain connection first: an unreachable server is one clear error
        # naming the URL, not a pool retrying (and logging) in the background.
        self._check_migrated()
        # Why the pool's last new connection failed: a pool timeout says only "timed out".
        self._connects = pg_refusals.ConnectFailures()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            settings.conninfo,
            connection_class=self._connects.connection_class(),
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            kwargs={"autocommit": True},
            configure=functools.partial(session_setup, settings),
            check=self._check_connection,
            timeout=settings.pool_timeout,
            # Short: a caller waiting for a connection restarts the tries (see above).
            reconnect_timeout=RECONNECT_WINDOW,
            name="spool",
            open=False,
        )
        self._pool.open(wait=False)
        self.notifier = PgNotifier(self.settings, self._notify)
        self._stats_checked = float("-inf")  # postgres_limits.refresh_statistics
        # The storage identities of the epoch's tables seen by cache_epoch (EPOCH_SQL).
        self._tables_seen: set[tuple[object, object]] = set()
        self._tables_lock = threading.Lock()
        self._hurry: float | None = None  # set by hurry: a stopping process's short deadline

    # -- plumbing ------------------------------------------------------------
    def _check_connection(self, conn: Conn) -> None:
        """The pool's checkout check; a dead connection also empties the pool.

        psycopg_pool drops a connection that fails its check and sleeps before it
        checks the next with its reconnect backoff (0, 1, 2, 4 ... s, no ceiling).
        After a restart of the server or pg_terminate_backend of this process's
        sessions every idle connection is dead, so a pool of N waited 2**(N-2) s
        (past pool_timeout: a 503) to reach a live one. One dead connection says the
        others, made before it died, are likely dead too: drain() closes the idle
        ones and opens new ones, and those in use are replaced when they come back.
        """
        try:
            _check_connection(conn)
        except psycopg.Error:
            self._pool.drain()
            raise

    def _check_migrated(self) -> None:
        with probe(self.settings) as conn:
            current = migrations.status(conn).current
            self._read_server_clock(conn)
            tables = migrations.tables_schema(conn, self.settings.schema)
        # Before the pool and the notifier: both take their keys from it.
        self.settings = dataclasses.replace(self.settings, tables=tables)
        if current < migrations.latest_version():
            raise StoreNotMigrated(self._not_migrated(current), {"schema": self.settings.schema})

    def _read_server_clock(self, conn: Conn) -> None:
        """Read the server's time into self.clock when it is due (every
        store_clock.REFRESH_SECONDS): one round trip on a connection already held.
        A failed read keeps the last one; the caller's own statement meets the fault."""
        server = self._server_clock
        if server is None or not server.due():
            return
        before = server.ticks()
        try:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        except psycopg.Error:
            return
        if row is not None:
            server.observe(row[0], before, server.ticks())

    def _not_migrated(self, current: int) -> str:
        """NOT_MIGRATED, and for a schema with no Spool tables at all, which one was
        looked in: a typo in schema= otherwise read as "migrate", which would make a
        second, empty schema beside the real one."""
        if current:
            return NOT_MIGRATED
        if self.settings.schema is None:  # no schema=: the connection's search_path
            return (
                f"{NOT_MIGRATED} (the database's default schema, first on its search_path,"
                " has no Spool tables; if they are in another schema, add ?schema=NAME to"
                " SPOOL_STORE_URL instead)"
            )
        return (
            f"{NOT_MIGRATED} (schema {self.settings.schema!r} has no Spool tables; if that"
            " name is a typo, fix schema= in SPOOL_STORE_URL instead)"
        )

    def _getconn(self) -> Conn:
        """A pooled connection within pool_timeout, asked for again each RECONNECT_WINDOW.

        The pool makes a new connection only when a caller asks and none is free; a
        caller already waiting when a run of tries closes (the database down for longer
        than the window) started no other, and waited out its whole timeout after the
        database was back. Asking again starts a fresh run, whose first try is at once.
        Bounded by pool_timeout in all, as one wait was; a window whose last try the
        server refused (pg_refusals) ends the wait: it refuses the same URL every time,
        and waiting out pool_timeout held /health past its deadline and every client
        that long."""
        deadline = time.monotonic() + self.settings.pool_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return self._pool.getconn(timeout=max(0.001, min(left, RECONNECT_WINDOW)))
            except PoolTimeout:
                if deadline - time.monotonic() <= 0 or self._connects.refused() is not None:
                    raise

    def _all_in_use(self) -> bool:
        """True when the pool holds pool_max connections and none is free: a call that
        timed out waiting had a server that answers, and calls that keep theirs."""
        stats = self._pool.get_stats()
        return stats.get("pool_size", 0) >= self.settings.pool_max and not stats.get(
            "pool_available", 0
        )

    def _busy(self) -> StoreUnavailable:
        """The 503 for a call that found every connection of this process in use.

        Said before as "the database cannot be reached" ("no database connection" in
        the log) while the server answered: under an admin's LOCK TABLE, a VACUUM FULL
        or a CLUSTER each call waits on the lock holding a connection, until
        statement_timeout, and the calls behind them find none free. The pool's own
        words ("after 1.00 sec") name only the last of _getconn's windows."""
        log.log(
            self._quiet.level(),
            "all %d of this process's connections are in use (pool_max), none freed "
            "within pool_timeout (%g s): calls are waiting on the server (a lock on Spool's "
            "tables, see pg_locks; a slow query) or pool_max is small for the load",
            self.settings.pool_max,
            self.settings.pool_timeout,
        )
        return StoreUnavailable(
            "the database is busy: all of this process's connections are in use, so "
            "nothing was applied; try again shortly",
            retry_after=5,
        )

    def _run(
        self,
        fn: Callable[[Conn], T],
        read: bool = False,
        atomic: bool = False,
        expendable: bool = False,
    ) -> T:
        """Run `fn` on a pooled connection, mapping outages to StoreUnavailable.

        Deadlocks and serialization failures roll back cleanly, so they are
        retried. A lost connection is retried only for reads: a write whose
        reply was lost may have committed, and redoing it is not ours to decide.
        `atomic`: `fn` is one transaction, so a statement the server cancelled
        rolled all of it back (not so a call of several autocommit statements).
        `expendable` (and every read): nothing a stopping process still needs, so
        hurry cancels it at once (a claim; a finish is given its seconds).
        """
        attempt = 0
        deadline = self.settings.call_deadline
        hurry = self._hurry
        if hurry is not None:
            deadline = hurry if deadline is None else min(deadline, hurry)
        while True:
            attempt += 1
            cut: pg_deadline.Watch | None = None
            conn: Conn | None = None  # for the server's last words, should it be lost
            try:
                # getconn/putconn, not pool.connection(): its `with conn` commits or rolls
                # back an autocommit connection, which has nothing to end (a transaction
                # block ends itself; putconn rolls back one left open, or closes a broken
                # connection), and the generator and the usage stats cost about 4 us a call.
                conn = self._getconn()
                try:
                    self._read_server_clock(conn)
                    if deadline is None:
                        answer = fn(conn)
                    else:
                        with pg_deadline.watch(
                            conn, deadline, self, hurry is not None, read or expendable
                        ) as cut:
                            answer = fn(conn)
                except pg_errors.InvalidSqlStatementName:
                    conn.close()  # its cache names statements the server lacks: replace it
                    raise
                finally:
                    self._pool.putconn(conn)
                self._quiet.ok()
                return answer
            except _ROLLED_BACK as exc:
                if attempt >= DEADLOCK_RETRIES:
                    # Rolled back every time: nothing applied, so a retry is safe (unlike
                    # a lost reply, which may have committed).
                    log.log(
                        self._quiet.level(),
                        "write rolled back %d times: %s",
                        attempt,
                        pg_noise.reason(exc),
                    )
                    raise StoreUnavailable(
                        "the database rolled the write back (it conflicted with others); "
                        "nothing was applied; try again",
                        retry_after=1,
                    ) from exc
                time.sleep(random.uniform(0, 0.01 * attempt))
            except pg_errors.UndefinedTable as exc:
                raise StoreNotMigrated(NOT_MIGRATED, {"schema": self.settings.schema}) from exc
            except pg_errors.IdleInTransactionSessionTimeout as exc:
                raise self._ended_idle(exc) from exc
            except pg_errors.ReadOnlySqlTransaction as exc:
                # A standby (a failover not yet promoted, a URL pointing at a replica) or
                # default_transaction_read_only: the statement was refused and its
                # transaction rolled back. Raised as it came, it answered 500 and ended
                # `spool worker` at its first claim.
                log.log(
                    self._quiet.level(),
                    "the database takes no writes (%s): point SPOOL_STORE_URL at the "
                    "primary, or turn default_transaction_read_only off",
                    pg_noise.reason(exc),
                )
                raise StoreUnavailable(
                    "the database is read-only now; nothing was applied; try again later",
                    retry_after=5,
                ) from exc
            except PoolTimeout as exc:
                refused = self._connects.refused()
                if refused is not None:
                    # The server refuses this URL (a wrong password, a dropped database):
                    # raised from its reason, so the loops end instead of waiting for ever
                    # (store_outage.is_fatal); clients are told no more than before.
                    log.log(
                        self._quiet.level(),
                        "database connection refused: %s",
                        pg_noise.reason(refused),
                    )
                    raise StoreUnavailable(
                        "the database cannot be reached; try again shortly",
                        retry_after=5,
                    ) from refused
                # The reason (host, port, server message) goes to the log, not to clients.
                reason = self._connects.reason()
                if reason is None and self._all_in_use():
                    raise self._busy() from exc
                log.log(
                    self._quiet.level(),
                    "no database connection: %s%s",
                    exc,
                    f" (the last try: {redact_text(reason)})" if reason else "",
                )
                raise StoreUnavailable(
                    "the database cannot be reached; try again shortly", retry_after=5
                ) from exc
            except pg_errors.InvalidSqlStatementName as exc:
                if read and attempt == 1:
                    continue  # on another connection: the pool replaces the closed one
                raise self._lost_prepared(exc, read) from exc
            except _UNAVAILABLE as exc:
                was_cut = cut is not None and cut.cut
                if cut is not None and cut.cancelled:
                    nothing = read or (atomic and not cut.cut)
                    raise self._cancelled_stopping(exc, nothing, cut) from exc
                # LockNotAvailable: the role's lock_timeout (55P03, not a QueryCanceled),
                # said before as a failed connection, which sent operators to the network.
                if was_cut or isinstance(exc, _CANCELLED):
                    if was_cut:
                        self._forget_connections()
                    raise self._too_slow(exc, read or (atomic and not was_cut), was_cut) from exc
                if read and attempt == 1:
                    continue
                if pg_noise.last_state(conn) == IDLE_IN_TRANSACTION:
                    raise self._ended_idle(exc, conn) from exc
                log.log(
                    self._quiet.level(),
                    "database connection failed: %s",
                    pg_noise.reason(exc, conn),
                )
                if not read:
                    raise UncertainWrite(
                        "the database connection failed before it answered", retry_after=2
                    ) from exc
                raise StoreUnavailable(
                    "the database connection failed; try again shortly", retry_after=2
                ) from exc

    def _ended_idle(self, exc: BaseException, conn: Conn | None = None) -> StoreUnavailable:
        """This process sat inside a transaction past the server's
        idle_in_transaction_session_timeout (statement_timeout): paused (SIGSTOP, a
        frozen VM, swapping). The server ended the session and rolled the transaction
        back; raised as it came, it ended `spool worker`. Said as the next statement's
        error, or only as the session's last words (a pipeline begun inside the
        transaction reads them between its results: pg_noise), nothing applied."""
        log.log(
            self._quiet.level(),
            "the database ended an idle transaction: %s",
            pg_noise.reason(exc, conn),
        )
        return StoreUnavailable(
            "the database ended this call's transaction after it sat idle (this "
            "process was paused); nothing was applied; try again",
            retry_after=1,
        )

    def _forget_connections(self) -> None:
        """After a call cut for getting no answer, replace every connection made before it.

        A network that dropped connections without a word (a NAT or firewall that lost
        their state, an address moved to another host) leaves each looking alive: the
        checkout check finds nothing to read, so every pooled one was met by a call
        that waited out the whole deadline, one after another (a worker took minutes
        to claim again). One silent connection says those made before it are likely
        silent too, as a dead one at checkout does (_check_connection); the LISTEN
        connection as well: its wake-ups would never come."""
        self._pool.drain()
        self.notifier.reconnect()

    def _lost_prepared(self, exc: BaseException, read: bool) -> StoreUnavailable:
        """A call that used a statement psycopg had prepared on the connection (after its
        fifth use) and the server no longer had: pg_cancel_backend on the process's
        sessions every 50 ms under load left connections whose cache and server
        disagreed, and each then failed every call using such a statement, for good
        (the error reached callers as it came: a 500; a worker said "store unavailable"
        and "back" every few seconds). The connection is closed by then (_run), so the
        next call gets a new one. A write may have applied a statement sent before."""
        said = "a statement this call used was gone from its database session"
        log.log(
            self._quiet.level(),
            "%s (%s): the connection is replaced",
            said,
            pg_noise.reason(exc),
        )
        if read:
            return StoreUnavailable(f"{said}; try again", retry_after=1)
        return UncertainWrite(said, retry_after=1)

    def _too_slow(self, exc: BaseException, read: bool, cut: bool) -> StoreUnavailable:
        """A call the server cancelled (its statement_timeout, a lock_timeout, an admin)
        or that this process cut after call_deadline with no answer. Not retried here:
        a retry could take as long again; and a write may have committed part or all
        of itself (one cut on the client, or a statement cancelled after others)."""
        if cut:
            said = f"the database gave no answer within {self.settings.call_deadline:g} s"
        else:  # the server's own words: "canceling statement due to statement timeout"
            reason = (str(exc).strip().splitlines() or ["cancelled"])[0]
            said = f"the database cancelled the call ({reason})"
        log.log(self._quiet.level(), "%s: %s", said, pg_noise.reason(exc))
        if read:
            return StoreUnavailable(f"{said}; try again shortly", retry_after=5)
        return UncertainWrite(said, retry_after=5)

    def hurry(self, seconds: float | None) -> None:
        """This process is stopping: no call, in flight or later, waits for the server
        longer than `seconds` (None: the usual deadline again). At it the server is
        asked to cancel the statement (its transaction rolls back), and the socket is
        cut if it does not (pg_deadline.hurry). Calls here wait behind whatever holds
        their rows or tables (an admin's LOCK TABLE, a VACUUM FULL) for up to
        statement_timeout: a `spool worker` told to stop under such a lock took 57 s,
        a claim's whole timeout and then the read asking whether it had committed."""
        self._hurry = seconds
        if seconds is not None:
            pg_deadline.hurry(self, seconds)

    def _cancelled_stopping(
        self, exc: BaseException, nothing: bool, watch: pg_deadline.Watch
    ) -> StoreUnavailable:
        """A call hurry cancelled (or cut, when the server did not take the cancel).
        `nothing`: nothing of it can have been applied (a read, or one transaction
        the server rolled back)."""
        cut = watch.cut
        if watch.expendable:
            said = "the process is stopping and had no more use for this call's answer"
        else:
            waited = f"{self._hurry:g} s" if self._hurry is not None else "its deadline"
            said = f"the process is stopping and the database gave no answer within {waited}"
        if cut:
            self._forget_connections()
            said += "; the connection was cut"
        else:
            said += "; the call was cancelled"
        log.log(self._quiet.level(), "%s: %s", said, pg_noise.reason(exc))
        if nothing:
            return StoreUnavailable(f"{said}; nothing was applied", retry_after=5)
        return UncertainWrite(said, retry_after=5)

    def _notify(self) -> None:
        self._run(lambda conn: conn.execute("SELECT pg_notify(%s, '')", (self.settings.channel,)))

    @staticmethod
    def _shard() -> int:
        return random.randrange(COUNTER_SHARDS)

    # -- contract ------------------------------------------------------------
    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        if not jobs:
            return []
        if cap is None and all(new.idempotency_key is None for new in jobs):
            if len(jobs) == 1:
                return [AddResult(self._add_one(jobs[0]), True)]
            return self._add_keyless(jobs)
        now = self.clock.now()
        # Resolve repeated keys inside the batch here: the first one wins.
        first_of: dict[tuple[str, str], int] = {}
        dup_of: dict[int, int] = {}
        keyed: list[tuple[str, str]] = []
        for i, new in enumerate(jobs):
            if new.idempotency_key is not None:
                key = (_enc(new.tenant), _enc(new.idempotency_key))
                if key in first_of:
                    dup_of[i] = first_of[key]
                else:
                    first_of[key] = i
                    keyed.append(key)
        candidates = [i for i in range(len(jobs)) if i not in dup_of]

        def write(conn: Conn) -> tuple[dict[str, Job], dict[tuple[str, str], AddResult]]:
            with conn.transaction() if keyed or cap is not None else nullcontext():
                if cap is not None:  # every capped add of the tenant waits here in turn
                    self._hold_backlog(conn, cap.tenant)
                existing = self._by_keys(conn, keyed) if keyed else {}
                fresh = [
                    jobs[i]
                    for i in candidates
                    if jobs[i].idempotency_key is None
                    or (_enc(jobs[i].tenant), _enc(jobs[i].idempotency_key or "")) not in existing
                ]
                if cap is not None:
                    refused = cap.refuses(self._waiting_in(conn, cap.tenant), len(fresh))
                    if refused is not None:
                        raise refused
                built: dict[str, Job] = {}
                inserted: set[str] = set()
                if fresh:
                    # Keyed rows in one order, whatever order the client sent: two batches
                    # sharing keys in different orders each waited for a key the other had
                    # inserted first (a deadlock, retried, then 503 under load).
                    fresh.sort(key=_key_order)
                    if len(fresh) == 1:
                        one = self._one_params(fresh[0], now)
                        rows = _kept_cursor(conn).execute(ADD_ONE_SQL, one).fetchall()
                        built = {fresh[0].id: _fresh_job(fresh[0], now)}
                    else:
                        shared, params = self._add_params(fresh, now)
                        # Pipeline mode sends the statement at once: the server inserts
                        # the batch while this thread builds the answer's jobs.
                        with conn.pipeline():
                            cursor = conn.execute(add_sql(shared), params)
                            built = {n.id: _fresh_job(n, now) for n in fresh}
                            rows = cursor.fetchall()
                    inserted = {r[0] for r in rows}
                    lost = [
                        (_enc(n.tenant), _enc(n.idempotency_key))
                        for n in fresh
                        if n.idempotency_key is not None and _enc(n.id) not in inserted
                    ]
                    if lost:  # another process stored the same key a moment ago
                        existing.update(self._by_keys(conn, lost))
                return {i: built[i] for i in built if _enc(i) in inserted}, existing

        # One transaction: a statement the server cancelled stored nothing (atomic).
        stored, existing = self._run(write, atomic=True)
        results: list[AddResult | None] = [None] * len(jobs)
        for i in candidates:
            new = jobs[i]
            job = stored.get(new.id)
            if job is not None:
                results[i] = AddResult(job, True)
            else:
                key = (_enc(new.tenant), _enc(new.idempotency_key or ""))
                results[i] = existing[key]
        for i, j in dup_of.items():
            first = results[j]
            assert first is not None
            results[i] = first.repeated(jobs[j])
        return [r for r in results if r is not None]

    def _add_one(self, new: NewJob) -> Job:
        """The common call, one job without a key, without add's batch bookkeeping
        (repeated keys, keys already stored, the answer's order), about 20 us of CPU a
        call. Without a key nothing can conflict (add's ON CONFLICT names the
        key's index; a repeated id is an error, as in a batch), so the row is stored
        once the statement returns, and the answer is built from what was sent."""
        now = self.clock.now()
        params = self._one_params(new, now)
        # One statement, its own transaction: cancelled, it stored nothing (atomic).
        self._run(lambda conn: _kept_cursor(conn).execute(ADD_KEYLESS_ONE_SQL, params), atomic=True)
        return _fresh_job(new, now)

    def _add_keyless(self, jobs: Sequence[NewJob]) -> list[AddResult]:
        """A batch without keys (Service.enqueue sends its unkeyed jobs apart), without
        add's key bookkeeping. As in _add_one, nothing can conflict, so every row is
        stored once the statement returns (a repeated id fails it whole); the statement
        sends no ids back, which were read into a set and matched against the batch
        again (about 2 us a job), and the answer is built from what was sent."""
        now = self.clock.now()
        shared, params = self._add_params(jobs, now)
        sql = add_sql(shared, keyless=True)

        def write(conn: Conn) -> list[AddResult]:
            # Pipeline mode sends the statement at once: the server inserts the batch
            # while this thread builds the answer's jobs. It is sent between BEGIN and
            # COMMIT (one Sync): an error at commit, after the statement's rows (a
            # lock_timeout on the lock NOTIFY takes to commit, a deferred trigger), is
            # then COMMIT's own answer, raised as what it is. As the implicit
            # transaction's commit at the Sync, psycopg met an error it had queued no
            # command for: "cannot exit pipeline mode while busy" (said as a failed
            # connection, and the pool dropped it) or an IndexError (a 500).
            with pipelined_transaction(conn):
                cursor = conn.execute(sql, params)
                answer = [AddResult(_fresh_job(new, now), True) for new in jobs]
                cursor.fetchall()
            return answer

        return self._run(write, atomic=True)

    def _add_params(
        self, fresh: Sequence[NewJob], now: datetime
    ) -> tuple[frozenset[str], dict[str, Any]]:
        """add_sql's parameters for `fresh`, and the columns sent once (see add_sql)."""
        columns: dict[str, tuple[str, list[Any], Callable[[Any], Any] | None]] = {
            "tenant": ("tenants", [n.tenant for n in fresh], _enc),
            "type": ("types", [n.type for n in fresh], _enc),
            "queue": ("queues", [n.queue for n in fresh], _enc),
            "priority": ("priorities", [n.priority for n in fresh], None),
            "max_attempt": ("max_attempts", [n.max_attempts for n in fresh], None),
            "run_at": ("run_ats", [n.run_at for n in fresh], None),
            "key": ("keys", [n.idempotency_key for n in fresh], _enc_opt),
            "callback_url": ("callback_urls", [n.callback_url for n in fresh], _enc_opt),
        }
        params: dict[str, Any] = {
            "now": now,
            "ids": [_enc(n.id) for n in fresh],
            "payloads": [_dumps(n.payload) for n in fresh],
            "channel": self.settings.channel,
        }
        shared = []
        for row, (array, values, encode) in columns.items():
            first = values[0]
            # Equal values store alike here: equal text, equal instants, equal numbers
            # (the payload, where {"a": 1} == {"a": 1.0}, is always an array).
            if values.count(first) == len(values):
                shared.append(row)
                params[row] = first if encode is None else encode(first)
            else:
                params[array] = values if encode is None else [encode(v) for v in values]
        return frozenset(shared), params

    def _one_params(self, new: NewJob, now: datetime) -> dict[str, Any]:
        """ADD_ONE_SQL's scalars, built directly: the single enqueue is the common call,
        and ten one-element lists unpacked again cost it a few microseconds."""
        key, callback = new.idempotency_key, new.callback_url
        return {
            "now": now,
            "id": _enc(new.id),
            "tenant": _enc(new.tenant),
            "type": _enc(new.type),
            "queue": _enc(new.queue),
            "priority": new.priority,
            "payload": _dumps(new.payload),
            "max_attempt": new.max_attempts,
            "run_at": new.run_at,
            "key": None if key is None else _enc(key),
            "callback_url": None if callback is None else _enc(callback),
            "channel": self.settings.channel,
        }

    def _hold_backlog(self, conn: Conn, tenant: str) -> None:
        """Take the tenant's backlog lock (a transaction-level advisory lock keyed by
        the schema and the tenant) until the caller's transaction ends: a capped add
        or redrive then counts and writes with no other one of the tenant's between.
        The count that follows is a statement of its own, so under READ COMMITTED it
        sees what the lock's previous holder committed."""
        conn.execute(
            LOCK_SQL, (BACKLOG_LOCK_SPACE, f"{self.settings.key_schema or ''}:{_enc(tenant)}")
        )

    @staticmethod
    def _waiting_in(conn: Conn, tenant: str) -> int:
        """The tenant's waiting jobs from its kept counts, in the caller's transaction."""
        row = conn.execute(
            "SELECT coalesce(sum(n), 0)::bigint FROM job_counts WHERE tenant = %s"
            " AND state IN ('queued', 'retrying')",
            (_enc(tenant),),
        ).fetchone()
        return int(row[0]) if row is not None else 0

    @staticmethod
    def _by_keys(conn: Conn, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], AddResult]:
        """The jobs already stored under these (encoded) keys, as add returns them."""
        rows = conn.execute(
            f"SELECT {COLUMNS}, callback_url FROM jobs WHERE (tenant, idempotency_key) IN ("
            "SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
        return {(r[1], r[14]): AddResult(row_to_job(r), False, _dec(r[-1])) for r in rows}

    def check_writable(self) -> None:
        """A standby (a URL pointing at a replica, a failover not yet promoted) or
        default_transaction_read_only answers reads and refuses every write: /health
        asks the session (one round trip, nothing written) and says what to fix."""
        row = self._run(lambda conn: conn.execute("SHOW transaction_read_only").fetchone(), True)
        if row is not None and str(row[0]).lower() == "on":
            raise StoreUnavailable(READ_ONLY_HEALTH, retry_after=5)

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        # The tenant in the query: another tenant's job is no row, as an unknown id is,
        # never a record sent over and decoded (or failing to decode) before the check.
        params: tuple[str, ...] = (_enc(job_id),)
        sql = f"SELECT {COLUMNS} FROM jobs WHERE id = %s"
        if tenant is not None:
            sql += " AND tenant = %s"
            params += (_enc(tenant),)
        row = self._run(lambda conn: conn.execute(sql, params).fetchone(), read=True)
        return None if row is None else row_to_job(row)

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        # A claim that can take nothing still reaps (base.py: expired leases first).
        nothing = limit <= 0 or (ids is not None and not ids) or (queues is not None and not queues)
        now = self.clock.now()
        filters = ""
        params: dict[str, Any] = {
            "now": now,
            "unstarted": None if started else True,
            "limit": limit,
            "token": new_lease_token(),
            "expires": now + timedelta(seconds=lease_seconds),
            "late": self._lease_late(),
            "worker": _enc(worker_id.current()),
        }
        if queues is not None:
            filters += " AND queue = ANY(%(queues)s::text[])"
            params["queues"] = [_enc(q) for q in queues]
        if ids is not None:
            filters += " AND id = ANY(%(ids)s::text[])"
            params["ids"] = [_enc(i) for i in ids]
        claim_sql = CLAIM_SQL.format(filters=filters)
        reap_params = {
            "now": now,
            "error": LEASE_EXPIRED_ERROR,
            "shard": self._shard(),
            "keep": self.history_limit,
            "hooks_kept": self.webhook_history,
        }

        fast_claims = self.settings.durability != "full"

        def claim(conn: Conn) -> list[Any]:
            # Reap, then claim (it must see what the reap freed): one transaction,
            # one round trip. Its commit does not wait for the WAL flush: if the
            # server crashes right after, the claim is simply undone and the job
            # is due again (at-least-once allows the re-run), and claims stop
            # paying an fsync each, which is most of a pickup's latency.
            # Completions and enqueues stay fully durable. durability=full makes
            # claims wait for the flush too.
            # The clock is read once a connection is held: a lease dated from before
            # a wait for one (up to pool_timeout, an outage's end) could be over when
            # written, and the job dropped unstarted with an attempt spent.
            now = self.clock.now()
            params.update(now=now, expires=now + timedelta(seconds=lease_seconds))
            reap_params["now"] = now
            with pipelined_transaction(conn):
                if fast_claims:
                    conn.execute(SYNC_OFF)
                reaped = conn.execute(REAP_SQL, reap_params)
                cur = None if nothing else conn.execute(claim_sql, params)
            buried.extend(reaped.fetchall())
            return [] if cur is None else cur.fetchall()

        buried: list[Any] = []
        if not nothing:
            self._refresh_statistics()
        if policy is not None and policy.active and not nothing:
            rows = self._claim_within(policy, limit, queues, ids, params, reap_params, buried)
        else:
            try:
                rows = self._run(claim, atomic=True, expendable=True)
            except StoreUnavailable as lost:
                rows = self._claimed_before(lost, params["token"])
        for job_id, tenant, type_, queue, attempts, max_attempts in buried:
            log_buried_by_reap(
                _dec_str(job_id), _dec_str(tenant), _dec_str(type_), _dec_str(queue),
                attempts, max_attempts,
            )  # fmt: skip
        jobs, bad = stored_rows.runnable(rows, row_to_job, _claimed)
        if bad:  # a payload that is not JSON: no handler is given the marker
            stored_rows.bury(self, bad, self.clock.now())
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return jobs

    def _claimed_before(self, lost: StoreUnavailable, lease_token: str) -> list[Any]:
        """The rows a claim whose reply was lost took, or `lost` raised again.

        The connection failed (or was cut) after the claim was sent: it may have
        committed, leaving its jobs `running` with an attempt spent under a lease no
        one holds, until the reap moved them on without their having run (a job at its
        last attempt went dead). The token is this claim's alone, made before it was
        sent, so the jobs holding it are exactly what it took: one read (retried once,
        as reads are) answers them. None hold it when it did not commit; a claim that
        was never sent (no connection) or that the server rolled back is not asked
        about."""
        cause = lost.__cause__
        # (A refused connection is raised from its reason while the PoolTimeout is
        # handled: never sent either. A statement the server cancelled rolled the
        # claim's one transaction back: _run says so with a plain StoreUnavailable.)
        if (
            not isinstance(lost, UncertainWrite)
            or not isinstance(cause, _UNAVAILABLE)
            or isinstance(cause, _NOT_APPLIED)
            or isinstance(lost.__context__, PoolTimeout)
        ):
            raise lost
        try:
            rows = self._run(
                lambda conn: conn.execute(CLAIMED_BY_SQL, (lease_token,)).fetchall(), read=True
            )
        except StoreUnavailable:
            raise lost from cause
        if not rows:
            raise lost
        log.warning(
            "a claim's reply was lost after it committed: answering the %d job(s) holding "
            "its lease",
            len(rows),
        )
        return rows

    def _refresh_statistics(self) -> None:
        """Before a claim, every STATS_CHECK_SECONDS: ANALYZE jobs if the planner believes
        it far smaller than its waiting jobs (postgres_limits.refresh_statistics).

        Both claims need it. Until then the plain claim, too, read the whole backlog
        and sorted it instead of walking jobs_due: 12-16 ms a claim of 55 at 10,000
        jobs instead of ~1, for the first second or more of a burst's drain (until
        autovacuum's analyze, up to a minute away), which the claim under a policy
        never paid (stop 54)."""
        if time.monotonic() - self._stats_checked > postgres_limits.STATS_CHECK_SECONDS:
            self._stats_checked = time.monotonic()
            self._run(postgres_limits.refresh_statistics)

    def _claim_within(
        self,
        policy: ClaimPolicy,
        limit: int,
        queues: Sequence[str] | None,
        ids: Sequence[str] | None,
        params: dict[str, Any],
        reap_params: dict[str, Any],
        buried: list[Any],
    ) -> list[Any]:
        """A claim under limits and fair turns (postgres_limits): the advisory lock,
        the reap, the reads, the choice, the claim and the recorded starts and turns
        are one transaction, so two workers can never together exceed a limit."""
        ask = postgres_limits.Ask(
            policy,
            limit,
            params["now"],
            None if queues is None else [_enc(q) for q in queues],
            None if ids is None else [_enc(i) for i in ids],
            _enc,
            _dec_str,
            self.settings.key_schema,
        )
        fast_claims = self.settings.durability != "full"
        lease = params["expires"] - params["now"]
        wait = postgres_limits.lock_wait(lease.total_seconds())

        def claim(conn: Conn) -> tuple[list[Any], list[Any], list[Hold]]:
            schema = self.settings.key_schema
            gate = postgres_limits.gate_params(schema)
            with pipelined_transaction(conn):
                # One round trip when no other claim holds the lock: it is taken without
                # waiting, then the reap (gated on the lock) and the reads are sent, none
                # read before all are sent. fast_claims as in claim() (SYNC_OFF): a crash
                # undoes the claim and its starts.
                now = self.clock.now()
                taken = postgres_limits.try_lock(conn, schema, sync_off=fast_claims)
                reaps: list[psycopg.Cursor[Any] | psycopg.RawCursor[Any]] = [
                    gated_reap(conn, {**reap_params, **gate, "now": now})
                ]
                state = postgres_limits.send_state(conn, dataclasses.replace(ask, now=now))
                if not postgres_limits.locked(taken):
                    # Another claim holds it: wait, then reap and read again with the
                    # clock read anew (what was read meanwhile wrote and locked nothing).
                    # A wait (0.4 s seen under load) must not date the starts recorded and
                    # the windows counted from before it: a start stamped at when the
                    # claim began to wait fell out of a later claim's window, which then
                    # let the rate pass.
                    postgres_limits.lock(conn, schema, wait)
                    now = self.clock.now()
                    reaps.append(conn.execute(REAP_SQL, {**reap_params, "now": now}))
                    state = postgres_limits.send_state(conn, dataclasses.replace(ask, now=now))
                choice = postgres_limits.choose(conn, state)
                cur = None
                if choice.ids:
                    chosen = {"chosen": choice.ids, "now": now, "expires": now + lease}
                    cur = conn.execute(CLAIM_CHOSEN_SQL, {**params, **chosen})
            reaped = [row for reap in reaps for row in reap.fetchall()]
            return reaped, [] if cur is None else cur.fetchall(), choice.holds

        try:
            reaped, rows, holds = self._run(claim, atomic=True, expendable=True)
        except postgres_limits.ClaimLockBusy:
            # Nothing was applied (rolled back). Raised as an outage, so the worker
            # renews its leases, then claims again after a short pause.
            raise StoreUnavailable(
                f"another claim held the claim lock over {wait:g}s (a process paused in"
                " the middle of a claim?); this claim took nothing; try again",
                retry_after=1,
            ) from None
        except StoreUnavailable as lost:
            # The jobs are recovered exactly (the recorded starts committed with them);
            # the holds, what it passed over, only this process kept, and are lost.
            reaped, rows, holds = [], self._claimed_before(lost, params["token"]), []
        buried.extend(reaped)
        for hold in holds:
            policy.holds.record(hold)
        return rows

    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        """A shared token bucket: one row per key, locked for the take."""
        now = self.clock.now()
        return self._run(
            lambda conn: postgres_limits.take_tokens(conn, _enc(key), rate, burst, cost, now)
        )

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        now = self.clock.now()
        # A job may appear twice in one batch; apply in rounds so each
        # statement touches a job once and later entries see earlier ones.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for index, c in enumerate(completions):
            n = seen.get(c.job_id, 0)
            seen[c.job_id] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(index)

        def params(batch: list[int]) -> dict[str, Any]:
            cs = [completions[i] for i in batch]
            return {
                "now": now,
                "ids": [_enc(c.job_id) for c in cs],
                "tokens": [_enc(c.lease_token) for c in cs],
                "states": [c.state.value for c in cs],
                "results": [
                    _dumps(c.result) if c.state is JobState.SUCCEEDED else None for c in cs
                ],
                "errors": [_enc_opt(c.error) for c in cs],
                "retry_ats": [c.retry_at for c in cs],
                "attempts": [
                    None if c.attempt is None else history.encode_within(c.attempt, escape=_enc)
                    for c in cs
                ],
                "keep": self.history_limit,
                "hooks_kept": self.webhook_history,
                "shard": self._shard(),
            }

        def write(conn: Conn) -> set[tuple[int, str]]:
            done: set[tuple[int, str]] = set()
            with conn.transaction() if len(rounds) > 1 else _nothing():
                for n, batch in enumerate(rounds):
                    rows = conn.execute(FINISH_SQL, params(batch)).fetchall()
                    done.update((n, r[0]) for r in rows)
            return done

        done = self._run(write)
        applied: list[bool] = []
        occurrence: dict[str, int] = {}
        for c in completions:
            n = occurrence.get(c.job_id, 0)
            occurrence[c.job_id] = n + 1
            applied.append((n, _enc(c.job_id)) in done)
        return applied

    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        if not leases:
            return []
        fast = self.settings.durability != "full"

        def mark(conn: Conn) -> set[str]:
            # Read once a connection is held, as in claim(); as durable as a claim,
            # whose commit a server crash would undo along with this one.
            params = {
                "ids": [_enc(i) for i, _ in leases],
                "tokens": [_enc(t) for _, t in leases],
                "now": self.clock.now(),
            }
            cur = conn.execute(START_FAST_SQL if fast else START_SQL, params)  # one round trip
            return {_dec_str(r[0]) for r in cur.fetchall() if r[1] == "running"}

        marked = self._run(mark)
        return [job_id in marked for job_id, _ in leases]

    def _lease_late(self) -> int:
        """1 when leases are dated by the server's clock, so a lease's end also counts
        the time its statement waited on the server (LEASE_END); 0 under a test clock."""
        return 1 if self.clock is self._server_clock else 0

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        def extend(conn: Conn) -> Any:
            # The clock is read once a connection is held, as in claim(): an expiry
            # dated from before the wait could be over when written.
            now = self.clock.now()
            return conn.execute(
                f"UPDATE jobs SET lease_expires_at = {LEASE_END}, updated_at = %(now)s"
                " WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'"
                " AND lease_expires_at > %(now)s RETURNING id",
                {
                    "expires": now + timedelta(seconds=lease_seconds),
                    "late": self._lease_late(),
                    "now": now,
                    "id": _enc(job_id),
                    "token": _enc(lease_token),
                },
            ).fetchone()

        return self._run(extend) is not None

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        if not leases:
            return []

        def extend(conn: Conn) -> set[str]:
            now = self.clock.now()  # once a connection is held, as in extend_lease
            params = {
                "expires": now + timedelta(seconds=lease_seconds),
                "late": self._lease_late(),
                "now": now,
                "ids": [_enc(i) for i, _ in leases],
                "tokens": [_enc(t) for _, t in leases],
            }
            return {_dec_str(r[0]) for r in conn.execute(EXTEND_SQL, params).fetchall()}

        kept = self._run(extend)
        return [job_id in kept for job_id, _ in leases]

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        now = self.clock.now()
        params = {
            "now": now,
            "id": _enc(job_id),
            "tenant": _enc_opt(tenant),
            "shard": self._shard(),
            "hooks_kept": self.webhook_history,
        }

        def write(conn: Conn) -> tuple[Any, Any]:
            row = conn.execute(CANCEL_SQL, params).fetchone()
            if row is not None:
                return row, None
            found = conn.execute(
                "SELECT state, tenant FROM jobs WHERE id = %s", (_enc(job_id),)
            ).fetchone()
            return None, found

        row, found = self._run(write)
        if row is not None:
            return row_to_job(row)
        if found is None or (tenant is not None and _dec(found[1]) != tenant):
            raise JobNotFound("job not found", {"id": job_id})
        raise InvalidTransition(f"a {found[0]} job cannot be cancelled", {"state": found[0]})

    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = check_limit(query.limit)
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("tenant", query.tenant),
            ("state", query.state.value if query.state else None),
            ("queue", query.queue),
            ("type", query.type),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(_enc(value))
        after, order = (">", "") if not query.newest_first else ("<", " DESC")
        if query.cursor:
            created, last_id = decode_cursor(query.cursor, query.newest_first)
            where.append(f"(created_at, id) {after} (%s, %s)")
            params.extend([from_micros(created), _enc(last_id)])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        columns = COLUMNS if query.bodies else SUMMARY_COLUMNS
        text = f"SELECT {columns} FROM jobs {clause} ORDER BY created_at{order}, id{order} LIMIT %s"
        rows = self._run(
            lambda conn: conn.execute(text, [*params, limit + 1]).fetchall(), read=True
        )
        jobs = [row_to_job(r) for r in rows[:limit]]
        cursor = (
            encode_cursor(jobs[-1].created_at, jobs[-1].id, query.newest_first)
            if len(rows) > limit
            else None
        )
        return JobPage(jobs, cursor)

    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        if not job_ids:
            return []
        now = self.clock.now()
        wanted = list(dict.fromkeys(_enc(i) for i in job_ids))

        def write(conn: Conn) -> list[Any]:
            rows: list[Any] = []
            with conn.transaction():
                fit = wanted
                if cap is not None:  # as a capped add: the tenant's lock, then the count
                    self._hold_backlog(conn, cap.tenant)
                    dead = {
                        r[0]
                        for r in conn.execute(
                            "SELECT id FROM jobs WHERE id = ANY(%s::text[]) AND state = 'dead'"
                            " AND tenant = %s",
                            (wanted, _enc(cap.tenant)),
                        ).fetchall()
                    }
                    waiting = self._waiting_in(conn, cap.tenant)
                    fit = redrive_fit(cap, waiting, [i for i in wanted if i in dead])
                ordered = sorted(fit)  # chunks lock in one global order too
                chunks = range(0, len(ordered), REDRIVE_CHUNK)
                if len(chunks) > 1:  # every row before the first bump (REDRIVE_LOCK_SQL)
                    for start in chunks:
                        chunk = ordered[start : start + REDRIVE_CHUNK]
                        conn.execute(REDRIVE_LOCK_SQL, {"ids": chunk, "tenant": _enc_opt(tenant)})
                for start in chunks:
                    rows.extend(
                        conn.execute(
                            REDRIVE_SQL,
                            {
                                "now": now,
                                "ids": ordered[start : start + REDRIVE_CHUNK],
                                "tenant": _enc_opt(tenant),
                                "channel": self.settings.channel,
                                **_redrive_most(attempts),
                            },
                        ).fetchall()
                    )
            return rows  # the update trigger moved the epochs (migration 0014)

        moved = {r[0]: row_to_job(r) for r in self._run(write)}
        return [moved[i] for i in wanted if i in moved]

    def counts(self) -> dict[tuple[str, JobState], int]:
        # The kept per-state counts (migration 0004's triggers), not a count over every
        # job: /metrics asks on every scrape.
        return self.state_counts()

    def counters(self) -> dict[CounterKey, int]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT queue, type, event, sum(n)::bigint FROM (SELECT queue, type, event, n"
                " FROM counters UNION ALL SELECT queue, type, 'enqueued', n FROM enqueued_log)"
                " AS c GROUP BY queue, type, event"
            ).fetchall(),
            read=True,
        )
        return {CounterKey(_dec_str(q), _dec_str(t), e): int(n) for q, t, e, n in rows}

    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        """The summaries of migration 0008: the rows changed since the last scrape are
        folded (under their row locks, so enqueues never wait on a per-queue row of
        their own), then the named set, the named queues' rows and the totals are read
        in one snapshot. The work is the named queues, the rows changed since the last
        fold and the totals, whatever the number of names ever used.

        A database that takes no writes (a standby, default_transaction_read_only)
        refuses the fold: the scrape then reads every counter and count row as they
        stand (exact, the work growing with the names ever used, for that outage only)
        instead of answering 503, so /metrics still shows the queue while writes wait."""
        always = kept(keep)
        params: dict[str, Any] = {
            "keep": [_enc(q) for q in always],
            "excluded": [_enc(q) for q in (*always, OTHER_QUEUE)],
            "busiest": max(0, busiest),
        }

        def read(
            conn: Conn,
        ) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any]] | None:
            try:
                for fold_statement in FOLD_SQL:  # each its own transaction (autocommit)
                    conn.execute(fold_statement)
            except pg_errors.ReadOnlySqlTransaction:
                return None  # refused whole (autocommit): the connection stays usable
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                named = [q for (q,) in conn.execute(NAMED_SQL, params).fetchall()]
                wanted = {"named": named}
                return (
                    named,
                    conn.execute(NAMED_COUNTERS_SQL, wanted).fetchall(),
                    conn.execute(COUNTER_TOTALS_SQL).fetchall(),
                    conn.execute(NAMED_COUNTS_SQL, wanted).fetchall(),
                    conn.execute(STATE_TOTALS_SQL).fetchall(),
                )

        reading = self._run(read, read=True)
        if reading is None:
            return fold(self.counters(), self.counts(), keep, busiest)
        named, own, totals, own_counts, state_totals = reading
        counters: dict[CounterKey, int] = {}
        rest: dict[tuple[str, str], int] = {(t, e): int(n) for t, e, n in totals}
        for queue, type_, event, n in own:
            if n:
                counters[CounterKey(_dec_str(queue), _dec_str(type_), event)] = int(n)
            rest[(type_, event)] = rest.get((type_, event), 0) - int(n)
        other = False
        for (type_, event), n in rest.items():
            if n > 0:
                counters[CounterKey(OTHER_QUEUE, _dec_str(type_), event)] = n
                other = True
        counts: dict[tuple[str, JobState], int] = {}
        states: dict[str, int] = {s: int(n) for s, n in state_totals}
        for queue, state, n in own_counts:
            if n > 0:
                counts[(_dec_str(queue), JobState(state))] = int(n)
            states[state] = states.get(state, 0) - int(n)
        for state, n in states.items():
            if n > 0:
                counts[(OTHER_QUEUE, JobState(state))] = n
                other = True
        return QueueTotals(frozenset(_dec_str(q) for q in named), counters, counts, other)

    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        if queues is not None and not queues:
            return None  # no queue named: none falls due (not every queue)
        queue_clause = " AND queue = ANY(%(queues)s::text[])" if queues else ""
        params = {"queues": [_enc(q) for q in queues or []]}
        text = (
            "SELECT (SELECT min(run_at) FROM jobs WHERE state IN ('queued', 'retrying')"
            f"{queue_clause}), (SELECT min(lease_expires_at) FROM jobs"
            f" WHERE state = 'running'{queue_clause})"
        )
        row = self._run(lambda conn: conn.execute(text, params).fetchone(), read=True)
        present: list[datetime] = [t for t in (row or ()) if t is not None]
        return min(present) if present else None

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        """Deletes in batches of PURGE_BATCH, each its own short transaction."""
        total = 0
        while total < limit:
            batch = min(PURGE_BATCH, limit - total)
            params = {"before": finished_before, "limit": batch}

            def delete(conn: Conn, params: dict[str, Any] = params) -> int:
                row = conn.execute(PURGE_SQL, params).fetchone()
                return int(row[0]) if row else 0

            n = self._run(delete)
            total += n
            if n < batch:
                break
        cutoff = self.clock.now() - MINUTES_KEPT
        self._run(lambda conn: conn.execute("DELETE FROM job_minutes WHERE minute < %s", (cutoff,)))
        return total

    def cache_epoch(self, tenant: str) -> int:
        """The tenant's epoch; negative once the tables' storage is not what this process
        first saw (EPOCH_SQL says why), distinct for each (storages seen, epoch)."""
        row = self._run(lambda conn: conn.execute(EPOCH_SQL, (_enc(tenant),)).fetchone(), read=True)
        if row is None:  # one row always; kept for the type
            return 0
        epoch = int(row[0] or 0)
        tables = (row[1], row[2])
        with self._tables_lock:
            known = self._tables_seen
            if not known:
                known.add(tables)
            elif tables not in known:
                known.add(tables)
                log.warning(
                    "the Postgres store's jobs or tenant_epochs table has new storage since "
                    "this process last looked: its tables were truncated, its schema or "
                    "database dropped and migrated again (every job from before is gone), "
                    "or VACUUM FULL/CLUSTER rewrote them; answers cached by this process "
                    "are let go"
                )
            emptied = len(known) - 1
        return epoch_after_emptyings(epoch, emptied)

    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        row = self._run(
            lambda conn: conn.execute(
                "SELECT tenant, attempt_log FROM jobs WHERE id = %s", (_enc(job_id),)
            ).fetchone(),
            read=True,
        )
        if row is None or (tenant is not None and _dec_str(row[0]) != tenant):
            return None
        try:
            return history.decode_all(row[1], self.history_limit, unescape=_dec_str)
        except (*stored_rows.BAD_SHAPE, RecursionError) as exc:  # a log edited by hand
            raise stored_rows.damaged(job_id, exc) from exc

    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        where = "WHERE tenant = %(tenant)s" if tenant is not None else ""
        text = (
            f"SELECT queue, state, sum(n)::bigint FROM job_counts {where}"
            " GROUP BY queue, state HAVING sum(n) > 0"
        )
        params = {"tenant": _enc_opt(tenant)}
        rows = self._run(lambda conn: conn.execute(text, params).fetchall(), read=True)
        return {(_dec_str(q), JobState(s)): int(n) for q, s, n in rows}

    def waiting_count(self, tenant: str) -> int:
        # The count a capped add takes under the tenant's lock, here outside one.
        return self._run(lambda conn: self._waiting_in(conn, tenant), read=True)

    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        where = " AND tenant = %(tenant)s" if tenant is not None else ""
        text = (
            "SELECT minute, queue, sum(succeeded)::bigint, sum(failed)::bigint FROM job_minutes"
            f" WHERE minute >= %(since)s{where} GROUP BY minute, queue ORDER BY minute, queue"
        )
        params = {"since": minute_of(since), "tenant": _enc_opt(tenant)}
        rows = self._run(lambda conn: conn.execute(text, params).fetchall(), read=True)
        return [MinuteTally(_dec_str(q), m, int(ok), int(bad)) for m, q, ok, bad in rows]

    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        wanted = list(dict.fromkeys(_enc(i) for i in job_ids))
        if not wanted:
            return []
        tenant_clause = " AND tenant = %(tenant)s" if tenant is not None else ""
        text = (
            # Locked in id order first, as REDRIVE_SQL does, so a discard beside a
            # redrive of the same dead jobs cannot deadlock with it.
            "WITH locked AS MATERIALIZED (SELECT id FROM jobs WHERE id = ANY(%(ids)s::text[])"
            f" AND state = 'dead'{tenant_clause} ORDER BY id COLLATE \"C\" FOR UPDATE),"
            " gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM locked)"
            " AND state = 'dead' RETURNING id)"
            " SELECT id FROM gone"
        )
        params = {"ids": wanted, "tenant": _enc_opt(tenant)}
        rows = self._run(lambda conn: conn.execute(text, params).fetchall())
        deleted = {r[0] for r in rows}  # locked in id order: answer in the order asked
        return [_dec_str(i) for i in wanted if i in deleted]

    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        text = f"SELECT {COLUMNS} FROM jobs WHERE tenant = %s AND idempotency_key = %s"
        params = (_enc(tenant), _enc(idempotency_key))
        row = self._run(lambda conn: conn.execute(text, params).fetchone(), read=True)
        return None if row is None else row_to_job(row)

    def _tenant_oldest_due(self, tenant: str, queues: Sequence[str] | None) -> dict[str, datetime]:
        """One index seek per queue holding the tenant's waiting jobs (from job_counts)."""
        queue_clause = " AND queue = ANY(%(queues)s::text[])" if queues else ""
        text = (
            "SELECT q.queue, (SELECT min(run_at) FROM jobs WHERE tenant = %(tenant)s"
            " AND queue = q.queue AND state IN ('queued', 'retrying'))"
            " FROM (SELECT queue FROM job_counts WHERE tenant = %(tenant)s"
            f" AND state IN ('queued', 'retrying'){queue_clause}"
            " GROUP BY queue HAVING sum(n) > 0) q"
        )
        params = {"tenant": _enc(tenant), "queues": [_enc(q) for q in queues or []]}
        rows = self._run(lambda conn: conn.execute(text, params).fetchall(), read=True)
        now = self.clock.now()
        return {_dec_str(q): at for q, at in rows if at is not None and at <= now}

    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        if queues is not None and not queues:
            return {}
        if tenant is not None:
            return self._tenant_oldest_due(tenant, queues)
        queue_clause = " AND queue = ANY(%(queues)s::text[])" if queues else ""
        params = {"now": self.clock.now(), "queues": [_enc(q) for q in queues or []]}
        text = (
            "SELECT queue, min(run_at) FROM jobs WHERE state IN ('queued', 'retrying')"
            f" AND run_at <= %(now)s{queue_clause} GROUP BY queue"
        )
        rows = self._run(lambda conn: conn.execute(text, params).fetchall(), read=True)
        return {_dec_str(queue): at for queue, at in rows}

    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        now = self.clock.now()
        params = {
            "worker": _enc(worker),
            "queues": _enc_opt(history.queues_text(queues)),
            "started": started_at,
            "now": now,
            "cutoff": now - timedelta(seconds=history.BEAT_RETENTION_SECONDS),
        }

        def write(conn: Conn) -> None:
            conn.execute(
                "WITH up AS (INSERT INTO workers (worker, queues, started_at, last_beat)"
                " VALUES (%(worker)s, %(queues)s, %(started)s, %(now)s)"
                " ON CONFLICT (worker) DO UPDATE SET queues = excluded.queues,"
                " started_at = excluded.started_at, last_beat = excluded.last_beat RETURNING 1)"
                " DELETE FROM workers WHERE last_beat < %(cutoff)s",
                params,
            )
            # The enqueues' log into the counters (migration 0010), in a transaction of
            # its own: where nothing scrapes, the beats keep the log short.
            conn.execute(FOLD_ENQUEUED_SQL)

        self._run(write)

    def forget_worker(self, worker: str) -> None:
        self._run(
            lambda conn: conn.execute("DELETE FROM workers WHERE worker = %s", (_enc(worker),))
        )

    def live_workers(self, within: float) -> list[WorkerBeat]:
        since = self.clock.now() - timedelta(seconds=within)
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT worker, queues, started_at, last_beat FROM workers"
                " WHERE last_beat >= %s ORDER BY worker",
                (since,),
            ).fetchall(),
            read=True,
        )
        return [
            WorkerBeat(_dec_str(w), history.queues_of(_dec(q)), started, last)
            for w, q, started, last in rows
        ]

    # -- the webhook outbox (see base.py; SQL in postgres_webhooks.py) ----------
    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        if limit <= 0:
            return []
        token = new_lease_token()

        def claim(conn: Conn) -> list[Any]:
            # As in claim(): the clock is read once a connection is held, and the
            # lease's end counts what the statement waited on the server (LEASE_END).
            now = self.clock.now()
            params = {
                "now": now,
                "expires": now + timedelta(seconds=lease_seconds),
                "late": self._lease_late(),
                "limit": limit,
                "token": token,
            }
            return conn.execute(postgres_webhooks.CLAIM_SQL, params).fetchall()

        rows = self._run(claim)
        now = self.clock.now()
        found = [postgres_webhooks.row_to_delivery(r, _dec_str) for r in rows]
        found.sort(key=lambda d: (d.next_at or now, d.created_at, d.id))
        return found

    def finish_webhook(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        if outcome not in webhook_outbox.OUTCOMES:
            raise ValueError(f"unknown webhook outcome {outcome!r}")
        params = postgres_webhooks.finish_params(
            delivery_id, lease_token, outcome, retry_at, error, self.clock.now(), _enc
        )
        row = self._run(lambda conn: conn.execute(postgres_webhooks.FINISH_SQL, params).fetchone())
        return row is not None

    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        params = {"id": _enc(job_id), "tenant": _enc_opt(tenant)}
        rows = self._run(
            lambda conn: conn.execute(postgres_webhooks.FOR_JOB_SQL, params).fetchall(),
            read=True,
        )
        return [postgres_webhooks.row_to_delivery(r, _dec_str) for r in rows]

    def webhook_counts(self) -> dict[str, int]:
        rows = self._run(
            lambda conn: conn.execute(postgres_webhooks.COUNTS_SQL).fetchall(), read=True
        )
        return {state: int(n) for state, n in rows if n}

    def close(self) -> None:
        self.notifier.close()
        self._pool.close()


def _kept_cursor(conn: Conn) -> psycopg.Cursor[Any]:
    """The connection's own cursor for the single enqueue, made on its first use.

    conn.execute makes a cursor per call, and with it a Transformer that looks up a
    dumper for each of the 13 parameters' types again: 10-25 us of CPU a call, against
    a kept cursor whose Transformer has them cached. It holds its last result (one
    row) until the next call; a pooled connection is one thread's at a time, and the
    cursor leaves with its connection when the pool closes or replaces it."""
    cursor: psycopg.Cursor[Any] | None = getattr(conn, "_spool_cursor", None)
    if cursor is None or cursor.closed:
        cursor = conn.cursor()
        conn._spool_cursor = cursor  # type: ignore[attr-defined]
    return cursor


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _fresh_job(new: NewJob, now: datetime) -> Job:
    return queued_job(new, new.run_at.astimezone(UTC), now)


class PgNotifier:
    """LISTEN/NOTIFY wake-ups for idle workers.

    One dedicated connection LISTENs (a pooled connection could not: it
    belongs to whoever holds it). `wait` selects on that socket and on a
    self-pipe, so `close` wakes a waiter at once. If the listening connection
    breaks, the `wait` that sees it reconnects at once (`_relisten`; a failed try
    waits out the timeout and the next `wait` tries again) and reports a wake-up,
    because notifications sent meanwhile are lost and work may be waiting. `wait`
    never raises: delivery is an optimization, the worker's fallback poll
    keeps correctness.
    """

    def __init__(self, settings: PgSettings, send: Callable[[], None]) -> None:
        self.settings = settings
        self._send = send
        self._conn: Conn | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._missed = False  # a listening connection broke: wake-ups may be lost
        self._stale = False  # reconnect(): the next wait replaces the connection
        self._quiet = Quiet()  # "LISTEN connection lost" once per outage, not per retry
        self._rpipe, self._wpipe = os.pipe()
        os.set_blocking(self._rpipe, False)
        os.set_blocking(self._wpipe, False)

    def notify(self) -> None:
        try:
            self._send()
        except StoreUnavailable:
            log.debug("NOTIFY failed: the database is unavailable")

    def _listen(self) -> Conn:
        if self._conn is None or self._conn.closed:
            conn = connect(self.settings)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.settings.channel)))
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        self._missed = True

    @staticmethod
    def _drain(conn: Conn) -> bool:
        conn.pgconn.consume_input()
        got = False
        while conn.pgconn.notifies() is not None:
            got = True
        return got

    def _clear_pipe(self) -> bool:
        woke = False
        try:
            while os.read(self._rpipe, 64):
                woke = True
        except BlockingIOError:
            pass
        return woke

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                time.sleep(max(0.0, timeout))
                return False
            if self._stale:
                self._stale = False
                self._drop()
            listening = False
            try:
                conn = self._listen()
                listening = True
                self._quiet.ok()
                if self._missed:
                    self._missed = False
                    return True
                while True:
                    if self._drain(conn):
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if self._rpipe in readable([conn.fileno(), self._rpipe], remaining):
                        self._clear_pipe()
                        return True
            except (psycopg.Error, OSError) as exc:
                log.log(
                    self._quiet.level(),
                    "LISTEN connection lost (%s); will reconnect",
                    pg_noise.reason(exc, self._conn),
                )
                self._drop()
                if listening and self._relisten():
                    return True
            # Could not listen: wait out the timeout (close still wakes us).
            remaining = deadline - time.monotonic()
            if remaining > 0:
                readable([self._rpipe], remaining)
                self._clear_pipe()
            return False

    def _relisten(self) -> bool:
        """Subscribe again at once after a working connection was lost; True when that
        worked (the caller reports a wake-up: notifications sent meanwhile are lost).

        Waiting out the rest of the timeout first left the worker deaf for up to
        idle_poll: a job enqueued then waited for the fallback poll. One try only: a
        reconnect that fails too (the server going away) waits out the timeout, and the
        next wait tries again, so a server that is down is not hammered."""
        try:
            self._listen()
        except (psycopg.Error, OSError) as exc:
            log.debug(
                "LISTEN reconnect failed (%s); trying again after the poll", pg_noise.reason(exc)
            )
            self._drop()
            return False
        self._quiet.ok()
        self._missed = False
        return True

    def reconnect(self) -> None:
        """Replace the listening connection at the next wait (it may be dead without a
        word: PostgresStore._forget_connections); that wait reports a wake-up, since
        notifications may have been lost. Any thread; no lock: a waiter holds it."""
        self._stale = True

    def interrupt(self) -> None:
        """Wake this process's waiter now (Worker.stop; signal-safe: no lock, one write)."""
        with suppress(OSError):
            os.write(self._wpipe, b"!")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with suppress(OSError):
            os.write(self._wpipe, b"!")
        with self._lock:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
            os.close(self._rpipe)
            os.close(self._wpipe)


def from_url(url: str, clock: Clock | None = None) -> PostgresStore:
    return PostgresStore(parse_url(url), clock)


def _redrive_most(attempts: RedriveAttempts | None) -> dict[str, Any]:
    """REDRIVE_SQL's parameters for RedriveAttempts.cut (a NULL ceiling: no cut)."""
    if attempts is None:
        return {"ceiling": None, "types": [], "mosts": []}
    above = list(attempts.above)
    return {
        "ceiling": attempts.ceiling,
        "types": [_enc(t) for t in above],
        "mosts": [attempts.most(t) for t in above],
    }
