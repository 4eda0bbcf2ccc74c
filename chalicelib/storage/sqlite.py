"""The embedded default store: one SQLite file, WAL, one writer at a time.

Times are integer microseconds since the epoch, so comparisons are exact.
Claims are one UPDATE ... RETURNING over a partial index of due jobs, so a
batch of N jobs costs one statement, not N.

Durability: `synchronous=normal` (the default) survives any process crash;
an OS crash or power loss may lose the last few committed transactions. Use
`sqlite:///path?synchronous=full` to fsync every commit (slower writes).

New files use 2 KiB pages: a single enqueue dirties about twelve pages (the
row, four index leaves, the counters and the counts and summaries triggers keep
beside them: bench/store_add_instructions.py), and every commit copies and checksums
each into the WAL, so smaller pages make commits cheaper (bench/sqlite_bench.py
measured single enqueues go from about 17,500/s with 4 KiB pages to about
21,500/s) while typical rows still fit in one page. The WAL is checkpointed every 10,000 pages
instead of SQLite's 1,000: each checkpoint costs two fsyncs and rewrites hot
pages (counters, index leaves) that a longer interval writes once. It runs on a
thread of its own, beside the writers (sqlite_checkpoint.py), which also starts
the WAL again once it is two marks long: beside writers that never pause SQLite
never did so itself. The WAL file is truncated back to 64 MB when it starts again.

Each thread has a connection of its own, opened on its first call, and each
connection keeps its own page cache: at most 2 MiB (`cache_size`, SQLite's own default
size), so a process holds about 2 MiB per thread that touched the store, however large
the file grows; the OS's page cache, shared by them all, holds the rest. (At 32 MiB
each, a `spool serve` of 16 HTTP threads went from 65 MB to 670 MB of RSS as reads
walked a 66 MB file: tests/test_sqlite_memory.py.) Only the store's
first connection may create the file: a later one opens the file the store opened or
fails (StoreUnavailable, a 503), so a file deleted or replaced under the process never
becomes an empty database on some threads and a replacement on others.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from chalicelib import worker_id
from chalicelib.clock import Clock, SystemClock
from chalicelib.errors import InvalidTransition, JobNotFound, StoreUnavailable
from chalicelib.ids import new_lease_token
from chalicelib.json_encode import compact_encoder
from chalicelib.limits import ClaimPolicy
from chalicelib.models import (
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
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.storage import (
    history,
    sqlite_limits,
    sqlite_lists,
    sqlite_refused,
    sqlite_webhooks,
    stored_rows,
)
from chalicelib.storage import sqlite_dashboard as dashboard
from chalicelib.storage import sqlite_queue_totals as queue_totals
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    Backlog,
    completion_events,
    from_micros,
    log_buried_by_reap,
    micros_of,
    redrive_fit,
    to_micros,
    utf8_text,
)
from chalicelib.storage.files import private_file
from chalicelib.storage.notify import SocketDirNotifier
from chalicelib.storage.queue_totals import QueueTotals
from chalicelib.storage.sqlite_checkpoint import SAFETY_NET_PAGES, Checkpointer
from chalicelib.storage.sqlite_gate import BUSY_TIMEOUT_MS, WriteGate
from chalicelib.storage.sqlite_txn import (
    FileWatch,
    Transaction,
    WriteHealth,
    cannot_read,
    check_room,
    probe_turn,
    write_turn,
)
from chalicelib.storage.stored_rows import stored_json
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires_at INTEGER,
    result TEXT,
    last_error TEXT,
    idempotency_key TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    attempt_log TEXT,
    lease_worker TEXT,
    callback_url TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (priority DESC, run_at, created_at, id)
    WHERE state IN ('queued', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (
    queue TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, type, event)
);
CREATE TABLE IF NOT EXISTS tenant_epochs (
    tenant TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    queues TEXT,
    started_at INTEGER NOT NULL,
    last_beat INTEGER NOT NULL
);
"""

# Columns added since the first release: a file made before them gets them on open.
# attempt_log: the job's last N attempts as a JSON array (storage/history.py);
# lease_worker: who holds the lease, for the attempt a reap records.
# callback_url: where the job's completion webhook goes (sqlite_webhooks.py).
# unstarted: 1 while a claim made with started=False waits for start(); NULL once
# started (and on every row a file made before it had), so a lapse spends the attempt.
ADDED_COLUMNS = (
    ("attempt_log", "TEXT"),
    ("lease_worker", "TEXT"),
    ("callback_url", "TEXT"),
    ("unstarted", "INTEGER"),
)

# A job that leaves `running` never keeps an unstarted mark, whoever moved it: an
# earlier release's process sharing the file (a rolling upgrade) reaps and claims
# without knowing the mark, and a stale one would later give back the attempt of a
# handler that ran (Postgres migration 0012 says more). Made after ADDED_COLUMNS.
UNSTARTED_CLEARED = (
    "CREATE TRIGGER IF NOT EXISTS jobs_unstarted_cleared AFTER UPDATE OF state ON jobs "
    "WHEN NEW.state <> 'running' AND NEW.unstarted IS NOT NULL BEGIN "
    "UPDATE jobs SET unstarted = NULL WHERE id = NEW.id; END"
)

# JobStore.cache_epoch(tenant): a row per tenant, made by its first bump (no row reads
# 0), bumped by EPOCH_ON_DELETE for each of its jobs deleted and by
# EPOCH_ON_FINISHED_CHANGE for each of its finished jobs changed (a redrive), in the
# writing transaction, whoever writes. A file made before epochs were per tenant gets
# the table on open (the schema above) and keeps its old one-row cache_epoch table,
# which nothing reads any more.
BUMP_OLD_TENANT = (
    "INSERT INTO tenant_epochs (tenant, n) VALUES (OLD.tenant, 1)"
    " ON CONFLICT (tenant) DO UPDATE SET n = n + 1; "
)


# A job deleted by any writer moves its tenant's epoch, in the deleting transaction:
# purge and discard, and a DELETE by hand (the sqlite3 shell), which moved none, so
# the result cache answered "succeeded" for the gone job for its whole TTL. One upsert
# a deleted row; a file made before it gets it on open.
EPOCH_ON_DELETE = (
    "CREATE TRIGGER IF NOT EXISTS jobs_deleted_epoch AFTER DELETE ON jobs BEGIN "
    + BUMP_OLD_TENANT
    + "END"
)


# A finished job (succeeded, dead, cancelled) changed by any writer moves its tenant's
# epoch: the result cache keeps those answers, and a redrive by hand (the sqlite3 shell:
# `UPDATE jobs SET state = 'queued' ... WHERE state = 'dead'`) or a result mended by
# hand, which moved none, left it answering the old state for its whole TTL (stop 54).
# The columns are those a cached answer shows (api/schemas.job_view) and its tenant,
# which owns the answer (`IS NOT` compares NULLs as values); a row moved into a finished
# state needs nothing, since nothing was cached for it before. A worker's claims,
# renewals and finishes never start from a finished row: for them the WHEN's first test
# fails and nothing is written, but SQLite still enters the trigger for each row they
# change (measured by hand: +10-17% on a 20-row claim or finish statement alone, a few
# microseconds a row); start marks set no column named here and do not enter it.
# Spool's redrive relies on it (a bump per job moved); an earlier release sharing the
# file bumps once more itself: harmless.
# A file made before it gets it on open (Postgres: migration 0014).
FINISHED_CHANGED_COLUMNS = (
    "id",
    "tenant",
    "type",
    "queue",
    "priority",
    "payload",
    "state",
    "attempts",
    "max_attempts",
    "run_at",
    "result",
    "last_error",
    "idempotency_key",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)
EPOCH_ON_FINISHED_CHANGE = (
    "CREATE TRIGGER IF NOT EXISTS jobs_finished_changed_epoch AFTER UPDATE OF "
    + ", ".join(FINISHED_CHANGED_COLUMNS)
    + " ON jobs WHEN OLD.state IN ('succeeded', 'dead', 'cancelled') AND ("
    + " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FINISHED_CHANGED_COLUMNS)
    + ") BEGIN "
    + BUMP_OLD_TENANT
    + "END"
)


def _owned(select: str, job_id: str, tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """`select` of the job with this id, and of this tenant when one is given: the tenant
    is compared in the query, so another tenant's row is never fetched. Fetched and then
    compared, its payload, result and history were read (overflow pages) for nothing,
    and that read made another tenant's id answer a 404 measurably later than an unknown
    id's (tests/test_attack_s46_cross_tenant_reads.py)."""
    if tenant is None:
        return f"{select} WHERE id = ?", (job_id,)
    return f"{select} WHERE id = ? AND tenant = ?", (job_id, tenant)


# Applied to every connection (the benchmark's raw baseline uses the same).
PRAGMAS = (
    # First: the busy handler must be in place before the journal_mode switch, which
    # needs the file to itself; without it a second process opening the same new (or
    # pre-WAL) file at that moment got "database is locked" at once.
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA page_size=2048",  # only takes effect while the file is new
    "PRAGMA journal_mode=WAL",
    "PRAGMA temp_store=MEMORY",
    # A safety net only: the store checkpoints at CHECKPOINT_PAGES on a thread of its
    # own, outside the write gate (sqlite_checkpoint.py).
    f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}",
    "PRAGMA journal_size_limit=67108864",
    "PRAGMA cache_size=-2048",  # KiB, per connection: one per thread (see the top)
)

COLUMNS = (
    "id, tenant, type, queue, priority, payload, state, attempts, max_attempts, run_at, "
    "lease_token, lease_expires_at, result, last_error, idempotency_key, created_at, "
    "updated_at, started_at, finished_at"
)
# COLUMNS without the payload and result (JobQuery.bodies), in the same places.
SUMMARY_COLUMNS = COLUMNS.replace("payload", "'{}'").replace("result", "NULL")

BUMP = (
    "INSERT INTO counters (queue, type, event, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (queue, type, event) DO UPDATE SET n = n + excluded.n"
)


INSERT = (
    "INSERT INTO jobs (id, tenant, type, queue, priority, payload, state, "
    "max_attempts, run_at, idempotency_key, created_at, updated_at, callback_url) "
    "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)"
)
# Compact JSON; one encoder, not one built per call as json.dumps(separators=...) does.
# JSONEncoder(separators=(",", ":")).encode without its Python frames (json_encode.py).
_dumps = compact_encoder()

# Completions per finish statement: 8 parameters each, well under SQLite's limit.
FINISH_CHUNK = 500
# start() marks at most this many jobs a statement (2 parameters each).
START_CHUNK = 400


def _waiting(db: sqlite3.Connection, tenant: str) -> int:
    """The tenant's waiting jobs from its kept counts (job_counts, moved by triggers in
    every write's own transaction), read inside the caller's transaction."""
    row = db.execute(
        "SELECT COALESCE(SUM(n), 0) FROM job_counts WHERE tenant = ?"
        " AND state IN ('queued', 'retrying')",
        (tenant,),
    ).fetchone()
    return int(row[0])


def _dead(db: sqlite3.Connection, job_ids: Sequence[str], cap: Backlog) -> list[str]:
    """The cap's tenant's dead jobs among these ids, in their order."""
    wanted = list(dict.fromkeys(job_ids))
    dead: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            f"SELECT id FROM jobs WHERE state = 'dead' AND tenant = ? AND id IN"
            f" ({','.join('?' * len(chunk))})",
            [cap.tenant, *chunk],
        ).fetchall()
        dead.update(r[0] for r in rows)
    return [i for i in wanted if i in dead]


def append_attempt(log: str, entry: str, limit: int) -> str:
    """SQL for `log` (a JSON array or NULL) with `entry` (JSON text, or NULL for
    nothing) appended, keeping the last `limit` entries.

    The common case is one json_insert; only a full history is rebuilt, from its
    last limit - 1 entries.
    """
    return (
        f"CASE WHEN {entry} IS NULL THEN {log} "
        f"WHEN {log} IS NULL THEN json_array(json({entry})) "
        f"WHEN json_array_length({log}) >= {int(limit)} THEN json_insert(("
        f"SELECT json_group_array(json(value)) FROM (SELECT value FROM json_each({log}) "
        f"WHERE key > json_array_length({log}) - {int(limit)} ORDER BY key)), '$[#]', "
        f"json({entry})) "
        f"ELSE json_insert({log}, '$[#]', json({entry})) END"
    )


def _finish_one_sql(limit: int) -> str:
    """One completion: state, result, error, retry_at, now, finished, attempt, id, token."""
    return (
        "UPDATE jobs SET state = ?1, result = ?2, last_error = ?3, "
        "run_at = COALESCE(?4, run_at), lease_token = NULL, lease_expires_at = NULL, "
        "updated_at = ?5, finished_at = ?6, "
        f"attempt_log = {append_attempt('attempt_log', '?7', limit)} "
        "WHERE id = ?8 AND lease_token = ?9 AND state = 'running' "
        "RETURNING queue, type, tenant, callback_url"
    )


def _finish_sql(n: int, limit: int) -> str:
    """One UPDATE ... FROM (VALUES ...) for n completions of distinct jobs.

    Each row applies only while its lease token still matches a running job;
    RETURNING says which did, and its attempt (column8) joins the history in
    the same statement. One statement instead of n keeps a batch cheap.
    """
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * n)
    return (
        "UPDATE jobs SET state = v.column3, result = v.column4, last_error = v.column5, "
        "run_at = COALESCE(v.column6, jobs.run_at), lease_token = NULL, "
        "lease_expires_at = NULL, updated_at = ?, finished_at = v.column7, "
        f"attempt_log = {append_attempt('jobs.attempt_log', 'v.column8', limit)} "
        f"FROM (VALUES {values}) AS v WHERE jobs.id = v.column1 "
        "AND jobs.lease_token = v.column2 AND jobs.state = 'running' "
        "RETURNING jobs.id, jobs.queue, jobs.type, jobs.state, jobs.tenant, jobs.callback_url"
    )


# A lapsed lease whose claimer never started the job gives its attempt back: the job
# waits again (queued, due now), and nothing ended, so no counter, tally or history.
GIVE_BACK_SQL = (
    "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), run_at = ?1, "
    "lease_token = NULL, lease_expires_at = NULL, lease_worker = NULL, unstarted = NULL, "
    "updated_at = ?1 WHERE state = 'running' AND lease_expires_at <= ?1 AND unstarted = 1"
)


def _start_sql(n: int) -> str:
    """Mark n claimed jobs started, each by (id, lease token), while its lease is live."""
    rows = ",".join("(?, ?)" for _ in range(n))
    return (
        f"UPDATE jobs SET unstarted = NULL FROM (VALUES {rows}) AS v "
        "WHERE jobs.id = v.column1 AND jobs.lease_token = v.column2 "
        "AND jobs.state = 'running' AND jobs.lease_expires_at > ? RETURNING jobs.id"
    )


def _extend_sql(n: int) -> str:
    """Renew n leases, each by (id, lease token), while it is live: extend_lease's rule."""
    rows = ",".join("(?, ?)" for _ in range(n))
    return (
        "UPDATE jobs SET lease_expires_at = ?, updated_at = ? FROM (VALUES "
        f"{rows}) AS v WHERE jobs.id = v.column1 AND jobs.lease_token = v.column2 "
        "AND jobs.state = 'running' AND jobs.lease_expires_at > ? RETURNING jobs.id"
    )


# A lease whose lease_expires_at is no time (text or a blob, set by hand): SQLite orders
# it after every integer, so `<= now` never held and the job stayed running for good.
# Reaped as expired, by its own statement (an OR would scan every lease on each claim).
UNREADABLE_LEASE = "lease_expires_at >= ''"
UNREADABLE_LEASE_ERROR = (
    "its lease_expires_at is not a time (edited by hand?), so its lease was taken as "
    "expired and the attempt ended; check the row for other edits"
)


def _reap_sql(limit: int, unreadable: bool = False) -> str:
    """Expired leases back to retrying (or dead), each recording a lease_expired attempt;
    with `unreadable`, the leases whose expiry is no time, ended now."""
    ended = "?1" if unreadable else "lease_expires_at"
    entry = (
        f"json_object('n', attempts, 's', COALESCE(started_at, {ended}), "
        f"'f', {ended}, 'w', COALESCE(lease_worker, 'unknown'), 'o', 'lease_expired', "
        "'e', ?2, 'd', CASE WHEN attempts >= max_attempts THEN NULL ELSE 0.0 END)"
    )
    expired = UNREADABLE_LEASE if unreadable else "lease_expires_at <= ?1"
    return (
        "UPDATE jobs SET "
        "state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'retrying' END, "
        "run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE ?1 END, "
        "finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END, "
        f"attempt_log = {append_attempt('attempt_log', entry, limit)}, lease_worker = NULL, "
        "lease_token = NULL, lease_expires_at = NULL, last_error = ?2, updated_at = ?1 "
        f"WHERE state = 'running' AND {expired} "
        "RETURNING queue, type, state, id, tenant, attempts, max_attempts, callback_url"
    )


def _as_stored(when: datetime, micros: int) -> datetime:
    """`when` as get() reads it back (from_micros(micros)): itself when it is already a
    plain UTC datetime, which holds microseconds exactly, else rebuilt. A single add
    rebuilt two (its run_at and now), each dearer than this check."""
    if type(when) is datetime and when.tzinfo is UTC:
        return when
    return from_micros(micros)


class _Times:
    """Micros -> datetime, memoized: the rows of one claim share most of their times."""

    def __init__(self) -> None:
        self._seen: dict[int, datetime] = {}

    def __call__(self, value: int) -> datetime:
        found = self._seen.get(value)
        if found is None:
            found = self._seen[value] = from_micros(value)
        return found

    def maybe(self, value: int | None) -> datetime | None:
        return None if value is None else self(value)


def row_to_job(row: Sequence[Any], times: _Times | None = None) -> Job:
    """Rows come from our own writes, so skip validation: this is the claim hot path.
    One that no longer reads (edited by hand, older than a rule) is that job's problem
    only: a marker for its payload or result, JobUnreadable for the rest (stored_rows)."""
    try:
        return _row_to_job(row, times or _Times())
    except stored_rows.BAD_SHAPE as exc:
        raise stored_rows.damaged(str(row[0]), _times_named(row) or exc) from exc


# Where COLUMNS puts the times, each an integer of microseconds since the epoch.
_TIME_COLUMNS = (
    (9, "run_at"), (11, "lease_expires_at"), (15, "created_at"), (16, "updated_at"),
    (17, "started_at"), (18, "finished_at"),
)  # fmt: skip


def _times_named(row: Sequence[Any]) -> TypeError | None:
    """What is wrong with a row's times, naming the columns (timedelta's own message,
    "unsupported type for timedelta microseconds component: str", named none)."""
    wrong = [
        f"{name} is {type(row[i]).__name__} {str(row[i])[:20]!r}"
        for i, name in _TIME_COLUMNS
        if row[i] is not None and type(row[i]) not in (int, float)
    ]
    return TypeError(f"not a time: {', '.join(wrong)}") if wrong else None


def _claimed(row: Sequence[Any]) -> stored_rows.Unrunnable:
    """What a finish needs of a claimed row: fields the claim itself wrote."""
    return stored_rows.Unrunnable(row[0], row[10], row[7], from_micros(row[17]), "")


def _shown(value: str | bytes | None) -> str | None:
    """An optional text column as text: bytes that are not UTF-8 (read by _bad_text_read)
    with U+FFFD in place of what does not decode, shown rather than failing the job."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _row_to_job(row: Sequence[Any], t: _Times) -> Job:
    job_id = row[0]
    if not (type(job_id) is type(row[1]) is type(row[2]) is type(row[3]) is str):
        raise TypeError("its id, tenant, type or queue is not text (or not UTF-8)")
    if not (type(row[4]) is type(row[7]) is type(row[8]) is int):
        raise TypeError("its priority, attempts or max_attempts is not an integer")
    return trusted_job(
        {
            "id": job_id,
            "tenant": row[1],
            "type": row[2],
            "queue": row[3],
            "priority": row[4],
            "payload": stored_json(job_id, "payload", row[5]),
            "state": stored_rows.state_of(row[6], STATE_BY_VALUE),
            "attempts": row[7],
            "max_attempts": row[8],
            "run_at": t(row[9]),
            "lease_token": _shown(row[10]),
            "lease_expires_at": t.maybe(row[11]),
            "result": None if row[12] is None else stored_json(job_id, "result", row[12]),
            "last_error": _shown(row[13]),
            "idempotency_key": _shown(row[14]),
            "created_at": t(row[15]),
            "updated_at": t(row[16]),
            "started_at": t.maybe(row[17]),
            "finished_at": t.maybe(row[18]),
        }
    )


def _tally(rows: Iterable[Sequence[Any]], events_of: Any) -> list[tuple[str, str, str, int]]:
    totals: dict[tuple[str, str, str], int] = {}
    for row in rows:
        for event in events_of(row):
            key = (row[0], row[1], event)
            totals[key] = totals.get(key, 0) + 1
    return [(q, t, e, n) for (q, t, e), n in totals.items()]


def _settle(db: sqlite3.Connection, pragma: str, patience: float = 10.0) -> None:
    """Run a connection pragma, waiting out another connection's switch to WAL.

    Switching the journal mode needs the file to itself, and SQLite answers "database
    is locked" at once, without its busy handler, while another connection is in the
    middle of the same switch: two processes (or the threads of a test) opening a new
    or pre-WAL file together. So try again for as long as the busy timeout would."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reads(
    method: Callable[Concatenate[SQLiteStore, _P], _R],
) -> Callable[Concatenate[SQLiteStore, _P], _R]:
    """A read the file refuses answers StoreUnavailable (503 with Retry-After), as a
    write does, instead of an internal error; any other error goes on as it is."""

    @functools.wraps(method)
    def read(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    return read


def _not_utf8(exc: BaseException | None) -> bool:
    """Did sqlite3 fail to decode a TEXT value (bytes written by hand or by another
    program that are not UTF-8)? Its OperationalError, or a StoreUnavailable from it."""
    while exc is not None:
        if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
            "Could not decode to UTF-8"
        ):
            return True
        exc = exc.__cause__
    return False


def _text_or_bytes(value: bytes) -> str | bytes:
    """A TEXT value as str, or as its bytes when they are not UTF-8 (row_to_job then
    names the column): the text_factory of a read retried by _bad_text_read."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _bad_text_read(
    method: Callable[Concatenate[SQLiteStore, _P], _R],
) -> Callable[Concatenate[SQLiteStore, _P], _R]:
    """One TEXT value that is not UTF-8 made sqlite3 fail the whole fetch: that job's
    GET /status, every page of GET /jobs holding it and every claim whose batch held it
    answered 503 "try again shortly" for good (found by a chaos run, s60). The call is
    made again, once, with a text_factory that hands such a value over as bytes, so
    the row reads as any damaged row does (stored_rows). The first try rolled back (a
    write's Transaction does on any error), so a write made again is made once. The
    usual text_factory is kept for every other call: it is the fast one."""

    @functools.wraps(method)
    def call(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.OperationalError, StoreUnavailable) as exc:
            if not _not_utf8(exc):
                raise
        db = self._db()
        db.text_factory = _text_or_bytes
        try:
            return method(self, *args, **kwargs)
        finally:
            db.text_factory = str

    return call


class SQLiteStore:
    def __init__(
        self,
        path: str,
        clock: Clock | None = None,
        synchronous: str = "normal",
        attempt_history: int | None = None,
        webhook_history: int | None = None,
    ) -> None:
        if synchronous.lower() not in ("normal", "full", "off"):
            raise ValueError("synchronous must be normal, full or off")
        self.clock: Clock = clock or SystemClock()
        self.history_limit = attempt_history or history.history_limit()
        self.webhook_history = webhook_history or outbox.kept_finished()
        self._finish_one = _finish_one_sql(self.history_limit)
        self._reap_sql = _reap_sql(self.history_limit)
        self._reap_unreadable_sql = _reap_sql(self.history_limit, unreadable=True)
        self.path = path
        self.synchronous = synchronous.upper()
        if path != ":memory:":
            private_file(path)  # 0600 in a 0700 folder: it holds payloads
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # Writers in this process queue here (a futex hand-off) instead of in SQLite's
        # busy handler, which sleeps in steps of milliseconds. Other processes still
        # meet at SQLite's own lock.
        self._write_lock = threading.Lock()
        absolute, on_disk = os.path.abspath(path), path != ":memory:"
        # The file SQLite opens: it follows a symbolic link, and keeps the -wal and -shm
        # beside the file the link names, not beside the link. Spool's own companions go
        # there too, so every process shares them whichever path it was given (a
        # `.spool/spool.db` linked to a data disk's file, a worker given the disk's path).
        self.file = os.path.realpath(absolute) if on_disk else path
        # Every connection after the first: the file must exist (mode=rw), none is made.
        self._uri = f"{Path(absolute).as_uri()}?mode=rw" if on_disk else None
        self._watch: FileWatch | None = None
        # ... and processes at this gate, which hands the turn over in microseconds.
        self._gate = WriteGate(self.file) if on_disk else None
        turn = functools.partial(write_turn, self._write_lock, self._gate)
        self._checkpointer = Checkpointer(self.file, self._connect, turn) if on_disk else None
        self._health = WriteHealth()
        self._hurry: float | None = None  # set by hurry: a stopping process's short patience
        before = sqlite_refused.present(self.file) if on_disk else set()
        self.notifier = SocketDirNotifier(self.file + ".wake")
        try:
            self._open_schema()
        except BaseException:
            self.close()
            if on_disk:  # a text file or a directory: take back the companions made
                sqlite_refused.remove_made(self.file, before)
            raise

    def _open_schema(self) -> None:
        """The first connection, and the schema this Spool writes, made or upgraded."""
        absolute, on_disk = os.path.abspath(self.path), self.path != ":memory:"
        first = self._keep(self._connect(create=True))
        first.executescript(SCHEMA + sqlite_webhooks.SCHEMA + sqlite_limits.SCHEMA)
        # After the schema, so the file exists: from now on the path must keep naming it
        # (a link, too: retargeted, it names another file), and SQLite's companions
        # beside the file it opened must stay those it holds.
        self._watch = FileWatch(absolute, beside=self.file) if on_disk else None
        self._add_columns()
        if not self._has_trigger("jobs_unstarted_cleared"):
            with self._write() as db:
                db.execute(UNSTARTED_CLEARED)
        if not self._has_trigger("jobs_deleted_epoch"):
            with self._write() as db:
                db.execute(EPOCH_ON_DELETE)
        if not self._has_trigger("jobs_finished_changed_epoch"):
            with self._write() as db:
                db.execute(EPOCH_ON_FINISHED_CHANGE)
        if not dashboard.installed(self._db()):
            with self._write() as db:
                dashboard.install(db)
        if not queue_totals.installed(self._db()):
            with self._write() as db:
                queue_totals.install(db)
        if not dashboard.counts_current(self._db()):
            with self._write() as db:
                dashboard.upgrade_counts(db)
        if sqlite_lists.has_retired(self._db()):
            with self._write() as db:
                sqlite_lists.drop_retired(db)
        if sqlite_limits.tie_blind_indexes(self._db()):
            with self._write() as db:
                sqlite_limits.rebuild_tie_blind(db)

    def _add_columns(self) -> None:
        """Give a file made by an older Spool the columns this one writes. Checked again
        under the write lock, so two processes opening the file at once add each once."""
        if not self._missing_columns():
            return
        with self._write() as db:
            for name, kind in self._missing_columns():
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _has_trigger(self, name: str) -> bool:
        found = self._db().execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)
        )
        return found.fetchone() is not None

    def _missing_columns(self) -> list[tuple[str, str]]:
        have = {row[1] for row in self._db().execute("PRAGMA table_info(jobs)")}
        return [(name, kind) for name, kind in ADDED_COLUMNS if name not in have]

    # -- connections -------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._keep(self._open())
        return db

    def _keep(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """Make db this thread's connection, closed with the store."""
        self._local.db = db
        with self._all_lock:
            self._all.append(db)
        return db

    def _open(self) -> sqlite3.Connection:
        """A new thread's connection to the file the store opened, else StoreUnavailable."""
        try:
            return self._connect()
        except sqlite3.Error as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable | None:
        """The 503 a SQLite error stands for, when the file (not the query) failed."""
        return cannot_read(exc, self._watch)

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        """Open the file. Only the store's first connection creates it: opened by path
        later, a file deleted under the process came back as an empty database. A
        later one must also have opened the file the store watches (a backup copied
        over it is another): that thread would read jobs the others do not see."""
        uri = None if create else self._uri
        db = sqlite3.connect(
            uri or self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            uri=uri is not None,
        )
        try:
            if uri is not None and self._watch is not None:
                self._watch.verify(db)  # before any statement: see FileWatch.verify
            for pragma in PRAGMAS:
                _settle(db, pragma)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
        except BaseException:
            # Not handed to anyone: left open, each failed connect (the checkpoint
            # thread retries after every commit) kept the file and its -wal open, and
            # its shared lock stopped the last connection's close from checkpointing.
            db.close()
            raise
        return db

    def _write(self) -> Transaction:
        return Transaction(
            self._db(),
            self._write_lock,
            self._gate,
            self._checkpointer,
            self._watch,
            self._health,
            self._hurry,
        )

    def hurry(self, seconds: float | None) -> None:
        """This process is stopping: a write begun from now on waits at most `seconds`
        for its turn (None: the usual PATIENCE again). With another program holding the
        file's write lock (`BEGIN EXCLUSIVE` in a sqlite3 shell) each try at a finished
        job's result waited the whole 10 s busy timeout, and a `spool worker` told to stop
        took 21 s with a one-second handler. A write already waiting keeps its patience:
        SQLite's busy handler cannot be cut short from another thread."""
        self._hurry = seconds

    # -- contract ----------------------------------------------------------
    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        if len(jobs) == 1 and jobs[0].idempotency_key is None and cap is None:
            return [self._add_one(jobs[0])]
        now = to_micros(self.clock.now())
        results: list[AddResult | None] = [None] * len(jobs)
        rows: list[tuple[Any, ...]] = []
        fresh: dict[int, Job] = {}
        times = _Times()
        with self._write() as db:
            staged: dict[tuple[str, str], tuple[Job, str | None]] = {}
            for i, new in enumerate(jobs):
                if new.idempotency_key is not None:
                    key = (new.tenant, new.idempotency_key)
                    if key in staged:
                        job, callback_url = staged[key]
                        results[i] = AddResult(job, False, callback_url)
                        continue
                    found = db.execute(
                        f"SELECT {COLUMNS}, callback_url FROM jobs"
                        " WHERE tenant = ? AND idempotency_key = ?",
                        key,
                    ).fetchone()
                    if found is not None:
                        results[i] = AddResult(row_to_job(found), False, found[-1])
                        continue
                payload = _dumps(new.payload)
                run_at = to_micros(new.run_at)
                rows.append(
                    (
                        new.id,
                        new.tenant,
                        new.type,
                        new.queue,
                        new.priority,
                        payload,
                        new.max_attempts,
                        run_at,
                        new.idempotency_key,
                        now,
                        now,
                        new.callback_url,
                    )
                )
                job = queued_job(new, times(run_at), times(now))
                fresh[i] = job
                if new.idempotency_key is not None:
                    staged[(new.tenant, new.idempotency_key)] = (job, new.callback_url)
            if cap is not None:  # counted in this BEGIN IMMEDIATE: no writer in between
                refused = cap.refuses(_waiting(db, cap.tenant), len(rows))
                if refused is not None:
                    raise refused
            if len(rows) == 1:  # the common single enqueue: plain execute is cheaper
                row = rows[0]
                db.execute(INSERT, row)
                db.execute(BUMP, (row[3], row[2], "enqueued", 1))
            elif rows:
                db.executemany(INSERT, rows)
                db.executemany(BUMP, _tally(((r[3], r[2]) for r in rows), lambda _: ("enqueued",)))
        for i, job in fresh.items():
            results[i] = AddResult(job, True)
        if rows:
            self.notifier.notify()
        return [r for r in results if r is not None]

    def _add_one(self, new: NewJob) -> AddResult:
        """The most common call (one job, no idempotency key), without the batch bookkeeping."""
        now_dt = self.clock.now()
        now = to_micros(now_dt)
        run_at = to_micros(new.run_at)
        row = (
            new.id,
            new.tenant,
            new.type,
            new.queue,
            new.priority,
            _dumps(new.payload),
            new.max_attempts,
            run_at,
            None,
            now,
            now,
            new.callback_url,
        )
        with self._write() as db:
            db.execute(INSERT, row)
            db.execute(BUMP, (new.queue, new.type, "enqueued", 1))
        self.notifier.notify()
        # Times at the stored precision, as get() would return them.
        job = queued_job(new, _as_stored(new.run_at, run_at), _as_stored(now_dt, now))
        return AddResult(job, True)

    def check_writable(self) -> None:
        if self._watch is not None:
            self._watch.check()
        self._health.check()
        check_room(self.file)
        probe_turn(self._db(), self._write_lock, self._gate)

    @_bad_text_read
    @_reads
    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        row = self._db().execute(*_owned(f"SELECT {COLUMNS} FROM jobs", job_id, tenant)).fetchone()
        return None if row is None else row_to_job(row)

    def _reap(self, db: sqlite3.Connection, now: int) -> None:
        db.execute(GIVE_BACK_SQL, (now,))
        expired = db.execute(self._reap_sql, (now, LEASE_EXPIRED_ERROR)).fetchall()
        expired += db.execute(self._reap_unreadable_sql, (now, UNREADABLE_LEASE_ERROR)).fetchall()
        if expired:
            db.executemany(
                BUMP, _tally(expired, lambda r: ("failed", "dead" if r[2] == "dead" else "retried"))
            )
            buried = [r for r in expired if r[2] == "dead"]
            sqlite_webhooks.write_deliveries(
                db, ((r[3], r[4], r[7], "dead") for r in buried), now, self.webhook_history
            )
            for queue, type_, _, job_id, tenant, attempts, max_attempts, _ in buried:
                log_buried_by_reap(job_id, tenant, type_, queue, attempts, max_attempts)

    @_bad_text_read
    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        if limit <= 0 or (ids is not None and not ids) or (queues is not None and not queues):
            with self._write() as db:  # nothing to take, but expired leases are reaped
                self._reap(db, to_micros(self.clock.now()))
            return []
        unstarted = None if started else 1
        if policy is not None and policy.active:
            return self._claim_within(limit, lease_seconds, queues, ids, policy, unstarted)
        where = ["state IN ('queued', 'retrying')", sqlite_limits.DUE]
        filters: list[Any] = []
        if queues is not None:
            where.append(f"queue IN ({','.join('?' * len(queues))})")
            filters.extend(queues)
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            filters.extend(ids)
        sql = (
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = ?, "
            "lease_expires_at = ?, started_at = ?, updated_at = ?, lease_worker = ?, unstarted = ? "
            "WHERE id IN ("
            f"SELECT id FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY priority DESC, run_at, created_at, id LIMIT ?) RETURNING {COLUMNS}"
        )
        with self._write() as db:
            # The clock is read once the turn to write is held: a lease dated from before
            # a wait behind other writers could be over before the claim was written,
            # and the job dropped unstarted with an attempt spent.
            now = to_micros(self.clock.now())
            expires = now + micros_of(lease_seconds)
            params = [new_lease_token(), expires, now, now, worker_id.current(), unstarted, now]
            self._reap(db, now)
            rows = db.execute(sql, [*params, *filters, limit]).fetchall()
        jobs = self._runnable(rows)
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return jobs

    def _runnable(self, rows: Sequence[Sequence[Any]]) -> list[Job]:
        """The claimed rows' jobs, but for those no handler may be given (a row in a bad
        shape, a payload that is not JSON): made dead here, without running (stored_rows)."""
        times = _Times()
        jobs, bad = stored_rows.runnable(rows, lambda r: row_to_job(r, times), _claimed)
        if bad:
            stored_rows.bury(self, bad, self.clock.now())
        return jobs

    def _claim_within(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        ids: Sequence[str] | None,
        policy: ClaimPolicy,
        unstarted: int | None,
    ) -> list[Job]:
        """Claim under limits and fair turns: decided and taken in one write transaction.

        The clock is read once the write lock is held: a claim that queued behind another
        writer starts its jobs now, and a rate limit's window must count them from now,
        not from when the claim began to wait (a later claim's window would miss them)."""
        with self._write() as db:
            now = to_micros(self.clock.now())
            expires = now + micros_of(lease_seconds)
            self._reap(db, now)
            admission = sqlite_limits.usage(db, policy, now)
            chosen = sqlite_limits.choose(db, admission, limit, now, queues, ids)
            if not chosen:
                return []
            rows = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = ?, "
                "lease_expires_at = ?, started_at = ?, updated_at = ?, lease_worker = ?, "
                f"unstarted = ? WHERE id IN ({','.join('?' * len(chosen))}) RETURNING {COLUMNS}",
                [new_lease_token(), expires, now, now, worker_id.current(), unstarted, *chosen],
            ).fetchall()
            # COLUMNS puts type third and queue fourth.
            sqlite_limits.record_starts(db, admission, [(r[3], r[2]) for r in rows], now)
        # Built once the write lock is let go: ~10 us a job the other writers need not wait for.
        jobs = self._runnable(rows)
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return jobs

    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        now = to_micros(self.clock.now())
        with self._write() as db:
            return sqlite_limits.take_tokens(db, key, rate, burst, cost, now)

    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        now = to_micros(self.clock.now())
        applied = [False] * len(completions)
        rows: list[tuple[Any, ...]] = []
        firsts: list[int] = []  # the first completion of each job goes in one statement
        repeats: list[int] = []  # a second one for the same job must see the first applied
        seen: set[str] = set()
        for i, c in enumerate(completions):
            if c.state is not JobState.SUCCEEDED:
                result = None
            else:
                result = "null" if c.result is None else _dumps(c.result)
            retry_at = to_micros(c.retry_at) if c.retry_at is not None else None
            finished = None if c.state is JobState.RETRYING else now
            entry = None if c.attempt is None else history.encode_within(c.attempt)
            rows.append(
                (
                    c.job_id,
                    c.lease_token,
                    c.state.value,
                    result,
                    utf8_text(c.error),
                    retry_at,
                    finished,
                    entry,
                )
            )
            (repeats if c.job_id in seen else firsts).append(i)
            seen.add(c.job_id)
        done: list[tuple[str, str, str]] = []
        ended: list[tuple[str, str, str | None, str]] = []  # for the webhook outbox
        with self._write() as db:
            for start in range(0, len(firsts), FINISH_CHUNK):
                chunk = firsts[start : start + FINISH_CHUNK]
                params: list[Any] = [now]
                for i in chunk:
                    params.extend(rows[i])
                position = {rows[i][0]: i for i in chunk}
                sql = _finish_sql(len(chunk), self.history_limit)
                for job_id, queue, type_, state, tenant, url in db.execute(sql, params):
                    applied[position[job_id]] = True
                    done.append((queue, type_, state))
                    if url is not None and state != "retrying":
                        ended.append((job_id, tenant, url, state))
            for i in repeats:
                job_id, token, state, result, error, retry_at, finished, entry = rows[i]
                row = db.execute(
                    self._finish_one,
                    (state, result, error, retry_at, now, finished, entry, job_id, token),
                ).fetchone()
                if row is not None:
                    applied[i] = True
                    done.append((row[0], row[1], state))
                    if row[3] is not None and state != "retrying":
                        ended.append((job_id, row[2], row[3], state))
            sqlite_webhooks.write_deliveries(db, ended, now, self.webhook_history)
            if done:
                db.executemany(BUMP, _tally(done, lambda r: completion_events(JobState(r[2]))))
        return applied

    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        if not leases:
            return []
        marked: set[str] = set()
        with self._write() as db:
            now = to_micros(self.clock.now())
            for first in range(0, len(leases), START_CHUNK):
                chunk = leases[first : first + START_CHUNK]
                params = [v for lease in chunk for v in lease]
                marked.update(r[0] for r in db.execute(_start_sql(len(chunk)), [*params, now]))
        return [job_id in marked for job_id, _ in leases]

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        with self._write() as db:
            now = to_micros(self.clock.now())  # once the turn is held, as in claim()
            row = db.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ? "
                "AND lease_token = ? AND state = 'running' AND lease_expires_at > ? RETURNING id",
                (now + micros_of(lease_seconds), now, job_id, lease_token, now),
            ).fetchone()
        return row is not None

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        if not leases:
            return []
        kept: set[str] = set()
        with self._write() as db:
            now = to_micros(self.clock.now())  # once the turn is held, as in claim()
            for first in range(0, len(leases), START_CHUNK):
                chunk = leases[first : first + START_CHUNK]
                params = [v for lease in chunk for v in lease]
                ends = (now + micros_of(lease_seconds), now)
                kept.update(
                    r[0] for r in db.execute(_extend_sql(len(chunk)), [*ends, *params, now])
                )
        return [job_id in kept for job_id, _ in leases]

    @_bad_text_read
    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        now = to_micros(self.clock.now())
        with self._write() as db:
            row = db.execute(*_owned(f"SELECT {COLUMNS} FROM jobs", job_id, tenant)).fetchone()
            if row is None:
                raise JobNotFound("job not found", {"id": job_id})
            if row[6] not in ("queued", "retrying"):
                raise InvalidTransition(f"a {row[6]} job cannot be cancelled", {"state": row[6]})
            # Read before the write: a damaged record raises JobUnreadable here, with
            # nothing changed (it was read after the commit: 500, yet cancelled).
            row_to_job(row)
            updated = db.execute(
                "UPDATE jobs SET state = 'cancelled', updated_at = ?, finished_at = ? "
                f"WHERE id = ? RETURNING {COLUMNS}, callback_url",
                (now, now, job_id),
            ).fetchone()
            db.execute(BUMP, (row[3], row[2], "cancelled", 1))
            sqlite_webhooks.write_deliveries(
                db, [(job_id, row[1], updated[-1], "cancelled")], now, self.webhook_history
            )
        return row_to_job(updated)

    @_bad_text_read
    @_reads
    def list_jobs(self, query: JobQuery) -> JobPage:
        columns = COLUMNS if query.bodies else SUMMARY_COLUMNS
        return sqlite_lists.list_jobs(self._db(), columns, query, row_to_job)

    @_bad_text_read
    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        if not job_ids:
            return []
        now = to_micros(self.clock.now())
        wanted = list(dict.fromkeys(job_ids))
        moved: list[Job] = []
        with self._write() as db:
            if cap is not None:  # counted in this BEGIN IMMEDIATE: no writer in between
                wanted = redrive_fit(cap, _waiting(db, cap.tenant), _dead(db, wanted, cap))
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                tenant_clause = " AND tenant = ?" if tenant is not None else ""
                most, most_params = _redrive_most(attempts)
                rows = db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, result = NULL, "
                    f"max_attempts = {most}, "
                    f"finished_at = NULL, updated_at = ? WHERE state = 'dead' AND id IN ({marks})"
                    f"{tenant_clause} RETURNING {COLUMNS}",
                    [
                        now,
                        *most_params,
                        now,
                        *chunk,
                        *([tenant] if tenant is not None else []),
                    ],
                ).fetchall()
                moved.extend(row_to_job(r) for r in rows)
        if moved:
            self.notifier.notify()
        # RETURNING gives rows in the table's order: answer in the order asked.
        by_id = {job.id: job for job in moved}
        return [by_id[i] for i in wanted if i in by_id]

    @_reads
    def counts(self) -> dict[tuple[str, JobState], int]:
        # The kept per-state counts (sqlite_dashboard.py's triggers), not a GROUP BY over
        # every job: /metrics asks on every scrape (about 2 s with a million jobs).
        return dashboard.state_counts(self._db(), None)

    @_reads
    def counters(self) -> dict[CounterKey, int]:
        rows = self._db().execute("SELECT queue, type, event, n FROM counters").fetchall()
        return {CounterKey(q, t, e): n for q, t, e, n in rows}

    @_reads
    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        # Summaries kept by triggers (sqlite_queue_totals.py): the rows of the named
        # queues and the totals, not a row per queue name ever used.
        return queue_totals.read(self._db(), keep, busiest)

    @_reads
    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        if queues is not None and not queues:
            return None  # no queue named: none falls due (not every queue)
        queue_clause = f" AND queue IN ({','.join('?' * len(queues))})" if queues else ""
        params = list(queues or [])
        db = self._db()
        due = db.execute(
            f"SELECT MIN(run_at) FROM jobs WHERE state IN ('queued', 'retrying'){queue_clause}",
            params,
        ).fetchone()[0]
        lease = db.execute(
            f"SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running'{queue_clause}", params
        ).fetchone()[0]
        # A time edited by hand into text or a float is no time: a worker asking must
        # not fail on it (it did, TypeError on every idle poll). Such a job is never due.
        present = [t for t in (due, lease) if type(t) is int]
        return from_micros(min(present)) if present else None

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        with self._write() as db:
            owners = db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL "
                "AND finished_at < ? AND state IN ('succeeded', 'dead', 'cancelled') LIMIT ?)"
                " RETURNING id",  # each row's tenant's epoch moves (EPOCH_ON_DELETE)
                (to_micros(finished_before), limit),
            ).fetchall()
            dashboard.forget_old_minutes(db, self.clock.now())
            return len(owners)

    @_reads
    def cache_epoch(self, tenant: str) -> int:
        """Refused (StoreUnavailable) once the path no longer names the file this store
        opened: a connection still open on the old file reads its epoch as before, so a
        file removed and made again by another process (a never-touched tenant reads 0
        there too) left the caches answering for jobs the file at the path never had,
        for their whole TTL (found by a chaos run, s49). One stat per file, about once
        a second per tenant (chalicelib/api/cache.py); the cache then vouches for nothing."""
        if self._watch is not None:
            self._watch.check()
        row = self._db().execute("SELECT n FROM tenant_epochs WHERE tenant = ?", (tenant,))
        found = row.fetchone()
        return int(found[0]) if found is not None else 0

    @_bad_text_read
    @_reads
    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        row = self._db().execute(*_owned("SELECT attempt_log FROM jobs", job_id, tenant)).fetchone()
        if row is None:
            return None
        try:
            entries = json.loads(row[0]) if row[0] is not None else []
            return history.decode_all(entries, self.history_limit)
        except (*stored_rows.BAD_SHAPE, RecursionError) as exc:
            raise stored_rows.damaged(job_id, exc) from exc

    @_reads
    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        return dashboard.state_counts(self._db(), tenant)

    @_reads
    def waiting_count(self, tenant: str) -> int:
        return _waiting(self._db(), tenant)  # the count a capped add takes in its write

    @_reads
    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        return dashboard.throughput(self._db(), since, tenant)

    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        gone: list[str] = []
        wanted = list(dict.fromkeys(job_ids))
        tenant_clause = " AND tenant = ?" if tenant is not None else ""
        with self._write() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = db.execute(
                    f"DELETE FROM jobs WHERE id IN ({','.join('?' * len(chunk))}) "
                    f"AND state = 'dead'{tenant_clause} RETURNING id",  # EPOCH_ON_DELETE
                    [*chunk, *([tenant] if tenant is not None else [])],
                ).fetchall()
                gone.extend(r[0] for r in rows)
        deleted = set(gone)  # RETURNING's order is the table's: answer in the order asked
        return [i for i in wanted if i in deleted]

    @_reads
    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        row = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM jobs WHERE tenant = ? AND idempotency_key = ?",
                (tenant, idempotency_key),
            )
            .fetchone()
        )
        return None if row is None else row_to_job(row)

    @_reads
    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        if queues is not None and not queues:
            return {}
        if tenant is not None:
            return dashboard.oldest_due(self._db(), self.clock.now(), tenant, queues)
        queue_clause = f" AND queue IN ({','.join('?' * len(queues))})" if queues else ""
        rows = (
            self._db()
            .execute(
                "SELECT queue, MIN(run_at) FROM jobs WHERE state IN ('queued', 'retrying') "
                f"AND run_at <= ?{queue_clause} GROUP BY queue",
                [to_micros(self.clock.now()), *(queues or [])],
            )
            .fetchall()
        )
        return {queue: from_micros(at) for queue, at in rows}

    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        now = to_micros(self.clock.now())
        with self._write() as db:
            db.execute(
                "INSERT INTO workers (worker, queues, started_at, last_beat) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (worker) DO UPDATE SET queues = excluded.queues, "
                "started_at = excluded.started_at, last_beat = excluded.last_beat",
                (worker, history.queues_text(queues), to_micros(started_at), now),
            )
            db.execute(
                "DELETE FROM workers WHERE last_beat < ?",
                (now - history.BEAT_RETENTION_SECONDS * 1_000_000,),
            )

    def forget_worker(self, worker: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM workers WHERE worker = ?", (worker,))

    @_reads
    def live_workers(self, within: float) -> list[WorkerBeat]:
        since = to_micros(self.clock.now()) - micros_of(within)
        rows = (
            self._db()
            .execute(
                "SELECT worker, queues, started_at, last_beat FROM workers "
                "WHERE last_beat >= ? ORDER BY worker",
                (since,),
            )
            .fetchall()
        )
        return [
            WorkerBeat(w, history.queues_of(q), from_micros(s), from_micros(b))
            for w, q, s, b in rows
        ]

    # -- the webhook outbox (see base.py; SQL in sqlite_webhooks.py) ------------
    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        if limit <= 0:
            return []
        now = to_micros(self.clock.now())
        with self._write() as db:
            return sqlite_webhooks.claim(db, limit, now, now + micros_of(lease_seconds))

    def finish_webhook(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        if outcome not in outbox.OUTCOMES:
            raise ValueError(f"unknown webhook outcome {outcome!r}")
        now = to_micros(self.clock.now())
        at = None if retry_at is None else to_micros(retry_at)
        with self._write() as db:
            return sqlite_webhooks.finish(db, delivery_id, lease_token, outcome, at, error, now)

    @_reads
    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        # Whether the job is there (and the tenant's), not its whole row: a job whose
        # row does not read still has its deliveries to show (the deliverer reads them).
        db = self._db()
        if db.execute(*_owned("SELECT 1 FROM jobs", job_id, tenant)).fetchone() is None:
            return []
        return sqlite_webhooks.for_job(self._db(), job_id)

    @_reads
    def webhook_counts(self) -> dict[str, int]:
        return sqlite_webhooks.counts(self._db())

    def close(self) -> None:
        self.notifier.close()
        if self._checkpointer is not None:  # first: one in flight may hold the gate
            self._checkpointer.close()
        if self._gate is not None:
            with self._write_lock:  # not while a writer of this process holds it
                self._gate.close()
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def from_url(url: str, clock: Clock | None = None) -> SQLiteStore:
    from chalicelib.storage import sqlite_path

    path, options = sqlite_path(url)
    if os.path.isdir(path):  # else "unable to open database file", or "Is a directory"
        folder = os.path.normpath(path)
        raise ValueError(f"{folder} is a folder: name the database file in it ({folder}/spool.db)")
    try:
        return SQLiteStore(path, clock, synchronous=synchronous_option(options))
    except sqlite3.DatabaseError as exc:
        # Not a database, a directory, no permission: open_store turns this into a
        # ConfigError naming SPOOL_STORE_URL instead of an "unexpected error".
        raise ValueError(
            f"{path} cannot be opened as a SQLite database: {exc}{_folder_trouble(path)}"
        ) from None
    except OSError as exc:  # making the file or its folder (or the lock and wake files)
        where = exc.filename or path
        raise ValueError(
            f"cannot create {where}: {exc.strerror or exc}{_folder_trouble(path)}; "
            "give a path in a folder this user can write"
        ) from None


def _folder_trouble(path: str) -> str:
    """What the folder says when SQLite says only "unable to open database file": a WAL
    database makes its -wal and -shm files beside it, so even a reader needs to write
    there, and a read-only mount or a folder of another user's is the usual cause."""
    folder = os.path.dirname(os.path.realpath(path))  # where SQLite puts them: past a link
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" (the file system holding {folder} is mounted read-only)"
    except OSError:
        return ""
    if not os.access(folder, os.W_OK):
        return f" ({folder} is not writable by this user)"
    return ""


def synchronous_option(options: dict[str, str]) -> str:
    """`durability=normal|full` (the word every store takes) or SQLite's own `synchronous=`.
    Every value is checked here, before any file is opened: `spool jobs` on a URL with a
    bad option names the option, not the missing file (local/cli.py looks first)."""
    durability = options.get("durability")
    if durability is None:
        synchronous = options.get("synchronous", "normal")
        if synchronous.lower() not in ("normal", "full", "off"):
            raise ValueError("synchronous must be normal, full or off")
        return synchronous
    if durability.lower() not in ("normal", "full"):
        raise ValueError(f"durability must be normal or full, not {durability!r}")
    if "synchronous" in options and options["synchronous"].lower() != durability.lower():
        raise ValueError("give durability= or synchronous=, not two different ones")
    return durability


def _redrive_most(attempts: RedriveAttempts | None) -> tuple[str, list[Any]]:
    """SQL for a redriven row's max_attempts (RedriveAttempts.cut) and its parameters."""
    if attempts is None:
        return "max_attempts", []
    cases = "".join(" WHEN ? THEN ?" for _ in attempts.above)
    bound = f"CASE type{cases} ELSE ? END" if cases else "?"
    params: list[Any] = [p for t in attempts.above for p in (t, attempts.most(t))]
    return f"MIN(max_attempts, {bound})", [*params, attempts.ceiling]
