"""Limits and fair turns on Postgres: what a claim with a policy reads and writes
(migration 0006_limits.sql holds the tables; chalicelib/limits.py decides).

Atomicity: the claim transaction first takes one transaction-level advisory
lock per schema, so the claims that carry a policy run one at a time across
every process. It tries it without waiting (`try_lock`) in the same round trip
as the reap and the reads (`send_state`), which act only under it (LOCK_GATE);
when another claim holds it, it waits (`lock`) and reaps and reads again. Under
READ COMMITTED each later statement takes a fresh snapshot, so a claim counts
the running jobs and recorded starts that every earlier claim committed, and
its own reap. The lock goes with the commit, after the claim and its starts are
visible. Candidate rows are still read with
`FOR UPDATE SKIP LOCKED`, so claims without a policy (which never take the lock)
cannot take the same job.

- Concurrency: running jobs counted per limited queue and type (only those),
  from the running rows the partial index `jobs_leases` already holds.
- Rate: `limit_starts` holds (key, instant, n) per claim; a claim counts the
  starts after its window opened (now - window) and prunes the older ones.
- Fair: tenants with waiting jobs come from the kept counts (`job_counts`),
  each checked for a due job by one index seek; passes and the last turn live
  in `fair_passes` and `fair_clock`. The jobs of the tenants expected to take
  turns are read in one statement, more only if the walk needs them.
- Full limits: once a queue's or type's limit is full, its jobs are left out
  without being read (per-(tenant, queue, type) ranges of the `jobs_fair`
  index), so a held backlog of 50,000 costs a claim nothing.
- Token buckets (`take_tokens`): one row per key in `token_buckets`, locked by
  the take, so concurrent takes from any process queue on that row alone.

Every text value is stored escaped the way the store escapes all text
(postgres._enc), so `Ask` carries the store's encode and decode functions.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

import psycopg
from psycopg import errors as pg_errors

from chalicelib.clock import from_epoch, to_epoch
from chalicelib.limits import (
    STEP_BACK,
    Admission,
    ClaimPolicy,
    Hold,
    HoldLog,
    bucket_stamp,
    fair_pick,
    refill,
    take,
)
from chalicelib.storage.pg_pipeline import pipelined_transaction

Conn = psycopg.Connection[Any]
Text = Callable[[str], str]

# Any constant works (migrations use 0x5B001); it only has to be the same for every process.
LOCK_SPACE = 0x5B002
WAITING = "state IN ('queued', 'retrying')"

LOCK_SQL = "SELECT pg_advisory_xact_lock(%s::int, hashtext(%s::text))"
# lock()'s bounded wait: lock_timeout for this transaction, then back to the session's.
LOCK_WAIT_SQL = "SELECT set_config('lock_timeout', %s, true)"
LOCK_WAIT_DONE_SQL = "SET LOCAL lock_timeout TO DEFAULT"
TRY_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(%s::int, hashtext(%s::text))"
# The same, in the statement that turns the commit's wait for the WAL flush off
# (postgres.SYNC_OFF, as SET LOCAL does): one statement fewer to send and parse.
TRY_LOCK_SYNC_OFF_SQL = (
    "SELECT pg_try_advisory_xact_lock(%s::int, hashtext(%s::text)),"
    " set_config('synchronous_commit', 'off', true)"
)
# True once this transaction holds the lock (taken here if it is free now: a
# transaction may take it again, and keeps it to its end). A statement sent before
# the claim knows whether `try_lock` took it does its work only under it.
LOCK_GATE = "(SELECT pg_try_advisory_xact_lock(%(gate_space)s::int, hashtext(%(gate_key)s::text)))"


def gate_params(schema: str | None) -> dict[str, Any]:
    return {"gate_space": LOCK_SPACE, "gate_key": schema or "public"}


RUNNING_SQL = (
    "SELECT 'queue', queue, count(*) FROM jobs"
    " WHERE state = 'running' AND queue = ANY(%(queues)s::text[]) GROUP BY queue"
    " UNION ALL"
    " SELECT 'type', type, count(*) FROM jobs"
    " WHERE state = 'running' AND type = ANY(%(types)s::text[]) GROUP BY type"
)

# Each key with the start of its own window: starts at or before it are out.
_WINDOWS = "unnest(%(keys)s::text[], %(since)s::timestamptz[]) AS w(key, since)"
PRUNE_STARTS_SQL = (
    f"DELETE FROM limit_starts s USING {_WINDOWS} WHERE s.key = w.key AND s.at <= w.since"
)
# Starts dated more than STEP_BACK ahead of now were recorded before the wall clock
# stepped back: they count as starting now (moved to now, summed into a start already
# there), not until the clock is back where it was.
RESTAMP_STARTS_SQL = (
    "WITH moved AS (DELETE FROM limit_starts s WHERE s.key = ANY(%(keys)s::text[])"
    " AND s.at > %(ahead)s RETURNING s.key, s.n)"
    " INSERT INTO limit_starts (key, at, n) SELECT key, %(now)s, sum(n) FROM moved GROUP BY key"
    " ON CONFLICT (key, at) DO UPDATE SET n = limit_starts.n + excluded.n"
)
# No upper bound: a start recorded by a worker whose clock runs a little ahead of
# this one's may lie after its `now`, and it must count all the same (one more
# than STEP_BACK ahead was moved to now by RESTAMP_STARTS_SQL).
STARTED_SQL = (
    f"SELECT w.key, COALESCE(sum(s.n), 0)::bigint FROM {_WINDOWS}"
    " LEFT JOIN limit_starts s ON s.key = w.key AND s.at > w.since GROUP BY w.key"
)
RECORD_STARTS_SQL = (
    "INSERT INTO limit_starts (key, at, n)"
    " SELECT key, %(now)s, n FROM unnest(%(keys)s::text[], %(ns)s::int[]) AS u(key, n)"
    " ON CONFLICT (key, at) DO UPDATE SET n = limit_starts.n + excluded.n"
)

# The statements below find their rows by index whatever the statistics say
# (a single tenant's backlog makes `tenant = x` look unselective, and a generic
# plan would walk jobs_due or jobs_waiting_run_at with a filter instead): each
# asks for an order that only the intended index gives. A row comparison
# `(tenant, queue) >= (x, y)` positions a scan without making the leading
# columns constants, so `ORDER BY tenant, queue, ...` stays an order to honour,
# and the first row is checked to belong to (x, y).

# Tenants with a due job: the kept counts name who has waiting jobs in which
# queue (a small table); the first entry of each pair in jobs_waiting_by_queue
# (its earliest run_at) says whether one is due yet. Never a walk over a backlog.
TENANTS_SQL = (
    "SELECT w.tenant, p.pass FROM (SELECT DISTINCT c.tenant FROM ("
    f" SELECT tenant, queue FROM job_counts WHERE {WAITING}{{queues}}"
    " GROUP BY tenant, queue HAVING sum(n) > 0) c"
    " CROSS JOIN LATERAL (SELECT j.tenant, j.queue, j.run_at FROM jobs j"
    f" WHERE (j.tenant, j.queue) >= (c.tenant, c.queue) AND j.{WAITING}"
    " ORDER BY j.tenant, j.queue, j.run_at LIMIT 1) f"
    " WHERE f.tenant = c.tenant AND f.queue = c.queue AND f.run_at <= %(now)s) w"
    " LEFT JOIN fair_passes p ON p.tenant = w.tenant"
)
_CLOCK = "(SELECT COALESCE((SELECT clock FROM fair_clock), 0)::float8 AS clock)"
# The tenants with a due job, each with its pass and the clock (no row: no turn to take).
TURNS_SQL = f"SELECT w.tenant, w.pass, k.clock FROM ({{tenants}}) w CROSS JOIN {_CLOCK} k"
# The passes and the clock of the last turn, in one statement.
SAVE_TURNS_SQL = (
    "WITH saved AS (INSERT INTO fair_passes (tenant, pass)"
    " SELECT * FROM unnest(%(tenants)s::text[], %(passes)s::float8[])"
    " ON CONFLICT (tenant) DO UPDATE SET pass = excluded.pass)"
    " UPDATE fair_clock SET clock = %(clock)s"
)

# Due jobs best first, in the order of the plain claim (index jobs_due): used
# while no limit is full, so every row it reads is one the claim can start, or
# the one that fills a limit. Rows are locked so a claim without a policy cannot
# take them meanwhile; held ones stay untouched.
DUE_SQL = (
    f"SELECT id, tenant, queue, type FROM jobs WHERE {WAITING} AND run_at <= %(now)s{{where}}"
    " ORDER BY priority DESC, run_at, created_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)

# Due jobs best first, leaving out the queues and types whose limit is full
# without reading their jobs: however big a held backlog, a claim walks one
# index range per (tenant, queue, type) with waiting jobs (index jobs_fair).
# `pairs` (tenant, queue, n) come from the kept counts; a loose index scan finds
# each pair's types (one seek per type); each stream gives its best n. Only
# jobs_fair orders by -priority::bigint.
_NEXT_KIND = (
    " CROSS JOIN LATERAL (SELECT j.tenant, j.queue, j.type FROM jobs j"
    f" WHERE {{after}} AND j.{WAITING} ORDER BY j.tenant, j.queue, j.type LIMIT 1) f"
    " WHERE f.tenant = {prev}.tenant AND f.queue = {prev}.queue"
)
_IN_QUEUES = "(%(queues)s::text[] IS NULL OR c.queue = ANY(%(queues)s::text[]))"


def _streams_sql(pairs: str, tail: str, before: str = "") -> str:
    return (
        f"WITH RECURSIVE {before}pairs AS ({pairs}),"
        " kinds AS (SELECT p.tenant, p.queue, f.type, p.n FROM pairs p"
        + _NEXT_KIND.format(after="(j.tenant, j.queue) >= (p.tenant, p.queue)", prev="p")
        + " UNION ALL SELECT k.tenant, k.queue, f.type, k.n FROM kinds k"
        + _NEXT_KIND.format(
            after="(j.tenant, j.queue, j.type) > (k.tenant, k.queue, k.type)", prev="k"
        )
        + "), streams AS (SELECT s.*, k.n FROM kinds k CROSS JOIN LATERAL ("
        " SELECT j.id, j.tenant, j.queue, j.type, j.priority, j.run_at, j.created_at FROM jobs j"
        f" WHERE j.tenant = k.tenant AND j.queue = k.queue AND j.type = k.type AND j.{WAITING}"
        " AND j.run_at <= %(now)s AND j.id <> ALL(%(seen)s::text[])"
        " ORDER BY -j.priority::bigint, j.run_at, j.created_at, j.id LIMIT k.n"
        " FOR UPDATE SKIP LOCKED) s WHERE k.type <> ALL(%(full_types)s::text[]))" + tail
    )


# Every tenant's streams, merged in claim order: the best %(n)s.
STREAMS_SQL = _streams_sql(
    "SELECT c.tenant, c.queue, %(n)s::int AS n FROM job_counts c"
    f" WHERE c.{WAITING} AND {_IN_QUEUES} AND c.queue <> ALL(%(full_queues)s::text[])"
    " GROUP BY c.tenant, c.queue HAVING sum(c.n) > 0",
    " SELECT id, tenant, queue, type FROM streams"
    " ORDER BY priority DESC, run_at, created_at, id LIMIT %(n)s",
)
# Some tenants' streams, each tenant's best `n` of its own (fair turns): one
# statement for every tenant whose turn is expected in this claim.
TENANT_STREAMS_SQL = _streams_sql(
    "SELECT c.tenant, c.queue, w.n FROM job_counts c"
    " JOIN unnest(%(tenants)s::text[], %(quotas)s::int[]) AS w(tenant, n) ON w.tenant = c.tenant"
    f" WHERE c.{WAITING} AND {_IN_QUEUES} AND c.queue <> ALL(%(full_queues)s::text[])"
    " GROUP BY c.tenant, c.queue, w.n HAVING sum(c.n) > 0",
    " SELECT id, tenant, queue, type FROM (SELECT s.*, row_number() OVER (PARTITION BY s.tenant"
    " ORDER BY s.priority DESC, s.run_at, s.created_at, s.id) AS r FROM streams s) x"
    " WHERE x.r <= x.n ORDER BY x.tenant, x.priority DESC, x.run_at, x.created_at, x.id",
)

# The first read of a fair claim, sent with the state reads before they are read (so
# the quotas that `_quotas` works out in Python from them are worked out here, the
# same stride turns): each tenant's turns start at max(its pass, the clock) and step
# by 1/weight; the claim's `n` earliest say how many of its jobs to read. Only the
# turns that can be among them are made: none after the n-th tenant's first turn, nor
# after one tenant's n-th. One row per (tenant, quota) with no job, or per job read
# (a tenant with a quota and no row read has nothing due). Gated on the limits' lock
# (the reap's REAP_GATE): sent before the claim knows it holds it, it locks no row
# unless it does. A guess, as _quotas is: ties may go another way, and a tenant that
# needs more reads more.
_FAIR_TURNS = (
    "state AS (SELECT w.tenant, greatest(COALESCE(w.pass, k.clock), k.clock) AS s,"
    " COALESCE(x.w, 1)::float8 AS w FROM ({tenants}) w"
    f" CROSS JOIN {_CLOCK} k"
    " LEFT JOIN unnest(%(weighted)s::text[], %(weights)s::int[]) AS x(tenant, w)"
    " ON x.tenant = w.tenant),"
    " cut AS (SELECT least((SELECT s FROM state ORDER BY s LIMIT 1 OFFSET %(n)s - 1),"
    " (SELECT min(s + (%(n)s - 1) / w) FROM state)) AS c),"
    " quotas AS (SELECT tenant, count(*)::int AS n FROM (SELECT t.tenant FROM state t"
    " CROSS JOIN cut CROSS JOIN LATERAL generate_series(0,"
    " least(%(n)s - 1, floor((cut.c - t.s) * t.w)::int + 1)) g(k)"
    " ORDER BY t.s + g.k / t.w, t.tenant LIMIT %(n)s) x GROUP BY tenant),"
)
FIRST_STREAMS_SQL = _streams_sql(
    "SELECT c.tenant, c.queue, q.n FROM job_counts c JOIN quotas q ON q.tenant = c.tenant"
    f" WHERE {{gate}} AND c.{WAITING} AND {_IN_QUEUES}"
    " GROUP BY c.tenant, c.queue, q.n HAVING sum(c.n) > 0",
    " SELECT q.tenant, q.n, x.id, x.queue, x.type FROM quotas q LEFT JOIN (SELECT s.*,"
    " row_number() OVER (PARTITION BY s.tenant"
    " ORDER BY s.priority DESC, s.run_at, s.created_at, s.id) AS r FROM streams s) x"
    " ON x.tenant = q.tenant AND x.r <= x.n"
    " ORDER BY q.tenant, x.priority DESC, x.run_at, x.created_at, x.id",
    _FAIR_TURNS,
)


@dataclass(frozen=True)
class Ask:
    """One claim under a policy. `queues` and `ids` are as stored (escaped)."""

    policy: ClaimPolicy
    limit: int
    now: datetime
    queues: list[str] | None
    ids: list[str] | None
    enc: Text
    dec: Text
    schema: str | None = None  # the store's, which names the limits' lock


@dataclass(frozen=True)
class Candidate:
    """A due job a claim may start: its stored id, and its decoded names for the rules."""

    id: str
    job_id: str
    tenant: str
    queue: str
    type: str


@dataclass
class Choice:
    ids: list[str]  # as stored: the rows to move to running
    holds: list[Hold]  # recorded once the claim commits (a retried claim records once)


class ClaimLockBusy(Exception):
    """Another claim held the lock longer than this claim may wait (`lock`'s `wait`)."""


def lock_wait(lease_seconds: float) -> float:
    """The longest a claim waits for the lock: a sixth of the lease it hands out.

    The worker renews its leases on the thread that claims. A claim that stalled
    holding the lock (its process paused: SIGSTOP, a frozen VM) keeps it until the
    server ends its idle transaction (statement_timeout, 30 s by default); waited
    out, every other worker's leases shorter than that lapsed meanwhile, and their
    running jobs were reaped and run again beside themselves, past their limits."""
    return lease_seconds / 6


def lock(conn: Conn, schema: str | None, wait: float | None = None) -> None:
    """Serialize the claims with a policy of this schema until the transaction ends:
    returns once the lock is held (in a pipeline too, so a clock read next is of then).
    `wait`: at most this many seconds, else ClaimLockBusy (the transaction is then
    aborted: the caller rolls it back)."""
    if wait is None:
        conn.execute(LOCK_SQL, (LOCK_SPACE, schema or "public")).fetchone()
        return
    conn.execute(LOCK_WAIT_SQL, (f"{max(1, round(wait * 1000))}ms",))
    try:
        conn.execute(LOCK_SQL, (LOCK_SPACE, schema or "public")).fetchone()
    except pg_errors.LockNotAvailable:
        raise ClaimLockBusy(wait) from None
    conn.execute(LOCK_WAIT_DONE_SQL)


def try_lock(conn: Conn, schema: str | None, sync_off: bool = False) -> psycopg.Cursor[Any]:
    """`lock` if no other claim holds it, without waiting: the cursor's one row says
    whether it was taken. Sent, not read, so the reads that follow share its round trip.
    `sync_off`: also SET LOCAL synchronous_commit = off, in the same statement."""
    sql = TRY_LOCK_SYNC_OFF_SQL if sync_off else TRY_LOCK_SQL
    return conn.execute(sql, (LOCK_SPACE, schema or "public"))


def locked(cur: psycopg.Cursor[Any]) -> bool:
    """What `try_lock` answered (reading it ends the round trip)."""
    row = cur.fetchone()
    return bool(row and row[0])


def claim_chosen_sql(update: str) -> str:
    """The claim's UPDATE (`update` reads ids from `picked`) over the chosen ids."""
    return "WITH picked AS (SELECT unnest(%(chosen)s::text[]) AS id)" + update


def send_state(conn: Conn, ask: Ask) -> State:
    """Send what `choose` reads (running counts, starts in each window, the fair state),
    none of it read yet and nothing written: in the claim's pipeline these share a round
    trip with the lock's `try_lock` and the reap, and are simply sent again, with the
    clock read anew, when the lock had to be waited for."""
    fair = ask.policy.fair and ask.ids is None
    return State(
        ask,
        _send_running(conn, ask),
        _send_started(conn, ask),
        conn.execute(_turns_sql(ask), _tenants_params(ask)) if fair else None,
        _send_first(conn, ask) if fair else None,
    )


def _send_first(conn: Conn, ask: Ask) -> psycopg.Cursor[Any]:
    """FIRST_STREAMS_SQL: the jobs of the tenants whose turns the claim expects, read
    as if no limit were full (used only if none is)."""
    sql = FIRST_STREAMS_SQL.replace("{tenants}", _tenants_sql(ask)).replace("{gate}", LOCK_GATE)
    weights = ask.policy.weights
    params = {
        **_tenants_params(ask),
        **gate_params(ask.schema),
        "n": ask.limit,
        "seen": [],
        "full_types": [],
        "weighted": [ask.enc(t) for t in weights],
        "weights": list(weights.values()),
    }
    return conn.execute(sql, params)


def choose(conn: Conn, state: State) -> Choice:
    """The ids the policy lets start now, their starts and turns already recorded.

    Call inside the claim's transaction once `lock` is held (or `try_lock` took it)
    and the reap and `send_state` were sent after it. Holds go to a log of this
    attempt only: the caller records them once the claim commits.
    """
    ask = state.ask
    attempt = dataclasses.replace(ask.policy, holds=HoldLog())
    ask = dataclasses.replace(ask, policy=attempt)
    with attempt.holds.watch() as holds:
        admission, turns = _read_state(ask, state)
        _tidy_starts(conn, ask)
        if ask.ids is not None:
            chosen = _by_ids(conn, ask, admission)
        elif turns is not None:
            chosen = _fair(conn, ask, admission, turns, state.first)
        else:
            chosen = _in_order(conn, ask, admission)
        _record_starts(conn, ask, admission, chosen)
    return Choice([c.id for c in chosen], list(holds))


# -- what the claim reads --------------------------------------------------------


@dataclass
class State:
    """What `send_state` sent for `ask`: one cursor per read, None when not needed."""

    ask: Ask
    running: psycopg.Cursor[Any] | None
    started: psycopg.Cursor[Any] | None
    turns: psycopg.Cursor[Any] | None  # TURNS_SQL's
    first: psycopg.Cursor[Any] | None  # _send_first's


@dataclass
class _Turns:
    tenants: list[str]
    passes: dict[str, float]
    clock: float


def _read_state(ask: Ask, state: State) -> tuple[Admission, _Turns | None]:
    """The reads `send_state` sent, as the rules take them."""
    running = _running_counts(ask, state.running)
    admission = Admission(ask.policy, running, _started_counts(ask, state.started))
    if state.turns is None:
        return admission, None
    rows = state.turns.fetchall()
    turns = _Turns(
        [ask.dec(t) for t, _, _ in rows],
        {ask.dec(t): float(p) for t, p, _ in rows if p is not None},
        float(rows[0][2]) if rows else 0.0,  # no tenant: no turn, the clock stays
    )
    return admission, turns


def _send_running(conn: Conn, ask: Ask) -> psycopg.Cursor[Any] | None:
    limited = [lim for lim in ask.policy.limits if lim.concurrency is not None]
    if not limited:
        return None
    params = {
        "queues": [ask.enc(lim.name) for lim in limited if lim.scope == "queue"],
        "types": [ask.enc(lim.name) for lim in limited if lim.scope == "type"],
    }
    return conn.execute(RUNNING_SQL, params)


def _running_counts(ask: Ask, cur: psycopg.Cursor[Any] | None) -> dict[str, int]:
    if cur is None:
        return {}
    return {f"{scope}:{ask.dec(name)}": int(n) for scope, name, n in cur.fetchall()}


def _window_params(ask: Ask) -> dict[str, Any] | None:
    rated = ask.policy.rate_limits()
    if not rated:
        return None
    return {
        "keys": [ask.enc(lim.key) for lim in rated],
        "since": [ask.now - timedelta(seconds=lim.rate.window) for lim in rated if lim.rate],
    }


def _send_started(conn: Conn, ask: Ask) -> psycopg.Cursor[Any] | None:
    # Counted before the prune and the restamp (_tidy_starts) that the old order ran
    # first, to the same sums: the prune drops only starts at or before a window's
    # start, which are not counted, and the restamp moves starts from ahead of now to
    # now, counted either way (no upper bound). So the count needs no lock, and the
    # writes wait for it.
    params = _window_params(ask)
    return None if params is None else conn.execute(STARTED_SQL, params)


def _tidy_starts(conn: Conn, ask: Ask) -> None:
    """Drop the starts out of every window, and bring those dated from before a step
    back of the clock to now. Writes: only once the lock is held."""
    params = _window_params(ask)
    if params is None:
        return
    conn.execute(PRUNE_STARTS_SQL, params)
    ahead = ask.now + timedelta(seconds=STEP_BACK)
    conn.execute(RESTAMP_STARTS_SQL, {**params, "now": ask.now, "ahead": ahead})


def _started_counts(ask: Ask, cur: psycopg.Cursor[Any] | None) -> dict[str, int]:
    if cur is None:
        return {}
    return {ask.dec(key): int(n) for key, n in cur.fetchall()}


def _tenants_sql(ask: Ask) -> str:
    queues = " AND queue = ANY(%(queues)s::text[])" if ask.queues is not None else ""
    return TENANTS_SQL.format(queues=queues)


def _turns_sql(ask: Ask) -> str:
    return TURNS_SQL.replace("{tenants}", _tenants_sql(ask))


def _tenants_params(ask: Ask) -> dict[str, Any]:
    return {"now": ask.now, "queues": ask.queues}


# -- picking ----------------------------------------------------------------------


def _candidates(rows: Sequence[Sequence[str]], ask: Ask) -> list[Candidate]:
    dec = ask.dec
    return [Candidate(i, dec(i), dec(t), dec(q), dec(ty)) for i, t, q, ty in rows]


def _due(conn: Conn, ask: Ask, n: int | None, where: str, extra: dict[str, Any]) -> list[Candidate]:
    """At most `n` due jobs in claim order (all of them for None)."""
    if ask.queues is not None:
        where += " AND queue = ANY(%(queues)s::text[])"
    params = {"now": ask.now, "n": n, "queues": ask.queues, **extra}
    return _candidates(conn.execute(DUE_SQL.format(where=where), params).fetchall(), ask)


def _stream_params(ask: Ask, admission: Admission, seen: list[str]) -> dict[str, Any]:
    return {
        "now": ask.now,
        "seen": seen,
        "queues": ask.queues,
        "full_queues": [ask.enc(q) for q in admission.full("queue")],
        "full_types": [ask.enc(t) for t in admission.full("type")],
    }


def _streams(
    conn: Conn, ask: Ask, admission: Admission, n: int, seen: list[str]
) -> list[Candidate]:
    """At most `n` due jobs in claim order, none of a limit full now, none of `seen`."""
    params = {**_stream_params(ask, admission, seen), "n": n}
    return _candidates(conn.execute(STREAMS_SQL, params).fetchall(), ask)


def _tenant_streams(
    conn: Conn, ask: Ask, admission: Admission, quotas: dict[str, int], seen: list[str]
) -> dict[str, list[Candidate]]:
    """Each tenant's best `quotas[tenant]` due jobs, none of a limit full now or of `seen`."""
    params = {
        **_stream_params(ask, admission, seen),
        "tenants": [ask.enc(t) for t in quotas],
        "quotas": list(quotas.values()),
    }
    found: dict[str, list[Candidate]] = {}
    for candidate in _candidates(conn.execute(TENANT_STREAMS_SQL, params).fetchall(), ask):
        found.setdefault(candidate.tenant, []).append(candidate)
    return found


def _admit(admission: Admission, candidate: Candidate) -> bool:
    return admission.admit(candidate.job_id, candidate.queue, candidate.type)


def _by_ids(conn: Conn, ask: Ask, admission: Admission) -> list[Candidate]:
    """A claim by ids (SQS delivery): every due one is admitted or reported held."""
    due = _due(conn, ask, None, " AND id = ANY(%(ids)s::text[])", {"ids": ask.ids})
    chosen: list[Candidate] = []
    for candidate in due:
        if len(chosen) >= ask.limit:
            break
        if _admit(admission, candidate):
            chosen.append(candidate)
    return chosen


def _in_order(conn: Conn, ask: Ask, admission: Admission) -> list[Candidate]:
    """Claim order, skipping held jobs. The plain due order serves while no limit
    is full; once one is, the streams leave its jobs unread. A batch is read again
    only when a limit filled up inside it, so at most once per limit."""
    chosen: list[Candidate] = []
    seen: list[str] = []
    while len(chosen) < ask.limit:
        want = ask.limit - len(chosen)
        if admission.full_keys():
            batch = _streams(conn, ask, admission, want, seen)
        else:
            batch = _due(conn, ask, want, " AND id <> ALL(%(seen)s::text[])", {"seen": seen})
        taken = [c for c in batch if _admit(admission, c)]
        chosen.extend(taken)
        seen.extend(c.id for c in batch)
        if len(batch) < want or len(taken) == len(batch):
            break
    return chosen


class _TenantRows(Sequence[Candidate]):
    """One tenant's due jobs best first, as fair_pick walks them: what was read up
    front, then pages read only if the walk goes past them (other tenants ran out,
    or a limit held some), so a claim reads no more of a backlog than it uses."""

    def __init__(
        self, rows: list[Candidate], more: Callable[[list[str]], list[Candidate]] | None, page: int
    ) -> None:
        self._rows = rows
        self._more = more  # the next page after the ids given; None: nothing more to read
        self._page = page

    def _load(self) -> None:
        assert self._more is not None
        page = self._more([c.id for c in self._rows])
        self._rows.extend(page)
        if len(page) < self._page:
            self._more = None

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(index, slice) or index < 0:
            self._load_all()
            return self._rows[index]
        while index >= len(self._rows) and self._more is not None:
            self._load()
        return self._rows[index]  # IndexError past the last: the walk's end

    def __len__(self) -> int:
        self._load_all()
        return len(self._rows)

    def _load_all(self) -> None:
        while self._more is not None:
            self._load()


def _quotas(turns: _Turns, policy: ClaimPolicy, limit: int) -> dict[str, int]:
    """The turns each tenant takes in `limit` turns if none runs out (limits.fair_pick's
    stride order): how many of its jobs to read up front. Only a guess to save
    round trips: a tenant that needs more reads more."""
    clock = turns.clock
    heap = [(max(turns.passes.get(t, clock), clock), t) for t in set(turns.tenants)]
    heapq.heapify(heap)
    quotas: Counter[str] = Counter()
    for _ in range(limit):
        if not heap:
            break
        turn, tenant = heapq.heappop(heap)
        quotas[tenant] += 1
        heapq.heappush(heap, (turn + 1.0 / policy.weight(tenant), tenant))
    return dict(quotas)


def _first(ask: Ask, cur: psycopg.Cursor[Any]) -> tuple[dict[str, int], dict[str, list[Candidate]]]:
    """What _send_first read: each tenant's quota, and the jobs read for it."""
    quotas: dict[str, int] = {}
    found: dict[str, list[Candidate]] = {}
    for tenant, n, job, queue, type_ in cur.fetchall():
        quotas[ask.dec(tenant)] = int(n)
        if job is not None:
            (candidate,) = _candidates([(job, tenant, queue, type_)], ask)
            found.setdefault(candidate.tenant, []).append(candidate)
    return quotas, found


def _fair(
    conn: Conn,
    ask: Ask,
    admission: Admission,
    turns: _Turns,
    sent: psycopg.Cursor[Any] | None = None,
) -> list[Candidate]:
    """Stride turns by tenant (limits.fair_pick). The jobs of every tenant expected
    to take a turn are read in one statement (`sent` with the state, when no limit is
    full yet); anything more, page by page."""
    if sent is not None and not admission.full_keys():
        quotas, first = _first(ask, sent)
    else:
        quotas = _quotas(turns, ask.policy, ask.limit)
        first = _tenant_streams(conn, ask, admission, quotas, []) if quotas else {}

    def more(tenant: str) -> Callable[[list[str]], list[Candidate]]:
        def page(seen: list[str]) -> list[Candidate]:
            found = _tenant_streams(conn, ask, admission, {tenant: ask.limit}, seen)
            return found.get(tenant, [])

        return page

    def fetch(tenant: str) -> Sequence[Candidate]:
        rows = first.get(tenant, [])
        # Fewer rows than asked for: the tenant has no more (that the limits let start).
        done = tenant in quotas and len(rows) < quotas[tenant]
        return _TenantRows(rows, None if done else more(tenant), ask.limit)

    pick = fair_pick(
        turns.tenants,
        turns.passes,
        turns.clock,
        ask.policy,
        fetch,
        lambda c: _admit(admission, c),
        ask.limit,
    )
    if pick.chosen:
        conn.execute(
            SAVE_TURNS_SQL,
            {
                "tenants": [ask.enc(t) for t in pick.passes],
                "passes": list(pick.passes.values()),
                "clock": pick.clock,
            },
        )
    return pick.chosen


def _record_starts(conn: Conn, ask: Ask, admission: Admission, chosen: list[Candidate]) -> None:
    """One row per rate-limited key this claim started jobs under."""
    starts = Counter(key for c in chosen for key in admission.rate_starts(c.queue, c.type))
    if starts:
        params = {"now": ask.now, "keys": [ask.enc(k) for k in starts], "ns": list(starts.values())}
        conn.execute(RECORD_STARTS_SQL, params)


# -- token buckets (JobStore.take_tokens) ------------------------------------------

# A new bucket starts full; a bucket already there is left as it is.
BUCKET_SEED_SQL = (
    "INSERT INTO token_buckets (key, tokens, at) VALUES (%(key)s, %(burst)s, %(now)s)"
    " ON CONFLICT (key) DO NOTHING"
)
BUCKET_READ_SQL = "SELECT tokens, at FROM token_buckets WHERE key = %(key)s FOR UPDATE"
BUCKET_WRITE_SQL = "UPDATE token_buckets SET tokens = %(tokens)s, at = %(at)s WHERE key = %(key)s"


def take_tokens(conn: Conn, key: str, rate: float, burst: int, cost: int, now: datetime) -> float:
    """Take `cost` tokens from the bucket `key` (stored escaped), or say how long to wait.

    The row lock makes the read, the refill and the write one step across
    processes; the arithmetic is limits.refill and limits.take, as in every store.
    Call with a connection in autocommit mode: this opens its own transaction.
    """
    params: dict[str, Any] = {"key": key, "burst": float(burst), "now": now}
    with pipelined_transaction(conn):
        conn.execute(BUCKET_SEED_SQL, params)
        row = conn.execute(BUCKET_READ_SQL, params).fetchone()
        assert row is not None  # seeded above, and buckets are never deleted
        tokens, at = float(row[0]), row[1]
        # A clock a little behind the last take's (another host, a take that read it
        # before another's turn) refills nothing and moves no time back; one a step back
        # behind it refills from now on (limits.bucket_stamp).
        elapsed, stamp = bucket_stamp(to_epoch(at), to_epoch(now))
        left, wait = take(refill(tokens, elapsed, rate, burst), rate, cost)
        conn.execute(BUCKET_WRITE_SQL, {"key": key, "tokens": left, "at": from_epoch(stamp)})
    return wait


# How often a process compares the planner's idea of the jobs table with the kept counts.
STATS_CHECK_SECONDS = 5.0
_STALE_SQL = (
    "SELECT c.reltuples, (SELECT COALESCE(sum(n), 0) FROM job_counts"
    f" WHERE {WAITING}) FROM pg_class c WHERE c.oid = 'jobs'::regclass"
)


def refresh_statistics(conn: Conn) -> None:
    """ANALYZE jobs when the planner believes it far smaller than its waiting jobs alone.

    A burst of enqueues (the backlog fair turns exist for) lands between autovacuum's
    rounds; until they are counted the planner thinks a tenant has about one due job,
    takes the (tenant, queue, run_at) index and sorts the whole backlog on every fair
    claim (110 ms at 50,000 jobs instead of 2 ms). The kept counts tell us the truth
    cheaply; an ANALYZE samples at most 30,000 rows, so it costs tens of ms, rarely.
    """
    row = conn.execute(_STALE_SQL).fetchone()
    if row is None:
        return
    estimated, waiting = float(row[0]), float(row[1])
    if waiting > 1000 and estimated < waiting / 2:
        conn.execute("ANALYZE jobs")
