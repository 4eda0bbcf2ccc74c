"""Job records in DynamoDB, job ids over SQS, big values in S3: the AWS store.

``SPOOL_STORE_URL=dynamodb://TABLE?queue=QUEUE&bucket=BUCKET`` selects it;
QUEUE is a queue URL or name, and ``endpoint=http://127.0.0.1:PORT`` points
every client at a local moto_server. The table layout is described in
dynamodb_schema.py.

Every state transition is one conditional write, guarded by the state the
transition starts from (and the lease token, for a running job), so two
deliveries of one SQS message can both try but only one claim, and only the
lease holder's completion, is ever applied. Writes that must move counters
with them (add, finish, reap, cancel) are TransactWriteItems that carry the
counter ADDs; a claim moves no counter and is a plain UpdateItem that returns
the new record, so claiming a job costs one request and one write unit. Named
jobs (an SQS batch) of three or more are claimed with one consistent
BatchGetItem and one TransactWriteItems of updates conditional on the version
read: two requests for the batch, at one more write unit and one read unit a job.
Redrive and purge are transactions too: each also ADDs 1 to the invalidation
epoch item of every tenant whose jobs it changes (JobStore.cache_epoch), so the
change and the bumps land together.

Attempt history rides on the job's item (see dynamodb_schema.py): the claim
counts the job's claims in ``att_seq`` (the store remembers the number per
lease token, so the finish need not read the item), and the finish or reap
SETs the attempt into slot ``att_seq mod N`` of ``attempt_log`` in its own
conditional write. Cost: a job's item grows by up to HISTORY_RESERVE bytes,
and DynamoDB bills a write by the item's size, so each write to a job that
has failed often costs more write units (a job that succeeds at once carries
one small entry). `attempts` is one consistent GetItem. `oldest_due` reads
the due waiting entries of the ``timer`` index (small index items, every due
one unless `queues` is given and each has been seen), `beat` is one UpdateItem
and `live_workers` one Query of the workers' partition.

A payload or result object gone from S3 (lifecycle rules, an operator) is its own
job's problem: reads show a marker in its place, and a claim buries that job (or
retries it, when S3 refused the read) without running it; see `_load`.

Delivery is kept beside the store (SqsDispatch): add, retry, reap and redrive
send the job's id, with DelaySeconds up to 15 minutes; `release_due`, run by
the scheduled function, sends ids of jobs due later than that, and re-sends
those whose message was lost.

Its neighbours: dynamodb_schema.py (the table's layout and item codec),
dynamodb_txn.py (transactions), dynamodb_limits.py (a claim with limits or fair
turns, and take_tokens), dynamodb_aws.py (URL, clients, resources, error
mapping: boto3 is imported there, and only when a dynamodb:// URL is chosen).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from chalicelib import worker_id
from chalicelib.clock import Clock, SystemClock
from chalicelib.errors import (
    InvalidTransition,
    JobNotFound,
    JobUnreadable,
    PayloadTooLarge,
    StoreUnavailable,
)
from chalicelib.ids import new_lease_token
from chalicelib.limits import ClaimPolicy
from chalicelib.models import (
    MAX_ERROR_CHARS,
    AddResult,
    Attempt,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    JobTiming,
    MinuteTally,
    NewJob,
    WorkerBeat,
    error_within_bytes,
    queued_job,
)
from chalicelib.redrive_attempts import RedriveAttempts
from chalicelib.retry import RetryPolicy
from chalicelib.storage import history, stored_rows
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    Backlog,
    check_limit,
    completion_events,
    decode_cursor,
    encode_cursor,
    epoch_after_emptyings,
    from_micros,
    log_buried_by_reap,
    micros_of,
    redrive_fit,
    to_micros,
    utf8_text,
    waiting_in,
)
from chalicelib.storage.dynamodb_aws import (
    INLINE_LIMIT,
    NO_CREDENTIALS,
    RECORD_LIMIT,
    DynamoConfig,
    Hurry,
    aws_errors,
    counted,
    create_resources,
    make_clients,
    pages,
    watch_unanswered,
)
from chalicelib.storage.dynamodb_limits import claim_with_policy, take_tokens
from chalicelib.storage.dynamodb_schema import (
    COUNTER_PK,
    GSI_DUE,
    GSI_STATE,
    GSI_TENANT,
    GSI_TENANT_DUE,
    GSI_TIMER,
    MINUTE_MICROS,
    MINUTE_PREFIX,
    STATIC_ATTRS,
    TIMER_FINISHED,
    TIMER_RUNNING,
    TIMER_WAITING,
    WORKER_PK,
    Expr,
    attempt_slot,
    created_sort_key,
    due_partition,
    due_sort_key,
    dumps,
    epoch_key,
    get_n,
    get_s,
    idem_key,
    item_to_job,
    item_to_timing,
    job_id_of,
    job_key,
    minute_event,
    n,
    need_n,
    need_s,
    s,
    shard_of,
    state_partition,
    tenant_partition,
    timer_partition,
    worker_key,
)
from chalicelib.storage.dynamodb_txn import TRANSACTION_ATTEMPTS, Cancelled, Transactions, Unit
from chalicelib.storage.dynamodb_webhooks import (
    PRUNE_PROJECTION,
    DynamoOutbox,
    Pruning,
    hook_ids,
    hook_key,
    pruning,
)
from chalicelib.storage.queue_totals import QueueTotals, fold
from chalicelib.storage.s3_blobs import ObjectTooLarge, S3Blobs
from chalicelib.storage.sqs_dispatch import MAX_DELAY_SECONDS, SqsDispatch, Unsent, delay_for
from chalicelib.webhooks import outbox as webhook_outbox
from chalicelib.webhooks.outbox import Delivery

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        QueryInputTypeDef,
        TransactWriteItemTypeDef,
    )
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    Item = dict[str, AttributeValueTypeDef]

# How long /health reports a queue that refused job ids (check_writable).
QUEUE_FAILURE_SHOWN = 60.0

log = logging.getLogger("spool.dynamodb")

MICRO = 1_000_000
# release_due marks and sends this many jobs at a time (one SendMessageBatch), and
# begins no chunk with less than RELEASE_MARGIN seconds of its invocation left: a
# chunk is about 11 requests, and the unsent marks of one cut off wait lost_after.
RELEASE_CHUNK = 10
RELEASE_MARGIN = 2.0
BATCH_GET = 100  # BatchGetItem limit
STATIC_CACHE = 10_000
# Room a job's item keeps for its attempt history, shared by its N entries (less
# when a big inline payload leaves less), so the item stays under 400 KB.
HISTORY_RESERVE = 96 * 1024
MIN_ENTRY_BYTES = 512
WAITING = [s(JobState.QUEUED.value), s(JobState.RETRYING.value)]
WAITING_VALUES = frozenset({JobState.QUEUED.value, JobState.RETRYING.value})
FINISHED_OR_RUNNING = frozenset(st.value for st in JobState) - WAITING_VALUES
CLAIM_REMOVES = ("due_pk", "due_sk", "msg_at")  # a running job leaves the due index


def _claim_removes(values: Mapping[str, object]) -> tuple[str, ...]:
    """What a claim REMOVEs: the due index entry, and the `unstarted` mark of an earlier
    claim unless this one sets it (JobStore.start)."""
    return CLAIM_REMOVES if "unstarted" in values else (*CLAIM_REMOVES, "unstarted")


# From this many named ids (an SQS batch), claim with one read and one transaction
# instead of one UpdateItem each: two requests however many jobs, at one more write
# unit per job (a transaction's) and one read unit.
BATCH_CLAIM_FROM = 3
TERMINAL = [s(JobState.SUCCEEDED.value), s(JobState.DEAD.value), s(JobState.CANCELLED.value)]


# S3 error codes of a GetObject whose key is gone (NoSuchKey; a bare 404 from HEAD).
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# ...and of one S3 refused: without s3:ListBucket a missing key reads as AccessDenied.
REFUSED_OBJECT_CODES = frozenset({"AccessDenied", "403", "Forbidden"})
# ...and of one whose bucket does not exist (deleted, or SPOOL_STORE_URL names the wrong
# one). Not an outage to wait out: a read shows the job with a marker saying so, as for
# a refused object (a 503 for good made a tenant's listings and dead letters unreadable);
# a claim retries the job, never buries it as missing (tests/test_chaos_s56m_bucket_gone.py).
NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
# The most of a payload or result object a read for an answer takes: no answer carries
# more (POST /enqueue admits a payload taking at most routes.PAYLOAD_ANSWER_BYTES in the
# answers that return it, never fewer than the object's bytes; a result is at most
# worker.MAX_RESULT_BYTES). A bigger object (overwritten by hand or by another program)
# was read whole by every status and listing page and answered whole, past the 6 MB
# Lambda can answer (API Gateway's 502): it reads as *_unreadable, and no more of it is
# fetched. A claim, about to run the job, reads up to MAX_CLAIMED_OBJECT_BYTES
# (SPOOL_MAX_BODY_BYTES' ceiling, API Gateway's request limit), so a payload enqueued in
# code (rt.service.enqueue, which has no answer to fit) still runs; past it the job is
# retried unrun, dead after its last attempt, never read whole into the worker's memory
# (tests/test_chaos_s56m_object_size.py).
MAX_OBJECT_BYTES = 2 * 1024 * 1024
MAX_CLAIMED_OBJECT_BYTES = 10 * 1024 * 1024
# Backoff for a claimed job whose payload object could not be read (not missing).
UNREADABLE_RETRY = RetryPolicy(base=2.0, cap=300.0)


class Reaped(NamedTuple):
    """What a reap did: leases reaped, and ids of the reaped jobs sent to the queue
    (release_due counts those as released)."""

    leases: int
    sent: int


class NoBucket(LookupError):
    """A job's payload or result is kept in S3, and this store's URL names no bucket."""


@dataclass(frozen=True)
class _BlobProblem:
    """Why a claimed job's payload object could not be read (DynamoStore._load)."""

    url: str  # s3://bucket/key (the key alone when the store has no bucket)
    missing: bool  # gone for good (NoSuchKey), not refused or failed
    message: str
    cause: BaseException


def _error_code(exc: BaseException) -> str:
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


# What decoding a job's item raises when the item is not in the shape the store
# writes (an attribute missing, a number stored as a string, an unknown state).
BAD_SHAPE = (KeyError, ValueError, TypeError, OverflowError, AttributeError)
MAX_WHY_CHARS = 200


def _why(exc: BaseException) -> str:
    """What is wrong, in a line: the exception's type and its message, cut short.
    Never given a payload: the decoders' messages name attributes and positions."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}"[:MAX_WHY_CHARS]


_JSON_KINDS: dict[type, str] = {
    list: "array", str: "string", int: "number", float: "number", bool: "boolean",
    type(None): "null",
}  # fmt: skip


class NotAnObject(ValueError):
    """A payload that is JSON but not a JSON object."""


def _not_json(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos}"
    return type(exc).__name__


def _unreadable_why(exc: BaseException) -> str:
    """Why a stored value cannot be used: "is not valid JSON (...)", or, for a payload
    that is JSON of another kind, "is not a JSON object (...)"."""
    if isinstance(exc, NotAnObject):
        return f"is not a JSON object ({exc})"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return f"is not valid JSON ({_not_json(exc)})"
    return stored_rows.why_not_json(exc)  # NaN, an integer past Python's default, ...


def _payload_checked(kind: str, value: Any) -> Any:
    """`value`, unless it is a payload that is not a JSON object (an S3 object overwritten
    with `[1, 2]`, a record edited by hand): the models' payload is an object, and a
    handler given a list or a number would fail every attempt on a TypeError naming
    nothing of the cause. Raised as a ValueError, it reads as `payload_unreadable`
    and a claim settles the job without running it, as for a value that is not JSON."""
    if kind == "payload" and not isinstance(value, dict):
        raise NotAnObject(f"it holds a JSON {_JSON_KINDS.get(type(value), type(value).__name__)}")
    return value


def _item_id(item: Mapping[str, AttributeValueTypeDef]) -> str:
    """The job id of an item, from its key (which every read item has)."""
    pk = get_s(item, "pk")
    return pk[2:] if pk is not None else get_s(item, "id") or "?"


def _job_of_ref(ref: str) -> str:
    """The job id in a payload or result key (spool/payloads/ID.json, spool/results/ID/T.json)."""
    parts = ref.split("/")
    return parts[-1].removesuffix(".json") if "payloads" in parts else parts[-2]


# Every attribute _shape_problem reads: a projection of these is enough to tell whether
# a claim could take a job (DynamoStore.timings) without its payload, result, error
# message, attempt history or webhook ids.
SHAPE_ATTRS = (
    *STATIC_ATTRS, "state", "attempts", "max_attempts", "run_at", "lease_token", "lease_exp",
    "updated_at", "started_at", "finished_at", "ver", "att_seq",
)  # fmt: skip


def _shape_problem(item: Mapping[str, AttributeValueTypeDef]) -> str | None:
    """Why a waiting item cannot be claimed and run (what _load would raise
    JobUnreadable for, or a claim's arithmetic would fail on), or None."""
    try:
        item_to_job(item, None, None)
        _Static.of(item)
        need_n(item, "ver")
        get_n(item, "att_seq")
    except BAD_SHAPE as exc:
        return _why(exc)
    return None


def _refuse_damaged_dead(
    items: Iterable[Mapping[str, AttributeValueTypeDef]], tenant: str | None
) -> None:
    """JobUnreadable, before any write, for a dead item (of `tenant`) a redrive would
    move though its record does not read: the redrive wrote it (queued, sent to SQS),
    then left it out of its answer, so the caller was told it had not moved."""
    for item in items:
        if get_s(item, "state") != JobState.DEAD.value:
            continue
        if tenant is not None and get_s(item, "tenant") != tenant:
            continue
        problem = _shape_problem(item)
        if problem is not None:
            raise stored_rows.unreadable_record(_item_id(item), problem, "item")


# -- the pieces of a write ----------------------------------------------------------


@dataclass(frozen=True)
class _Static:
    """What never changes about a job: enough to key it, index it and count it."""

    id: str
    tenant: str
    type: str
    queue: str
    priority: int
    created: int
    idem: str | None
    payload_bytes: int = 0  # of the payload kept in the record (0 when it is in S3)
    callback_url: str | None = None  # where its completion webhook goes

    @classmethod
    def of(cls, item: Mapping[str, AttributeValueTypeDef]) -> _Static:
        return cls(
            id=need_s(item, "id"),
            tenant=need_s(item, "tenant"),
            type=need_s(item, "type"),
            queue=need_s(item, "queue"),
            priority=need_n(item, "priority"),
            created=need_n(item, "created_at"),
            idem=get_s(item, "idem"),
            payload_bytes=get_n(item, "pbytes") or 0,
            callback_url=get_s(item, "cb_url"),
        )


def _key_str(key: Mapping[str, AttributeValueTypeDef]) -> str:
    return f"{get_s(key, 'pk')}|{get_s(key, 'sk')}"


class DynamoStore:
    """The JobStore protocol over one DynamoDB table (see the module docstring)."""

    def __init__(
        self,
        config: DynamoConfig,
        clock: Clock | None = None,
        *,
        ddb: DynamoDBClient | None = None,
        sqs: SQSClient | None = None,
        s3: S3Client | None = None,
        attempt_history: int | None = None,
        webhook_history: int | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.history_limit = attempt_history or history.history_limit()
        self.webhook_history = webhook_history or webhook_outbox.kept_finished()
        # lease token -> (the job's claim count, att_seq, from that claim; whether its
        # item has an attempt_log map): the slot its attempt goes to, known without
        # reading the item at finish time.
        self._seqs: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        self._seqs_lock = threading.Lock()
        self.config = config
        self.table = config.table
        self._owns_clients = ddb is None
        if ddb is None:
            ddb, sqs, s3 = make_clients(config)
        self.ddb: DynamoDBClient = ddb
        watch_unanswered(ddb)  # which failed writes may have landed (aws_errors)
        self._hurry = Hurry()  # a stopping process's calls are not tried again
        for client in (ddb, sqs, s3):
            if client is not None:
                self._hurry.watch(client)
        if config.create:
            create_resources(config, ddb, sqs, s3)
        self.dispatch: SqsDispatch | None = (
            SqsDispatch(sqs, config.queue) if sqs is not None and config.queue else None
        )
        self.blobs: S3Blobs | None = (
            S3Blobs(s3, config.bucket) if s3 is not None and config.bucket else None
        )
        self._statics: OrderedDict[str, _Static] = OrderedDict()
        self._statics_lock = threading.Lock()
        self._last_reap: int | None = None
        self._rng = random.Random()
        self._tx = Transactions(ddb, self.table, config.counter_shards, self._rng)
        self._outbox = DynamoOutbox(ddb, self.table, config.shards)
        # cache_epoch: each tenant's epoch item's birth mark as this process first saw
        # it, and how many times it has changed since.
        self._births: dict[str, str] = {}
        self._rebirths: dict[str, int] = {}
        self._births_lock = threading.Lock()

    @property
    def finished_kept_seconds(self) -> float:
        """How long a finished job and its idempotency key outlive it (TTL, `_expires`):
        the periodic scheduler fires no tick this late (storage/base.py)."""
        return float(int(self.config.retention_days * 86400))

    # -- small helpers ----------------------------------------------------------------------------
    def _now(self) -> int:
        return to_micros(self.clock.now())

    def _shards(self) -> range:
        return range(self.config.shards)

    def _shard(self, job_id: str) -> int:
        return shard_of(job_id, self.config.shards)

    def _expires(self, at_micros: int) -> int:
        """TTL attribute: epoch seconds, retention after the job finished."""
        return at_micros // MICRO + int(self.config.retention_days * 86400)

    def _remember(self, static: _Static) -> None:
        with self._statics_lock:
            self._statics[static.id] = static
            self._statics.move_to_end(static.id)
            while len(self._statics) > STATIC_CACHE:
                self._statics.popitem(last=False)

    def _history_reserve(self, payload_bytes: int) -> int:
        """Bytes the item keeps for its history: HISTORY_RESERVE, or half of what a big
        inline payload and the error message leave (the other half is for a result)."""
        left = RECORD_LIMIT - payload_bytes - MAX_ERROR_CHARS
        return max(0, min(HISTORY_RESERVE, left // 2))

    def _entry(self, attempt: Attempt, seq: int, payload_bytes: int) -> str:
        """One attempt as its ring slot holds it, sized to share the item's history room."""
        cap = max(MIN_ENTRY_BYTES, self._history_reserve(payload_bytes) // self.history_limit)
        return history.encode_within(attempt, min(cap, history.MAX_ENTRY_BYTES), seq=seq)

    def _set_attempt(self, expr: Expr, seq: int, entry: str, has_map: bool) -> None:
        """Put the attempt in its ring slot; an item from before attempt history (no map
        yet) gets a map holding just this one. Only the lease holder's write (finish or
        reap, conditional on the lease) gets here, so nothing else makes the map meanwhile."""
        slot = attempt_slot(seq, self.history_limit)
        if has_map:
            expr.set_raw(f"{expr.name('attempt_log')}.{expr.name(slot)} = {expr.value(s(entry))}")
        else:
            expr.set("attempt_log", {"M": {slot: s(entry)}})

    def _remember_seq(self, token: str, seq: int, has_map: bool) -> None:
        with self._seqs_lock:
            self._seqs[token] = (seq, has_map)
            while len(self._seqs) > STATIC_CACHE:
                self._seqs.popitem(last=False)

    def _seqs_for(self, completions: Sequence[Completion]) -> dict[str, tuple[int, bool]]:
        """lease token -> (att_seq, has map) for completions carrying an attempt; read
        from the items only for tokens this process did not claim (or has forgotten)."""
        out: dict[str, tuple[int, bool]] = {}
        missing: list[Completion] = []
        with self._seqs_lock:
            for c in completions:
                known = self._seqs.get(c.lease_token)
                if known is None:
                    missing.append(c)
                else:
                    out[c.lease_token] = known
        if missing:
            found = self._batch_get(
                [job_key(c.job_id) for c in missing], ("att_seq", "lease_token", "attempt_log")
            )
            for c in missing:
                item = found.get(_key_str(job_key(c.job_id)))
                if item is None or get_s(item, "lease_token") != c.lease_token:
                    continue  # no longer this lease: the finish will be refused anyway
                seq = get_n(item, "att_seq")
                if seq is not None:  # None: claimed before attempt history existed
                    out[c.lease_token] = (seq, "attempt_log" in item)
        return out

    def _due_sk(self, st: _Static, run_at: int) -> str:
        return due_sort_key(st.priority, run_at, st.created, st.id)

    def _waiting_attrs(self, expr: Expr, st: _Static, run_at: int, now: int) -> None:
        """The index entries of a job that waits for run_at, and its planned message."""
        shard = self._shard(st.id)
        expr.set("run_at", n(run_at))
        expr.set("due_pk", s(due_partition(shard)))
        expr.set("due_sk", s(self._due_sk(st, run_at)))
        expr.set("tm_pk", s(timer_partition(TIMER_WAITING, shard)))
        expr.set("tm_at", n(run_at))
        planned = self._planned_message(run_at, now)
        if planned is None:
            expr.remove("msg_at")
        else:
            expr.set("msg_at", n(planned))

    def _planned_message(self, run_at: int, now: int) -> int | None:
        """When the message sent for this job will arrive, or None if none is sent now."""
        if self.dispatch is None:
            return None
        wait = (run_at - now) / MICRO
        if wait > MAX_DELAY_SECONDS:
            return None
        return now + delay_for(wait) * MICRO

    def _finished_attrs(self, expr: Expr, job_id: str, now: int) -> None:
        shard = self._shard(job_id)
        expr.set("finished_at", n(now))
        expr.set("tm_pk", s(timer_partition(TIMER_FINISHED, shard)))
        expr.set("tm_at", n(now))
        expr.set("expires_at", n(self._expires(now)))
        expr.remove("due_pk", "due_sk", "msg_at")

    def _key_lifetime(
        self, job_id: str, tenant: str | None, idem: str | None, expires_at: int | None
    ) -> tuple[TransactWriteItemTypeDef, str] | None:
        """The write that keeps a keyed job's idempotency key item expiring with the
        job (expires_at set to the job's, or removed while the job has none), for the
        transaction that changes the job's own: DynamoDB's TTL must never delete a key
        whose job is still stored, or the same enqueue would make a second job (SQLite
        and Postgres answer with the existing job for as long as it exists). None for
        a job without a key (or, in a damaged record, without a tenant): no write.

        Conditional on the key naming this job; a key item already gone (TTL'd under
        the old rule: retention after the job was due) is written back naming it. The
        unit carries it as an optional action (Unit.optional): a key held by another
        job (made while this one's key was gone) is that job's, and is left alone."""
        if idem is None or tenant is None:
            return None
        key = idem_key(tenant, idem)
        expr = Expr()
        expr.set("job_id", s(job_id))
        if expires_at is None:
            expr.remove("expires_at")
        else:
            expr.set("expires_at", n(expires_at))
        condition = (
            f"attribute_not_exists({expr.name('pk')}) OR "
            f"{expr.name('job_id')} = {expr.value(s(job_id))}"
        )
        action: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self.table,
                "Key": key,
                "UpdateExpression": expr.update_expression(),
                "ConditionExpression": condition,
                **expr.placeholders(),  # type: ignore[typeddict-item]
            }
        }
        return action, _key_str(key)

    def _dated_unit(self, unit: Unit, st: _Static, expires_at: int | None) -> Unit:
        """`unit` with the write that dates its job's idempotency key (_key_lifetime)
        as its optional last action, when the job has a key."""
        return self._with_key_dated(unit, st.id, st.tenant, st.idem, expires_at)

    def _with_key_dated(
        self,
        unit: Unit,
        job_id: str,
        tenant: str | None,
        idem: str | None,
        expires_at: int | None,
    ) -> Unit:
        """_dated_unit for a record read without a _Static (a damaged one may lack both)."""
        dating = self._key_lifetime(job_id, tenant, idem, expires_at)
        if dating is None:
            return unit
        action, key = dating
        return Unit(
            [*unit.actions, action], [*unit.keys, key], unit.counters, unit.size, optional=1
        )

    def _send(self, items: list[tuple[str, int]], now: int) -> Unsent:
        """Send ids of jobs due at the given times (delays over 15 minutes wait for
        release); returns the ids SQS did not take, and those it may have taken (a
        send whose answer was lost)."""
        if self.dispatch is None or not items:
            return Unsent([], [])
        batch = [
            (job_id, (run_at - now) / MICRO, 0)
            for job_id, run_at in items
            if (run_at - now) / MICRO <= MAX_DELAY_SECONDS
        ]
        return self.dispatch.send_sorted(batch) if batch else Unsent([], [])

    # -- reading ----------------------------------------------------------------------------------
    def _batch_get(
        self, keys: Sequence[Mapping[str, AttributeValueTypeDef]], projection: Sequence[str] = ()
    ) -> dict[str, Item]:
        """Consistent reads of many items, a hundred to a request; keyed by 'pk|sk'."""
        found: dict[str, Item] = {}
        unique = list({_key_str(k): k for k in keys}.values())
        for start in range(0, len(unique), BATCH_GET):
            request: dict[str, Any] = {"Keys": unique[start : start + BATCH_GET]}
            request["ConsistentRead"] = True
            if projection:
                expr = Expr()
                request["ProjectionExpression"] = ", ".join(
                    expr.name(a) for a in ("pk", "sk", *projection)
                )
                request["ExpressionAttributeNames"] = expr.names
            pending: dict[str, Any] = {self.table: request}
            for attempt in range(10):
                response = self.ddb.batch_get_item(RequestItems=pending)
                for item in response.get("Responses", {}).get(self.table, []):
                    found[_key_str(item)] = item
                pending = dict(response.get("UnprocessedKeys") or {})
                if not pending:
                    break
                time.sleep(min(1.0, 0.02 * 2**attempt))
            else:
                raise StoreUnavailable("DynamoDB kept leaving keys unprocessed")
        return found

    def _query(
        self,
        index: str | None,
        expr: Expr,
        key_condition: str,
        filter_: str | None = None,
        ascending: bool = True,
        page: int | None = None,
        consistent: bool = False,
        grow_to: int | None = None,
    ) -> Iterator[Item]:
        """Every matching item, page by page, as late as the caller asks for them.

        `grow_to`: each page after the first asks for twice as many entries, up to that
        many (a filter that drops most of a long run then costs few round trips, and a
        read that the first page answers costs no more than before)."""
        request: QueryInputTypeDef = {
            "TableName": self.table,
            "KeyConditionExpression": key_condition,
            "ScanIndexForward": ascending,
            **expr.placeholders(),  # type: ignore[typeddict-item]
        }
        if index is not None:
            request["IndexName"] = index
        if filter_:
            request["FilterExpression"] = filter_
        if page is not None:
            request["Limit"] = page
        if consistent:
            request["ConsistentRead"] = True
        paged: dict[str, Any] = dict(request)
        for response in pages(self.ddb.query, paged):
            yield from response.get("Items", [])
            if grow_to is not None and page is not None:
                paged["Limit"] = min(grow_to, 2 * int(paged["Limit"]))

    def _load(
        self,
        item: Mapping[str, AttributeValueTypeDef],
        payload_problem: list[_BlobProblem] | None = None,
    ) -> Job:
        """Item to Job, following S3 keys for a payload or result kept outside the record.

        An object that is gone (the bucket's lifecycle rules delete payloads after
        366 + retention + 1 days and results after retention + 1, 397 and 31 by
        default, infra/generate.py; an operator may delete one) is a problem of
        its own job only: the job is still shown, with a marker in place of the
        value, so one job cannot fail a status, a listing or a batch claim. The
        marker is an object (the models' payload is a JSON object and the result
        any JSON value, so the public shape is unchanged):
        ``{"error": "payload_missing" | "result_missing", "object": "s3://B/K",
        "message": "..."}``, or ``*_unreadable`` when S3 refused the read
        (AccessDenied: S3 answers that, not NoSuchKey, for a missing key to a role
        that may not s3:ListBucket; NoSuchBucket, when the bucket itself is gone or
        misnamed). Other failures (S3 unavailable) still raise.

        With `payload_problem` (a claim, about to run the job), any failure to read
        the payload object is appended there instead of raised: the caller must not
        run the handler on the marker (see _claimed_job).

        A value that is not JSON (an object overwritten or cut short, a record edited
        by hand), or a payload that is JSON but not an object, reads as
        `*_unreadable` too, saying so. An item in any other bad
        shape (an attribute missing or of the wrong type, an unknown state) raises
        JobUnreadable naming the job and what is wrong: get and cancel answer with
        it, and listings skip the item with a warning (_readable).
        """
        payload_ref = get_s(item, "payload_ref")
        if payload_ref is not None:
            payload = self._blob_value(payload_ref, "payload", payload_problem)
        else:
            payload = self._inline_value(item, "payload", payload_problem)
        result_ref = get_s(item, "result_ref")
        if result_ref is not None:
            result = self._blob_value(result_ref, "result", None)
        else:
            result = self._inline_value(item, "result", None)
        try:
            job = item_to_job(item, payload, result)
            static = _Static.of(item)
        except BAD_SHAPE as exc:
            raise stored_rows.unreadable_record(_item_id(item), _why(exc), "item") from exc
        self._remember(static)
        return job

    def _readable(self, item: Mapping[str, AttributeValueTypeDef]) -> Job | None:
        """_load for a listing: None (logged by _load) for an item in a bad shape, so
        one damaged record cannot fail every page of a tenant's jobs."""
        try:
            return self._load(item)
        except JobUnreadable:
            return None

    def _inline_value(
        self,
        item: Mapping[str, AttributeValueTypeDef],
        kind: str,
        problems: list[_BlobProblem] | None,
    ) -> Any:
        """A payload or result kept in the record: its JSON value, or a marker when it
        is not JSON (a record edited by hand), as for an object in S3."""
        raw = get_s(item, kind)
        if raw is None:
            return {} if kind == "payload" else None
        try:
            text = raw or "{}" if kind == "payload" else raw
            return _payload_checked(kind, stored_rows.decode(text))
        except (ValueError, RecursionError) as exc:
            message = f"its {kind}, kept in the job's record, {_unreadable_why(exc)}"
            if problems is not None:
                problems.append(_BlobProblem("the job's record", False, message, exc))
            log.warning("job %s: %s", _item_id(item), message)
            return {"error": f"{kind}_unreadable", "message": message}

    def _blob_value(self, ref: str, kind: str, problems: list[_BlobProblem] | None) -> Any:
        """The JSON value kept in S3 under `ref`, or a marker when it cannot be read.

        A store opened without `bucket=` cannot read one at all (the job was added
        or finished by a store that had it): `*_unreadable`, saying to add it, never
        an empty payload or a null result as if that were the job's. An object that
        holds no JSON (overwritten, cut short) is `*_unreadable` too, saying so."""
        if self.blobs is None:
            message = (
                f"its {kind} is kept in S3 (key {ref}) but SPOOL_STORE_URL names no "
                "bucket: add bucket=BUCKET, the bucket of the store that wrote it"
            )
            if problems is not None:
                problems.append(_BlobProblem(ref, False, message, NoBucket(message)))
            log.warning("job %s: %s", _job_of_ref(ref), message)
            return {"error": f"{kind}_unreadable", "object": ref, "message": message}
        url = f"s3://{self.blobs.bucket}/{ref}"
        try:
            raw = self.blobs.get(
                ref, MAX_OBJECT_BYTES if problems is None else MAX_CLAIMED_OBJECT_BYTES
            )
        except ObjectTooLarge as exc:
            message = (
                f"its {kind} object {url} is {exc.size} bytes, more than the {exc.limit} "
                f"a {kind} may take here: overwritten by hand or by another program?"
            )
            if problems is not None:
                problems.append(_BlobProblem(url, False, message, exc))
            log.warning("job %s: %s", _job_of_ref(ref), message)
            return {"error": f"{kind}_unreadable", "object": url, "message": message}
        except Exception as exc:
            code = _error_code(exc)
            missing = code in MISSING_OBJECT_CODES
            if missing:
                message = (
                    f"its {kind} object {url} is missing "
                    "(deleted by the bucket's lifecycle rule or by hand)"
                )
            else:
                message = f"its {kind} object {url} could not be read: {code or type(exc).__name__}"
                if code in REFUSED_OBJECT_CODES:
                    message += " (S3 says so of a missing object to a role without s3:ListBucket)"
                elif code in NO_BUCKET_CODES:
                    message += (
                        f" (the bucket {self.blobs.bucket} does not exist: deleted, or "
                        "SPOOL_STORE_URL names another than the one that wrote it)"
                    )
            if problems is not None:
                problems.append(_BlobProblem(url, missing, message, exc))
            elif not missing and code not in REFUSED_OBJECT_CODES | NO_BUCKET_CODES:
                raise
            log.warning("job %s: %s", _job_of_ref(ref), message)
            suffix = "missing" if missing else "unreadable"
            return {"error": f"{kind}_{suffix}", "object": url, "message": message}
        try:
            return _payload_checked(kind, stored_rows.decode(raw))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            message = f"its {kind} object {url} {_unreadable_why(exc)}"
            if problems is not None:
                problems.append(_BlobProblem(url, False, message, exc))
            log.warning("job %s: %s", _job_of_ref(ref), message)
            return {"error": f"{kind}_unreadable", "object": url, "message": message}

    def _statics_for(self, job_ids: Sequence[str]) -> dict[str, _Static]:
        out: dict[str, _Static] = {}
        missing: list[str] = []
        with self._statics_lock:
            for job_id in job_ids:
                cached = self._statics.get(job_id)
                if cached is None:
                    missing.append(job_id)
                else:
                    out[job_id] = cached
        if missing:
            found = self._batch_get([job_key(i) for i in missing], STATIC_ATTRS)
            for item in found.values():
                try:
                    static = _Static.of(item)
                except BAD_SHAPE as exc:  # left out: the write it was read for is not made
                    log.warning("job %s: its record cannot be read: %s", _item_id(item), _why(exc))
                    continue
                self._remember(static)
                out[static.id] = static
        return out

    # -- add --------------------------------------------------------------------------------------
    @aws_errors(write=True)
    def add(self, jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        now = self._now()
        first_of: dict[tuple[str, str], int] = {}
        duplicate_of: dict[int, int] = {}
        fresh: list[int] = []
        for i, new in enumerate(jobs):
            if new.idempotency_key is not None:
                key = (new.tenant, new.idempotency_key)
                if key in first_of:
                    duplicate_of[i] = first_of[key]
                    continue
                first_of[key] = i
            fresh.append(i)
        if cap is not None:
            self._check_backlog(cap, [jobs[i] for i in fresh])
        payloads = {i: dumps(jobs[i].payload) for i in fresh}
        too_big = [i for i in fresh if len(payloads[i]) > INLINE_LIMIT and self.blobs is None]
        if too_big:
            raise PayloadTooLarge(
                f"payload over {INLINE_LIMIT} bytes and no bucket is configured: "
                "add bucket=BUCKET to SPOOL_STORE_URL to keep big payloads in S3",
                {"index": too_big[0]},
            )
        offloaded: dict[int, str] = {}
        existing: dict[int, AddResult] = {}  # index -> the job holding its key
        stale: dict[tuple[str, str], str] = {}
        try:
            for i in fresh:
                if self.blobs is not None and len(payloads[i]) > self.config.offload_bytes:
                    ref = self.blobs.payload_key(jobs[i].id)
                    self.blobs.put(ref, payloads[i].encode())
                    offloaded[i] = ref
            looked_up = False
            for _ in range(5):
                pending = [i for i in fresh if i not in existing]
                units = [
                    self._new_unit(jobs[i], payloads[i], offloaded.get(i), now, stale)
                    for i in pending
                ]
                keyed = any(jobs[i].idempotency_key is not None for i in pending)
                if keyed and not looked_up and len(list(self._tx.chunks(units))) > 1:
                    # Several transactions are not one: find taken keys before writing any.
                    looked_up = True
                    self._resolve_keys(jobs, pending, existing, stale)
                    continue
                taken = self._write_all(units, pending, jobs)
                if not taken:
                    break
                self._resolve_keys(jobs, taken, existing, stale)
            else:
                raise StoreUnavailable("idempotency keys kept changing under this add; try again")
        except BaseException:
            # A write that raised may have landed (its reply lost): delete only the
            # payloads no job record names.
            self._drop_unreferenced([(jobs[i].id, ref) for i, ref in offloaded.items()])
            raise
        # A key held by the very job this add made is this add's own write: applied,
        # its reply lost, and the call sent again and refused on its own conditions
        # (botocore's retry carries the same ClientRequestToken, which DynamoDB matches
        # but a stand-in may not). The job was created here, and its message is ours.
        for i in [i for i, held in existing.items() if held.job.id == jobs[i].id]:
            del existing[i]
        if self.blobs is not None:
            unused = [ref for i, ref in offloaded.items() if i in existing]
            if unused:
                self.blobs.delete(unused)
        results: list[AddResult] = []
        created: dict[int, Job] = {}
        for i, new in enumerate(jobs):
            if i in duplicate_of:
                first = duplicate_of[i]  # before i: its result is in already
                results.append(results[first].repeated(jobs[first]))
            elif i in existing:
                results.append(existing[i])
            else:
                job = self._new_job(new, now, 0 if i in offloaded else len(payloads[i]))
                created[i] = job
                results.append(AddResult(job, True))
        self._send_marked([(j.id, to_micros(j.run_at)) for j in created.values()], now)
        return results

    def _new_job(self, new: NewJob, now: int, inline_bytes: int) -> Job:
        job = queued_job(new, from_micros(to_micros(new.run_at)), from_micros(now))
        self._remember(
            _Static(
                new.id,
                new.tenant,
                new.type,
                new.queue,
                new.priority,
                now,
                new.idempotency_key,
                inline_bytes,
                new.callback_url,
            )
        )
        return job

    def _new_unit(
        self,
        new: NewJob,
        payload: str,
        ref: str | None,
        now: int,
        stale: Mapping[tuple[str, str], str],
    ) -> Unit:
        shard = self._shard(new.id)
        run_at = to_micros(new.run_at)
        st = _Static(
            new.id, new.tenant, new.type, new.queue, new.priority, now, new.idempotency_key
        )
        item: Item = {
            **job_key(new.id),
            "id": s(new.id),
            "tenant": s(new.tenant),
            "type": s(new.type),
            "queue": s(new.queue),
            "priority": n(new.priority),
            "state": s(JobState.QUEUED.value),
            "attempts": n(0),
            "max_attempts": n(new.max_attempts),
            "run_at": n(run_at),
            "created_at": n(now),
            "updated_at": n(now),
            "ver": n(0),
            "attempt_log": {"M": {}},  # ring slots, filled by finishes and reaps
            "due_pk": s(due_partition(shard)),
            "due_sk": s(self._due_sk(st, run_at)),
            "tm_pk": s(timer_partition(TIMER_WAITING, shard)),
            "tm_at": n(run_at),
            "st_pk": s(state_partition(JobState.QUEUED, shard)),
            "tn_pk": s(tenant_partition(new.tenant, shard)),
            "created_sk": s(created_sort_key(now, new.id)),
        }
        if new.idempotency_key is not None:
            item["idem"] = s(new.idempotency_key)
        if new.callback_url is not None:
            item["cb_url"] = s(new.callback_url)
        if ref is not None:
            item["payload_ref"] = s(ref)
        else:
            item["payload"] = s(payload)
            item["pbytes"] = n(len(payload))
        planned = self._planned_message(run_at, now)
        if planned is not None:
            item["msg_at"] = n(planned)
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        keys = [_key_str(job_key(new.id))]
        if new.idempotency_key is not None:
            ikey = idem_key(new.tenant, new.idempotency_key)
            # No expires_at: a key lives as long as its job, which has none until it
            # finishes (_key_lifetime dates the key then, in the same transaction).
            idem_item: Item = {**ikey, "job_id": s(new.id)}
            previous = stale.get((new.tenant, new.idempotency_key))
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": idem_item,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            if previous is None:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            else:  # the key points at a job that was purged: take it over
                put["ConditionExpression"] = "attribute_not_exists(pk) OR job_id = :stale"
                put["ExpressionAttributeValues"] = {":stale": s(previous)}
            actions.append({"Put": put})  # type: ignore[typeddict-item]
            keys.append(_key_str(ikey))
        return Unit(
            actions,
            keys,
            [(new.queue, new.type, "enqueued", 1)],
            size=len(payload if ref is None else "") + 2048,
        )

    def _write_all(
        self, units: list[Unit], pending: list[int], jobs: Sequence[NewJob]
    ) -> list[int]:
        """Write every unit or none; returns the jobs whose idempotency key was taken.

        More than one transaction's worth is written chunk by chunk; when a later
        chunk fails, the chunks already written are deleted again.
        """
        done: list[list[int]] = []
        try:
            for chunk in self._tx.chunks(units):
                for attempt in range(TRANSACTION_ATTEMPTS):
                    try:
                        self._tx.once([units[i] for i in chunk])
                        break
                    except Cancelled as cancelled:
                        taken = [
                            pending[i]
                            for i, reason in zip(chunk, cancelled.reasons, strict=True)
                            if reason.get("Code") == "ConditionalCheckFailed"
                        ]
                        if taken and self._landed_before([jobs[pending[i]].id for i in chunk]):
                            break  # an earlier try of this very transaction was applied
                        if taken:
                            self._roll_back(units, done, jobs, pending)
                            return taken
                        self._tx.backoff(attempt)
                else:
                    raise StoreUnavailable("DynamoDB transactions kept conflicting; try again")
                done.append(chunk)
        except BaseException:
            if done:
                self._roll_back(units, done, jobs, pending)
            raise
        return []

    def _landed_before(self, job_ids: Sequence[str]) -> bool:
        """Whether a transaction putting these new jobs' records, refused on their
        conditions, had already been applied by an earlier try of the same call.

        Botocore sends a transaction again when its answer is lost; DynamoDB answers
        the resend as the first (same ClientRequestToken), but a stand-in that does
        not match the token (moto_server) refuses it, every record being there. The
        ids are this add's own and fresh, and a transaction is all or nothing: when
        every record is there, the first try wrote the whole chunk. A keyless add
        read that as taken keys, wrote again five times and answered 503 "idempotency
        keys kept changing", its jobs stored; a retrying client made them twice."""
        found = self._batch_get([job_key(j) for j in job_ids], ("id",))
        return all(_key_str(job_key(j)) in found for j in job_ids)

    def _roll_back(
        self, units: list[Unit], done: list[list[int]], jobs: Sequence[NewJob], pending: list[int]
    ) -> None:
        """Undo the chunks of a multi-transaction add that did commit."""
        undo: list[Unit] = []
        for chunk in done:
            for i in chunk:
                new = jobs[pending[i]]
                actions: list[TransactWriteItemTypeDef] = [
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": job_key(new.id),
                            "ConditionExpression": "ver = :zero",
                            "ExpressionAttributeValues": {":zero": n(0)},
                        }
                    }
                ]
                if new.idempotency_key is not None:
                    actions.append(
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": idem_key(new.tenant, new.idempotency_key),
                                "ConditionExpression": "job_id = :id",
                                "ExpressionAttributeValues": {":id": s(new.id)},
                            }
                        }
                    )
                undo.append(Unit(actions, units[i].keys, [(new.queue, new.type, "enqueued", -1)]))
        if undo:
            undone = self._tx.apply(undo)
            if not all(undone):
                log.error("could not roll back %d jobs of a failed add", undone.count(False))

    def _resolve_keys(
        self,
        jobs: Sequence[NewJob],
        indexes: Sequence[int],
        existing: dict[int, AddResult],
        stale: dict[tuple[str, str], str],
    ) -> bool:
        """Look up who holds these idempotency keys; True if any is held by a live job."""
        keyed = [i for i in indexes if jobs[i].idempotency_key is not None]
        if not keyed:
            return False
        holders = self._batch_get(
            [idem_key(jobs[i].tenant, jobs[i].idempotency_key or "") for i in keyed]
        )
        owner: dict[int, str] = {}
        for i in keyed:
            held = holders.get(_key_str(idem_key(jobs[i].tenant, jobs[i].idempotency_key or "")))
            if held is not None:
                owner[i] = need_s(held, "job_id")
        found = self._batch_get([job_key(j) for j in set(owner.values())]) if owner else {}
        any_live = False
        for i, job_id in owner.items():
            item = found.get(_key_str(job_key(job_id)))
            key = (jobs[i].tenant, jobs[i].idempotency_key or "")
            if item is None:
                stale[key] = job_id
            else:
                existing[i] = AddResult(self._load(item), False, get_s(item, "cb_url"))
                any_live = True
        return any_live

    def check_writable(self) -> None:
        """The table answers for itself on each write; the queue does not (a job is
        stored even when its id cannot be sent), so a send that failed in the last
        minute, with none succeeding since, makes /health answer 503 naming it, how
        long ago and why. A failure where SQS gave no answer, or said the queue was
        missing, shows only while the queue still does not answer
        (SqsDispatch.still_failing)."""
        if self.dispatch is None:
            return
        failing = self.dispatch.failing
        if failing is None or time.monotonic() - failing.at >= QUEUE_FAILURE_SHOWN:
            return
        failing = self.dispatch.still_failing()
        if failing is None:
            return
        ago = max(0, round(time.monotonic() - failing.at))
        still = "; the queue does not answer now" if failing.probe else ""
        raise StoreUnavailable(
            f"sending job ids to the SQS queue failed {ago} s ago ({failing.why}), and "
            f"none has been sent since{still}: jobs are stored and the scheduled "
            "function sends them again once the queue answers",
            retry_after=30,
        )

    # -- get --------------------------------------------------------------------------------------
    def _owned_item(
        self, job_id: str, tenant: str | None, attrs: Sequence[str] = ()
    ) -> Item | None:
        """The job's record (only `attrs`, when given), or None when there is none or,
        with `tenant`, when it is another tenant's.

        A GetItem compares nothing: it handed back another tenant's record whole (its
        inline payload, result, error and attempts) for the caller to compare the
        tenant afterwards, so another tenant's job answered its 404 later than an
        unknown id, by the time it took to receive and parse that record. A Query of
        the one key filtered on the tenant compares it in the read, as SQLite's and
        Postgres's WHERE and Redis's scripts do: DynamoDB still reads (and bills) the
        item, but answers another tenant's with no item, as it answers an unknown id.
        Consistent, and the same read capacity as the GetItem it replaces."""
        expr = Expr()
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if attrs:
            request["ProjectionExpression"] = ", ".join(expr.name(a) for a in attrs)
        key = job_key(job_id)
        if tenant is None:  # the worker's reads: no tenant to compare
            if attrs:
                request["ExpressionAttributeNames"] = expr.names
            return self.ddb.get_item(Key=key, **request).get("Item")
        request["KeyConditionExpression"] = (
            f"{expr.name('pk')} = {expr.value(key['pk'])} AND "
            f"{expr.name('sk')} = {expr.value(key['sk'])}"
        )
        request["FilterExpression"] = f"{expr.name('tenant')} = {expr.value(s(tenant))}"
        items = self.ddb.query(**request, **expr.placeholders()).get("Items", [])
        return items[0] if items else None

    @aws_errors(write=False)
    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        item = self._owned_item(job_id, tenant)
        return None if item is None else self._load(item)

    @aws_errors(write=False)
    def timings(self, job_ids: Sequence[str]) -> dict[str, JobTiming]:
        """Each job's type, state and times (base.job_timings), a hundred to a consistent
        BatchGetItem with a projection (SHAPE_ATTRS): never the payload or result, so
        no S3 GET for one kept there and no 400 KB item read to learn a job's type. An
        item in a shape `get` would refuse (JobUnreadable) is left out, as `get`'s
        caller leaves it: to the claim, which buries it."""
        found: dict[str, JobTiming] = {}
        for item in self._batch_get([job_key(j) for j in job_ids], SHAPE_ATTRS).values():
            if _shape_problem(item) is not None:
                continue
            timing = item_to_timing(item)
            found[timing.id] = timing
        return found

    # -- claim ------------------------------------------------------------------------------------
    @aws_errors(write=True)
    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        policy: ClaimPolicy | None = None,
        started: bool = True,
    ) -> list[Job]:
        now = self._now()
        if self.config.reap_every <= 0 or (
            self._last_reap is None or now - self._last_reap >= self.config.reap_every * MICRO
        ):
            self.reap_expired(now)
        if limit <= 0 or (queues is not None and not queues) or (ids is not None and not ids):
            return []
        expires = now + micros_of(lease_seconds)
        if policy is not None and policy.active:  # limits and fair turns: dynamodb_limits.py
            return claim_with_policy(self, policy, limit, now, expires, queues, ids, started)
        claimed: list[Job] = []
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            if len(wanted) >= BATCH_CLAIM_FROM or len(wanted) > limit:
                claimed = self._claim_ids(wanted, limit, now, expires, queues, started)
                claimed.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
                return claimed
        candidates: Iterator[str]
        if ids is None:
            candidates = self._due_candidates(now, queues, limit)
        else:
            candidates = iter(dict.fromkeys(ids))
        for job_id in candidates:
            try:
                job = self._claim_one(
                    job_id, now, expires, queues, by_id=ids is not None, started=started
                )
            except Exception as exc:
                if not claimed:
                    raise
                # Not consumed for a due claim: the rest of that iterator is more reads.
                unclaimed = [job_id, *candidates] if ids is not None else []
                self._claim_cut_short(exc, claimed, unclaimed, now)
                break
            if job is not None:
                claimed.append(job)
                if len(claimed) >= limit:
                    break
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return claimed

    def _claim_ids(
        self,
        ids: list[str],
        limit: int,
        now: int,
        expires: int,
        queues: Sequence[str] | None,
        started: bool = True,
    ) -> list[Job]:
        """Claim named jobs (an SQS batch) in two requests, not one per job.

        One consistent BatchGetItem reads them; the due waiting ones, best first up
        to `limit`, are claimed in one TransactWriteItems whose every update is
        conditional on the version read (so on nothing having changed since), and
        each claimed record is the read item with the claim's own changes applied:
        nothing is read back. What the read shows cannot be claimed is settled
        without a write: gone, finished or leased (a redundant message), or not due
        yet (its id is sent again for when it is). A job whose lease expired, and
        one that changed between the read and the write, take the one-at-a-time
        path, which reaps and claims as before. One job alone is a plain UpdateItem:
        a transaction would cost it twice the write units and save nothing.
        """
        found = self._batch_get([job_key(i) for i in ids])
        ready: list[tuple[str, str, Item]] = []  # (due sort key, id, item): best first
        expired: list[str] = []
        early: list[tuple[str, int]] = []
        for job_id in ids:
            item = found.get(_key_str(job_key(job_id)))
            if item is None or (queues is not None and get_s(item, "queue") not in queues):
                continue
            state = get_s(item, "state")
            if state in (JobState.QUEUED.value, JobState.RETRYING.value):
                if self._buried_if_damaged(item):  # never claimed: it could not be run
                    continue
                run_at = need_n(item, "run_at")
                if run_at > now:
                    early.append((job_id, run_at))
                else:
                    ready.append((self._due_sk(_Static.of(item), run_at), job_id, item))
            elif state == JobState.RUNNING.value and (get_n(item, "lease_exp") or 0) <= now:
                expired.append(job_id)
        self._send(early, now)  # messages that came early: again, for when the job is due
        ready.sort(key=lambda r: (r[0], r[1]))
        chosen = ready[:limit]
        claimed: list[Job] = []
        one_by_one: list[str] = []
        if len(chosen) == 1:
            one_by_one.append(chosen[0][1])
        elif chosen:
            units: list[Unit] = []
            updated: list[Item] = []
            for _, job_id, item in chosen:
                expr, new_item = self._claim_update(job_id, item, now, expires, started)
                condition = (
                    f"{expr.name('ver')} = {expr.value(n(need_n(item, 'ver')))} AND "
                    f"{expr.one_of('state', WAITING)} AND "
                    f"{expr.name('run_at')} <= {expr.value(n(now))}"
                )
                units.append(
                    Unit([self._update(job_id, expr, condition)], [_key_str(job_key(job_id))])
                )
                updated.append(new_item)
            applied = self._tx.apply(units)
            for (_, job_id, _), new_item, ok in zip(chosen, updated, applied, strict=True):
                if ok:
                    job = self._claimed_job(new_item)
                    if job is not None:
                        claimed.append(job)
                else:
                    one_by_one.append(job_id)  # changed since the read: decide on a fresh look
        rest = [*one_by_one, *expired]
        for position, job_id in enumerate(rest):
            if len(claimed) >= limit:
                break
            try:
                job = self._claim_one(job_id, now, expires, queues, by_id=True, started=started)
            except Exception as exc:
                if not claimed:
                    raise
                self._claim_cut_short(exc, claimed, rest[position:], now)
                break
            if job is not None:
                claimed.append(job)
        return claimed

    def _claim_cut_short(
        self, exc: Exception, claimed: Sequence[Job], unclaimed: Sequence[str], now: int
    ) -> None:
        """A claim's later write failed (throttled, say) after earlier ones had claimed
        jobs: those are handed to the worker rather than lost with a raise (each is
        `running`, an attempt spent; raised, no worker ran them, their redelivered
        messages were dropped as leased, and the reaper spent the attempt, dead at the
        last one with its handler never run). The named jobs not yet claimed get their
        ids sent again, since the caller acknowledges the messages of jobs it did not
        claim as redundant; a send SQS refuses is left to release_due."""
        log.warning(
            "a claim stopped after %d jobs (%s); %d named jobs not claimed are sent again",
            len(claimed),
            _why(exc),
            len(unclaimed),
        )
        self._send([(job_id, now) for job_id in unclaimed], now)

    def _claim_update(
        self,
        job_id: str,
        item: Mapping[str, AttributeValueTypeDef],
        now: int,
        expires: int,
        started: bool = True,
    ) -> tuple[Expr, Item]:
        """The claim's update of this job, and the item as that update leaves it."""
        values = self._claim_values(job_id, now, expires, started)
        new_item: Item = {**item, **values}
        new_item["attempts"] = n(need_n(item, "attempts") + 1)
        new_item["ver"] = n(need_n(item, "ver") + 1)
        new_item["att_seq"] = n((get_n(item, "att_seq") or 0) + 1)
        for attr in _claim_removes(values):
            new_item.pop(attr, None)
        return self._claim_expr(values), new_item

    def _claim_expr(self, values: Mapping[str, AttributeValueTypeDef]) -> Expr:
        """A claim's SETs and REMOVEs (its condition is the caller's): what both claim
        paths write, and what _claim_update applies to a read item."""
        expr = Expr()
        for attr, value in values.items():
            expr.set(attr, value)
        expr.set_raw(f"{expr.name('attempts')} = {expr.name('attempts')} + {expr.value(n(1))}")
        expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
        seq = expr.name("att_seq")
        expr.set_raw(f"{seq} = if_not_exists({seq}, {expr.value(n(0))}) + {expr.value(n(1))}")
        expr.remove(*_claim_removes(values))
        return expr

    def _claim_values(self, job_id: str, now: int, expires: int, started: bool = True) -> Item:
        """The plain values a claim SETs, a fresh lease token among them (and the
        `unstarted` mark, for a claim whose holder will call start). The mark is that
        token: an earlier release's reap and claim (a rolling upgrade) leave the mark
        alone but replace the token, so a mark they left never matches a later lease,
        and the reap spends the attempt of the run the old claim started."""
        shard = self._shard(job_id)
        token = s(new_lease_token())
        marks: Item = {} if started else {"unstarted": token}
        return {
            **marks,
            "state": s(JobState.RUNNING.value),
            "lease_token": token,
            "lease_exp": n(expires),
            "started_at": n(now),
            "updated_at": n(now),
            "tm_pk": s(timer_partition(TIMER_RUNNING, shard)),
            "tm_at": n(expires),
            "st_pk": s(state_partition(JobState.RUNNING, shard)),
            "lease_worker": s(worker_id.current()),
        }

    def _claimed_job(self, item: Item) -> Job | None:
        """A claimed item as the Job to run; None when its payload object cannot be read.

        The claim has committed by now (a batch's in one transaction), so a raise here
        would strand every job claimed with this one: running, an attempt spent, their
        redelivered messages skipped as leased until the reaper. Instead the job is
        settled on its own without running its handler: dead when its payload object
        is missing (nothing will bring it back), retrying with a backoff (dead after
        its last attempt) when S3 refused or failed the read. The others run. A
        record in a bad shape (JobUnreadable) is buried the same way (_bury_damaged).
        """
        problems: list[_BlobProblem] = []
        try:
            job = self._load(item, problems)
        except JobUnreadable as exc:
            self._bury_damaged(item, _why(exc.__cause__ or exc))
            return None
        self._remember_seq(job.lease_token or "", need_n(item, "att_seq"), "attempt_log" in item)
        if not problems:
            return job
        self._settle_unrunnable(job, problems[0])
        return None

    def _settle_unrunnable(self, job: Job, problem: _BlobProblem) -> None:
        now = from_micros(self._now())
        retry_at: datetime | None = None
        if problem.missing or job.attempts >= job.max_attempts:
            state = JobState.DEAD
        else:
            state = JobState.RETRYING
            retry_at = now + timedelta(seconds=UNREADABLE_RETRY.ceiling(job.attempts))
        stored_rows.settle_unrun(
            self,
            Completion(job.id, job.lease_token or "", state, None, problem.message, retry_at),
            attempt=job.attempts,
            started_at=job.started_at or now,
            now=now,
            error_type="PayloadMissing" if problem.missing else type(problem.cause).__name__,
        )

    def _bury_damaged_ids(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """Read these jobs whole (after a claim's write was refused as invalid) and bury
        each waiting one in a shape no worker could run: its id -> whether that applied."""
        buried: dict[str, bool] = {}
        for item in self._batch_get([job_key(job_id) for job_id in job_ids]).values():
            if get_s(item, "state") not in WAITING_VALUES:
                continue
            problem = _shape_problem(item)
            if problem is not None:
                buried[_item_id(item)] = self._bury_damaged(item, problem)
        return buried

    def _buried_if_damaged(self, item: Mapping[str, AttributeValueTypeDef]) -> bool:
        """True when a waiting item a claim read is in a shape no worker could run: it
        is made dead then (_bury_damaged), and the claim goes on without it."""
        problem = _shape_problem(item)
        if problem is None:
            return False
        self._bury_damaged(item, problem)
        return True

    def _bury_damaged(self, item: Mapping[str, AttributeValueTypeDef], why: str) -> bool:
        """Dead, without running it, a job a claim met whose record cannot be read.

        Either the claim's write had committed (the item is running under the lease
        token it holds) or the item was only read (a batch claim checks what it read
        before writing; a claim whose update the item's attributes made invalid reads
        it then). Left as it was, a claimed one would stay running for good (no worker
        can run it and the reaper skips it) and a waiting one would be met by every
        claim. Dead, it leaves the running or waiting counts and the due and lease
        indexes, its SQS message is dropped as redundant, and it is counted as a dead
        job (when its queue and type can be read), purged and expired like one. Its
        last_error and an ERROR line name what is wrong; listings still skip it and
        reading it answers job_unreadable until its operator repairs the item (then
        redrives the job) or deletes it. The write is conditional on the item being as
        read (its lease token, or its version), so a repair made meanwhile is kept.
        Never raises: the other jobs of the claim still run.
        """
        job_id = _item_id(item)
        now = self._now()
        running = get_s(item, "state") == JobState.RUNNING.value
        expr = Expr()
        if running:
            condition = (
                f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
                f"{expr.name('lease_token')} = {expr.value(s(need_s(item, 'lease_token')))}"
            )
        else:
            version = item.get("ver")
            same = (
                f"attribute_not_exists({expr.name('ver')})"
                if version is None
                else f"{expr.name('ver')} = {expr.value(version)}"
            )
            condition = f"{expr.one_of('state', WAITING)} AND {same}"
        message = (
            f"the job's stored record cannot be read ({why}), so it was not run; "
            "repair the item and redrive the job, or delete it"
        )
        expr.set("state", s(JobState.DEAD.value))
        expr.set("last_error", s(message))
        expr.set("updated_at", n(now))
        expr.set("st_pk", s(state_partition(JobState.DEAD, self._shard(job_id))))
        with contextlib.suppress(*BAD_SHAPE):  # a version that is no number stays as it is
            if get_n(item, "ver") is not None:
                expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
        expr.remove("lease_token", "lease_exp", "lease_worker")
        self._finished_attrs(expr, job_id, now)
        counters: list[tuple[str, str, str, int]] = []
        queue, type_, tenant = get_s(item, "queue"), get_s(item, "type"), get_s(item, "tenant")
        if queue is not None and type_ is not None:
            counters += [(queue, type_, e, 1) for e in completion_events(JobState.DEAD)]
        if queue is not None and tenant is not None:
            counters.append((queue, tenant, minute_event(now, False), 1))
        unit = Unit([self._update(job_id, expr, condition)], [_key_str(job_key(job_id))], counters)
        idem: str | None = None
        with contextlib.suppress(*BAD_SHAPE):  # a key that cannot be read stays as it is
            idem = get_s(item, "idem")
        unit = self._with_key_dated(unit, job_id, tenant, idem, self._expires(now))
        try:
            [applied] = self._tx.apply([unit])
        except Exception:
            log.exception(
                "job %s: its record cannot be read (%s) and it could not be made dead either%s",
                job_id,
                why,
                "; it stays running until its operator repairs or deletes the item"
                if running
                else "",
            )
            return False
        if applied:
            log.error("job %s: %s; dead without running it", job_id, message)
        return applied

    def _due_candidates(self, now: int, queues: Sequence[str] | None, limit: int) -> Iterator[str]:
        """Ids of due jobs, best first, merged across shards."""

        def shard_items(shard: int) -> Iterator[tuple[str, str]]:
            expr = Expr()
            key = f"{expr.name('due_pk')} = {expr.value(s(due_partition(shard)))}"
            filter_ = f"{expr.name('run_at')} <= {expr.value(n(now))}"
            if queues is not None:
                filter_ += " AND " + expr.one_of("queue", [s(q) for q in queues])
            page = min(1000, 2 * limit + 2)
            for item in self._query(GSI_DUE, expr, key, filter_, page=page):
                yield need_s(item, "due_sk"), job_id_of(item)

        merged = heapq.merge(*(shard_items(sh) for sh in self._shards()))
        return (job_id for _, job_id in merged)

    def _claim_one(
        self,
        job_id: str,
        now: int,
        expires: int,
        queues: Sequence[str] | None,
        by_id: bool,
        started: bool = True,
    ) -> Job | None:
        for _ in range(2):
            values = self._claim_values(job_id, now, expires, started)
            expr = self._claim_expr(values)
            condition = (
                f"{expr.one_of('state', WAITING)} AND {expr.name('run_at')} <= {expr.value(n(now))}"
            )
            if queues is not None:
                condition += " AND " + expr.one_of("queue", [s(q) for q in queues])
            try:
                response = self.ddb.update_item(
                    TableName=self.table,
                    Key=job_key(job_id),
                    UpdateExpression=expr.update_expression(),
                    ConditionExpression=condition,
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **expr.placeholders(),
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "ValidationException" and any(self._bury_damaged_ids([job_id]).values()):
                    return None  # `attempts` or `ver` not a number: the claim cannot add 1
                if code != "ConditionalCheckFailedException":
                    raise
                old: Item | None = exc.response.get("Item")  # type: ignore[assignment]
                if old is None:
                    return None
                if old.get("lease_token") == values["lease_token"]:
                    # Our own write: botocore sent the claim again after its answer was
                    # lost, and the resend failed the condition the first one had met.
                    # Skipped, the job sat leased by nobody until the reaper spent its
                    # attempt (dead at max_attempts=1, its handler never run).
                    return self._claimed_job(old)
                state = get_s(old, "state")
                lease = get_n(old, "lease_exp")
                if state == JobState.RUNNING.value and lease is not None and lease <= now:
                    if self._reap([old], now):
                        continue  # reaped: try the claim again
                    return None
                run_at = get_n(old, "run_at")
                if (
                    by_id
                    and state in (JobState.QUEUED.value, JobState.RETRYING.value)
                    and (run_at is not None and run_at > now)
                ):
                    # A message that came early: send the id again for when the job is due.
                    self._send([(job_id, run_at)], now)
                return None
            return self._claimed_job(response["Attributes"])
        return None

    # -- reaping ----------------------------------------------------------------------------------
    @aws_errors(write=True)
    def reap_expired(self, now: int | None = None) -> int:
        """Expired leases back to retrying (or dead after the last attempt); returns how many."""
        return self._reap_expired(now).leases

    def _reap_expired(self, now: int | None = None) -> Reaped:
        """`reap_expired`, saying also how many reaped jobs' ids went to the queue."""
        now = self._now() if now is None else now
        self._last_reap = now
        expired: list[Item] = []  # index entries: keys only
        for shard in self._shards():
            expr = Expr()
            key = (
                f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_RUNNING, shard)))}"
                f" AND {expr.name('tm_at')} <= {expr.value(n(now))}"
            )
            expired.extend(self._query(GSI_TIMER, expr, key))
        if not expired:
            return Reaped(0, 0)
        found = self._batch_get([job_key(job_id_of(e)) for e in expired])
        return self._reap_sending(list(found.values()), now)

    def _reap(self, items: Sequence[Mapping[str, AttributeValueTypeDef]], now: int) -> int:
        """Reap these records' expired leases; returns how many were reaped."""
        return self._reap_sending(items, now).leases

    def _reap_sending(
        self, items: Sequence[Mapping[str, AttributeValueTypeDef]], now: int
    ) -> Reaped:
        units: list[Unit] = []
        unit_ids: list[str] = []
        retried: set[str] = set()
        buried: dict[str, tuple[str, str, str, str, int, int, str | None]] = {}
        for item in items:
            token = get_s(item, "lease_token")
            if token is None:
                continue
            try:
                st = _Static.of(item)
                dead = need_n(item, "attempts") >= need_n(item, "max_attempts")
            except BAD_SHAPE as exc:
                # Raising would fail every claim and every release (both reap first)
                # for as long as the item stays as it is: it is left as it is instead.
                log.warning(
                    "job %s: its lease expired but its record cannot be read (%s); "
                    "it is not reaped until its operator repairs or deletes the item",
                    _item_id(item),
                    _why(exc),
                )
                continue
            if get_s(item, "unstarted") == token:
                units.append(self._give_back(item, st, token, now))
                unit_ids.append(st.id)
                retried.add(st.id)
                continue
            state = JobState.DEAD if dead else JobState.RETRYING
            expr = Expr()
            condition = (
                f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
                f"{expr.name('lease_token')} = {expr.value(s(token))} AND "
                f"{expr.name('lease_exp')} <= {expr.value(n(now))}"
            )
            expr.set("state", s(state.value))
            expr.set("last_error", s(LEASE_EXPIRED_ERROR))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(state, self._shard(st.id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            expr.remove("lease_token", "lease_exp", "lease_worker")
            seq = get_n(item, "att_seq")
            if seq is not None:  # None: claimed before attempt history existed
                started = get_n(item, "started_at")
                expired = need_n(item, "lease_exp")
                reaped = history.lease_expired(
                    need_n(item, "attempts"),
                    from_micros(started if started is not None else expired),
                    from_micros(expired),
                    get_s(item, "lease_worker"),
                    dead,
                )
                entry = self._entry(reaped, seq, st.payload_bytes)
                self._set_attempt(expr, seq, entry, "attempt_log" in item)
            hooks: list[tuple[TransactWriteItemTypeDef, str]] = []
            if dead and st.callback_url is not None:
                tenant = need_s(item, "tenant")
                url, expires = st.callback_url, self._expires(now)
                prune = self._prunings({st.id: hook_ids(item)})[st.id]  # item: a full read
                hooks.extend(
                    self._outbox.stage(expr, st.id, tenant, url, "dead", now, expires, prune)
                )
            if dead:
                self._finished_attrs(expr, st.id, now)
                buried[st.id] = (
                    st.id, need_s(item, "tenant"), st.type, st.queue,
                    need_n(item, "attempts"), need_n(item, "max_attempts"),
                    get_s(item, "lease_worker"),
                )  # fmt: skip
            else:
                self._waiting_attrs(expr, st, now, now)
                retried.add(st.id)
            unit_ids.append(st.id)
            unit = Unit(
                [self._update(st.id, expr, condition), *(h[0] for h in hooks)],
                [_key_str(job_key(st.id)), *(h[1] for h in hooks)],
                [
                    (st.queue, st.type, "failed", 1),
                    (st.queue, st.type, state_event(state), 1),
                    (st.queue, need_s(item, "tenant"), minute_event(now, False), 1),
                ],
            )
            units.append(self._dated_unit(unit, st, self._expires(now)) if dead else unit)
        applied = self._tx.apply(units)
        done = [job_id for job_id, ok in zip(unit_ids, applied, strict=True) if ok]
        sent = self._send_marked([(i, now) for i in done if i in retried], now)
        for job_id in done:
            if job_id in buried:
                log_buried_by_reap(*buried[job_id])
        return Reaped(len(done), sent)

    def _give_back(
        self, item: Mapping[str, AttributeValueTypeDef], st: _Static, token: str, now: int
    ) -> Unit:
        """The reap of a lease its claimer never started (JobStore.start): the claim's
        attempt (and its history slot, att_seq) is given back and the job waits again,
        due now, with its message sent; nothing ended, so nothing is counted. Conditional
        on the mark still being this lease's: a start that landed since makes it a reap."""
        expr = Expr()
        condition = (
            f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
            f"{expr.name('lease_token')} = {expr.value(s(token))} AND "
            f"{expr.name('lease_exp')} <= {expr.value(n(now))} AND "
            f"{expr.name('unstarted')} = {expr.value(s(token))}"
        )
        one = expr.value(n(1))
        attempts = max(need_n(item, "attempts") - 1, 0)
        expr.set("state", s(JobState.QUEUED.value))
        expr.set("attempts", n(attempts))
        expr.set("updated_at", n(now))
        expr.set("st_pk", s(state_partition(JobState.QUEUED, self._shard(st.id))))
        expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {one}")
        if get_n(item, "att_seq"):
            expr.set_raw(f"{expr.name('att_seq')} = {expr.name('att_seq')} - {one}")
        expr.remove("lease_token", "lease_exp", "lease_worker", "unstarted")
        self._waiting_attrs(expr, st, now, now)
        return Unit([self._update(st.id, expr, condition)], [_key_str(job_key(st.id))])

    @aws_errors(write=True)
    def start(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        now = self._now()
        marked = []
        for job_id, token in leases:
            expr = Expr()
            condition = (
                f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
                f"{expr.name('lease_token')} = {expr.value(s(token))} AND "
                f"{expr.name('lease_exp')} > {expr.value(n(now))}"
            )
            expr.remove("unstarted")
            marked.append(self._update_if(job_id, expr, condition))
        return marked

    def _prunings(self, listed: Mapping[str, Sequence[str]]) -> dict[str, Pruning]:
        """What each job's next delivery drops (dynamodb_webhooks.pruning), from its
        delivery ids as read; only a job listing more than it keeps (webhook_history)
        costs a read."""
        kept = self.webhook_history
        full = [i for ids in listed.values() if len(ids) > kept for i in ids]
        found = self._batch_get([hook_key(i) for i in full], PRUNE_PROJECTION) if full else {}
        return {job_id: pruning(ids, found, kept) for job_id, ids in listed.items()}

    def _finish_prunings(
        self, completions: Sequence[Completion], statics: Mapping[str, _Static]
    ) -> dict[str, Pruning]:
        """_prunings for the completions that write a delivery. Their `hooks` are read
        here, after the claim their lease token names: the finish's condition on that
        token fails if another terminal transition (the only writer of `hooks`) came
        between, so the set read is the set written over."""
        ids = [
            c.job_id
            for c in completions
            if c.state is not JobState.RETRYING
            and (st := statics.get(c.job_id)) is not None
            and st.callback_url is not None
        ]
        if not ids:
            return {}
        items = self._batch_get([job_key(i) for i in ids], ("hooks",))
        return self._prunings({i: hook_ids(items.get(_key_str(job_key(i)), {})) for i in ids})

    def _update(self, job_id: str, expr: Expr, condition: str) -> TransactWriteItemTypeDef:
        return {
            "Update": {
                "TableName": self.table,
                "Key": job_key(job_id),
                "UpdateExpression": expr.update_expression(),
                "ConditionExpression": condition,
                **expr.placeholders(),  # type: ignore[typeddict-item]
            }
        }

    # -- finish -----------------------------------------------------------------------------------
    @aws_errors(write=True)
    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        now = self._now()
        statics = self._statics_for([c.job_id for c in completions])
        seqs = self._seqs_for([c for c in completions if c.attempt is not None])
        prunes = self._finish_prunings(completions, statics)
        units: list[Unit] = []
        positions: list[int] = []
        written: dict[int, str] = {}
        retries: dict[int, int] = {}
        for index, c in enumerate(completions):
            st = statics.get(c.job_id)
            if st is None:
                continue
            state, result_json, error = c.state, None, c.error
            # What the record can still hold beside its payload, an error message and
            # its attempt history.
            room = (
                RECORD_LIMIT
                - st.payload_bytes
                - MAX_ERROR_CHARS
                - self._history_reserve(st.payload_bytes)
            )
            if state is JobState.SUCCEEDED and c.result is not None:
                result_json = dumps(c.result)
                if self.blobs is None and len(result_json) > room:
                    state, result_json = JobState.DEAD, None
                    error = "the result is too big for a DynamoDB record and no bucket is set"
            expr = Expr()
            condition = (
                f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
                f"{expr.name('lease_token')} = {expr.value(s(c.lease_token))}"
            )
            expr.set("state", s(state.value))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(state, self._shard(st.id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            expr.remove("lease_token", "lease_exp", "lease_worker")
            known = seqs.get(c.lease_token)
            if c.attempt is not None and known is not None:
                seq, has_map = known
                entry = self._entry(c.attempt, seq, st.payload_bytes)
                self._set_attempt(expr, seq, entry, has_map)
            if error is None:
                expr.remove("last_error")
            else:
                # In bytes: the record's room for it is MAX_ERROR_CHARS bytes (`room`).
                expr.set("last_error", s(error_within_bytes(utf8_text(error) or "")))
            size = 2048
            if result_json is None:
                expr.remove("result", "result_ref")
            elif self.blobs is not None and len(result_json) > min(room, self.config.offload_bytes):
                ref = self.blobs.result_key(st.id, c.lease_token)
                self.blobs.put(ref, result_json.encode())
                written[index] = ref
                expr.set("result_ref", s(ref))
                expr.remove("result")
            else:
                expr.set("result", s(result_json))
                size += len(result_json)
            if state is JobState.RETRYING:
                retry_at = to_micros(c.retry_at) if c.retry_at is not None else now
                self._waiting_attrs(expr, st, retry_at, now)
                expr.remove("finished_at")
                retries[index] = retry_at
            else:
                self._finished_attrs(expr, st.id, now)
            hooks: list[tuple[TransactWriteItemTypeDef, str]] = []
            if state is not JobState.RETRYING and st.callback_url is not None:
                url, expires = st.callback_url, self._expires(now)
                hooks.extend(
                    self._outbox.stage(
                        expr, st.id, st.tenant, url, state.value, now, expires, prunes.get(st.id)
                    )
                )
            unit = Unit(
                [self._update(st.id, expr, condition), *(h[0] for h in hooks)],
                [_key_str(job_key(st.id)), *(h[1] for h in hooks)],
                [
                    *((st.queue, st.type, e, 1) for e in completion_events(state)),
                    (st.queue, st.tenant, minute_event(now, state is JobState.SUCCEEDED), 1),
                ],
                size=size,
            )
            if state is not JobState.RETRYING:  # the job's expires_at is set: its key's too
                unit = self._dated_unit(unit, st, self._expires(now))
            units.append(unit)
            positions.append(index)
        applied = [False] * len(completions)
        try:
            outcome = self._tx.apply(units)
        except BaseException:
            self._drop_unreferenced([(completions[i].job_id, ref) for i, ref in written.items()])
            raise
        for index, ok in zip(positions, outcome, strict=True):
            applied[index] = ok
        with self._seqs_lock:
            for c, ok in zip(completions, applied, strict=True):
                if ok:
                    self._seqs.pop(c.lease_token, None)
        # Refused: another worker's job now, or this very completion written before by a
        # call whose reply was lost (the worker writes it again), whose result it keeps.
        self._drop_unreferenced(
            [(completions[i].job_id, ref) for i, ref in written.items() if not applied[i]]
        )
        self._send_marked(
            [(completions[i].job_id, at) for i, at in retries.items() if applied[i]], now
        )
        return applied

    @aws_errors(write=True)
    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        now = self._now()
        expires = now + micros_of(lease_seconds)
        expr = Expr()
        condition = (
            f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
            f"{expr.name('lease_token')} = {expr.value(s(lease_token))} AND "
            f"{expr.name('lease_exp')} > {expr.value(n(now))}"
        )
        expr.set("lease_exp", n(expires)).set("tm_at", n(expires)).set("updated_at", n(now))
        expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
        return self._update_if(job_id, expr, condition)

    def extend_leases(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[bool]:
        """One conditional write per lease: a transaction would refuse them all for one
        lapsed lease, and a worker here (the Lambda functions) holds few at a time."""
        return [self.extend_lease(job_id, token, lease_seconds) for job_id, token in leases]

    # -- cancel and redrive -----------------------------------------------------------------------
    @aws_errors(write=True)
    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        for _ in range(TRANSACTION_ATTEMPTS):
            item = self._owned_item(job_id, tenant)
            if item is None:
                raise JobNotFound("job not found", {"id": job_id})
            state = get_s(item, "state")
            if state in FINISHED_OR_RUNNING:  # refused before any payload object is read
                raise InvalidTransition(f"a {state} job cannot be cancelled", {"state": state})
            job = self._load(item)  # JobUnreadable for a damaged record: nothing written
            version = get_n(item, "ver")
            if version is None:
                log.warning("job %s: its record cannot be read: it has no 'ver'", job_id)
                raise JobUnreadable(
                    f"job {job_id}'s stored record cannot be read (it has no version, "
                    "'ver'); its operator must repair or delete the item",
                    {"id": job_id},
                )
            now = self._now()
            st = _Static.of(item)
            expr = Expr()
            # Unchanged since read (ver), and so still waiting.
            condition = f"{expr.name('ver')} = {expr.value(n(version))} AND " + expr.one_of(
                "state", WAITING
            )
            expr.set("state", s(JobState.CANCELLED.value))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(JobState.CANCELLED, self._shard(job_id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            self._finished_attrs(expr, job_id, now)
            hooks: list[tuple[TransactWriteItemTypeDef, str]] = []
            if st.callback_url is not None:
                url, expires = st.callback_url, self._expires(now)
                # After the read `ver` rests on: a transition between fails the write.
                prune = self._prunings({job_id: hook_ids(item)})[job_id]
                hooks.extend(
                    self._outbox.stage(
                        expr, job_id, st.tenant, url, "cancelled", now, expires, prune
                    )
                )
            unit = Unit(
                [self._update(job_id, expr, condition), *(h[0] for h in hooks)],
                [_key_str(job_key(job_id)), *(h[1] for h in hooks)],
                [(st.queue, st.type, "cancelled", 1)],
            )
            unit = self._dated_unit(unit, st, self._expires(now))
            if self._tx.apply([unit])[0]:
                return job.model_copy(
                    update={
                        "state": JobState.CANCELLED,
                        "updated_at": from_micros(now),
                        "finished_at": from_micros(now),
                    }
                )
        raise StoreUnavailable("the job kept changing while being cancelled; try again")

    @aws_errors(write=True)
    def redrive(
        self,
        job_ids: Sequence[str],
        tenant: str | None = None,
        cap: Backlog | None = None,
        attempts: RedriveAttempts | None = None,
    ) -> list[Job]:
        """Conditional updates (still dead) packed into transactions that also bump
        the moved jobs' tenants' invalidation epochs, so no cache can miss a redrive;
        the moved jobs are then read back (consistently) for the answer. A cap is
        checked as add checks it (_check_backlog): before, per process only."""
        if not job_ids:
            return []
        now = self._now()
        wanted = list(dict.fromkeys(job_ids))
        items = self._batch_get([job_key(j) for j in wanted], SHAPE_ATTRS).values()
        _refuse_damaged_dead(items, tenant if cap is None else cap.tenant)
        if cap is not None:
            # The cap's tenant's dead jobs only, as every store counts them: another
            # tenant's id takes no room and cannot turn a redrive into a 429.
            theirs = {
                need_s(item, "id")
                for item in items
                if _shape_problem(item) is None
                and need_s(item, "tenant") == cap.tenant
                and need_s(item, "state") == JobState.DEAD.value
            }
            dead = [i for i in wanted if i in theirs]
            wanted = redrive_fit(cap, self.waiting_count(cap.tenant), dead)
        statics = self._statics_for(wanted)
        # max_attempts changes only here, and only from dead: read now, it is the
        # job's own when the write's condition (still dead) holds.
        budgets: dict[str, int | None] = {}
        if attempts is not None:  # from the read above: one batch for both
            budgets = {get_s(i, "id") or "": get_n(i, "max_attempts") for i in items}
        units: list[Unit] = []
        unit_ids: list[str] = []
        for job_id in wanted:
            st = statics.get(job_id)
            if st is None or (tenant is not None and st.tenant != tenant):
                continue
            expr = Expr()
            condition = f"{expr.name('state')} = {expr.value(s(JobState.DEAD.value))}"
            expr.set("state", s(JobState.QUEUED.value))
            expr.set("attempts", n(0))
            had = budgets.get(job_id)
            if attempts is not None and had is not None and had > attempts.most(st.type):
                expr.set("max_attempts", n(attempts.most(st.type)))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(JobState.QUEUED, self._shard(job_id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            expr.remove("result", "result_ref", "finished_at", "expires_at")
            self._waiting_attrs(expr, st, now, now)
            unit = Unit([self._update(job_id, expr, condition)], [_key_str(job_key(job_id))])
            dated = self._dated_unit(unit, st, None)  # no TTL now: its key has none
            dated.epoch = st.tenant
            units.append(dated)
            unit_ids.append(job_id)
        applied = self._tx.apply(units)
        done = [job_id for job_id, ok in zip(unit_ids, applied, strict=True) if ok]
        found = self._batch_get([job_key(i) for i in done])
        read = [found[_key_str(job_key(i))] for i in done if _key_str(job_key(i)) in found]
        moved = [job for job in map(self._readable, read) if job is not None]
        # Every moved job is sent, whether or not its record reads back for the answer.
        self._send_marked([(i, now) for i in done], now)
        return moved

    # -- listing ----------------------------------------------------------------------------------
    @aws_errors(write=False)
    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = check_limit(query.limit)
        after = decode_cursor(query.cursor, query.newest_first) if query.cursor else None
        after_sk = created_sort_key(after[0], after[1]) if after else None

        def partition(index: str, value: str) -> Iterator[tuple[str, str]]:
            expr = Expr()
            hash_key = "tn_pk" if index == GSI_TENANT else "st_pk"
            key = f"{expr.name(hash_key)} = {expr.value(s(value))}"
            if after_sk is not None:
                beyond = "<" if query.newest_first else ">"
                key += f" AND {expr.name('created_sk')} {beyond} {expr.value(s(after_sk))}"
            filters = []
            if index == GSI_TENANT and query.state is not None:
                filters.append(f"{expr.name('state')} = {expr.value(s(query.state.value))}")
            if query.queue is not None:
                filters.append(f"{expr.name('queue')} = {expr.value(s(query.queue))}")
            if query.type is not None:
                filters.append(f"{expr.name('type')} = {expr.value(s(query.type))}")
            page = min(1000, limit + 1)
            found = self._query(
                index,
                expr,
                key,
                " AND ".join(filters) or None,
                ascending=not query.newest_first,
                page=page,
            )
            for item in found:
                yield need_s(item, "created_sk"), job_id_of(item)

        if query.tenant is not None:
            sources = [
                partition(GSI_TENANT, tenant_partition(query.tenant, sh)) for sh in self._shards()
            ]
        else:
            states = [query.state] if query.state is not None else list(JobState)
            sources = [
                partition(GSI_STATE, state_partition(st, sh))
                for st in states
                for sh in self._shards()
            ]
        # Each id once: while the state index lags a change of state, a job's entry may
        # stand under its old state and its new one (`spool jobs` on the store listed a
        # job just cancelled twice). Its two entries share a sort key, so they meet here
        # side by side, and a page's cursor (strictly past it) never splits them.
        merged = heapq.merge(*sources, reverse=query.newest_first)
        ids = (job_id for job_id, _ in itertools.groupby(job_id for _, job_id in merged))
        # The page is filled from the index: an entry whose item is gone since (deleted)
        # or cannot be read (a record in a bad shape, logged and skipped) gives its
        # place to the next, so one damaged item fails neither this page nor the next.
        # So does an item no longer in the state asked for: the indexes are eventually
        # consistent, and for a moment after a cancel or a redrive their copy of the
        # state is the old one; the item, read consistently, was listed as it is now
        # (`cancelled` under state=queued, `queued` in GET /dlq).
        jobs: list[Job] = []
        while len(jobs) < limit:
            chunk = list(itertools.islice(ids, limit - len(jobs)))
            if not chunk:
                break
            found = self._batch_get([job_key(i) for i in chunk])
            for job_id in chunk:
                item = found.get(_key_str(job_key(job_id)))
                job = self._readable(item) if item is not None else None
                if job is not None and query.state in (None, job.state):
                    jobs.append(job)
        cursor = None
        if jobs and len(jobs) >= limit and next(ids, None) is not None:
            cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id, query.newest_first)
        return JobPage(jobs, cursor)

    # -- counts, counters, timing -----------------------------------------------------------------
    @aws_errors(write=False)
    def counts(self) -> dict[tuple[str, JobState], int]:
        """One scan of the state index: every job once, reading only its state and queue."""
        out: dict[tuple[str, JobState], int] = {}
        expr = Expr()
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_STATE,
            "ProjectionExpression": f"{expr.name('st_pk')}, {expr.name('queue')}",
            "ExpressionAttributeNames": expr.names,
        }
        for response in pages(self.ddb.scan, request):
            for item in response.get("Items", []):
                state = JobState(need_s(item, "st_pk").rsplit("#", 1)[0])
                bucket = (need_s(item, "queue"), state)
                out[bucket] = out.get(bucket, 0) + 1
        return out

    @aws_errors(write=False)
    def counters(self) -> dict[CounterKey, int]:
        expr = Expr()
        key = f"{expr.name('pk')} = {expr.value(s(COUNTER_PK))}"
        totals: dict[CounterKey, int] = {}
        for item in self._query(None, expr, key, consistent=True):
            counter = CounterKey(need_s(item, "q"), need_s(item, "t"), need_s(item, "e"))
            totals[counter] = totals.get(counter, 0) + need_n(item, "n")
        return {k: v for k, v in totals.items() if v > 0}

    def queue_totals(self, keep: Sequence[str], busiest: int) -> QueueTotals:
        """Folded from the whole reading: counts() is a scan of the state index (every
        job) and counters() a query of the counter partition (every name ever used), as
        before. DynamoDB has no ORDER BY over a sum: bounding it would take a ranked
        summary item kept by every transaction that bumps a counter; not done."""
        return fold(self.counters(), self.counts(), keep, busiest)

    @aws_errors(write=False)
    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        if queues is not None and not queues:
            return None
        times: list[int] = []
        for kind in (TIMER_WAITING, TIMER_RUNNING):
            for shard in self._shards():
                expr = Expr()
                key = f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(kind, shard)))}"
                filter_ = expr.one_of("queue", [s(q) for q in queues]) if queues else None
                page = 1 if filter_ is None else 100
                first = next(iter(self._query(GSI_TIMER, expr, key, filter_, page=page)), None)
                if first is not None:
                    times.append(need_n(first, "tm_at"))
        return from_micros(min(times)) if times else None

    # -- purge ------------------------------------------------------------------------------------
    @aws_errors(write=True)
    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        before = to_micros(finished_before)

        def shard_items(shard: int) -> Iterator[tuple[int, str]]:
            expr = Expr()
            key = (
                f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_FINISHED, shard)))}"
                f" AND {expr.name('tm_at')} < {expr.value(n(before))}"
            )
            for entry in self._query(GSI_TIMER, expr, key, page=min(1000, max(1, limit))):
                yield need_n(entry, "tm_at"), job_id_of(entry)

        oldest = [
            job_id
            for _, job_id in itertools.islice(
                heapq.merge(*(shard_items(sh) for sh in self._shards())), max(0, limit)
            )
        ]
        return len(
            self._delete(
                oldest,
                lambda expr: (
                    f"{expr.one_of('state', TERMINAL)} AND "
                    f"{expr.name('finished_at')} < {expr.value(n(before))}"
                ),
            )
        )

    @aws_errors(write=True)
    def discard(self, job_ids: Sequence[str], tenant: str | None = None) -> list[str]:
        wanted = list(dict.fromkeys(job_ids))
        # The two attributes compared, not the record: BatchGetItem filters on nothing,
        # and another tenant's ids would bring their payloads and results back.
        found = self._batch_get([job_key(i) for i in wanted], ("tenant", "state"))
        mine = [
            i
            for i in wanted
            if (item := found.get(_key_str(job_key(i)))) is not None
            and (tenant is None or get_s(item, "tenant") == tenant)
            and get_s(item, "state") == JobState.DEAD.value
        ]
        dead = s(JobState.DEAD.value)
        return self._delete(mine, lambda expr: f"{expr.name('state')} = {expr.value(dead)}")

    def _delete(self, job_ids: Sequence[str], condition_of: Callable[[Expr], str]) -> list[str]:
        """Delete jobs (with their idempotency items and blobs) whose record still meets
        the condition, bumping their tenants' invalidation epochs with them (a record
        without a tenant is no tenant's answer); the ids deleted."""
        found = self._batch_get([job_key(i) for i in job_ids])
        units: list[Unit] = []
        unit_ids: list[str] = []
        refs: list[list[str]] = []
        for job_id in job_ids:
            item = found.get(_key_str(job_key(job_id)))
            if item is None:
                continue
            expr = Expr()
            condition = condition_of(expr)
            actions: list[TransactWriteItemTypeDef] = [
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": job_key(job_id),
                        "ConditionExpression": condition,
                        **expr.placeholders(),  # type: ignore[typeddict-item]
                    }
                }
            ]
            keys = [_key_str(job_key(job_id))]
            idem, tenant = get_s(item, "idem"), get_s(item, "tenant")
            if idem is not None and tenant is None:  # a damaged record (buried by a claim)
                log.warning("job %s: no tenant in its record: its idempotency key stays", job_id)
            elif idem is not None and tenant is not None:
                ikey = idem_key(tenant, idem)
                actions.append(
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": ikey,
                            "ConditionExpression": "attribute_not_exists(pk) OR job_id = :id",
                            "ExpressionAttributeValues": {":id": s(job_id)},
                        }
                    }
                )
                keys.append(_key_str(ikey))
            hooks = hook_ids(item)  # its webhook deliveries go with it
            actions.extend(self._outbox.deletes(hooks))
            keys.extend(_key_str(hook_key(h)) for h in hooks)
            units.append(Unit(actions, keys, epoch=tenant))
            unit_ids.append(job_id)
            refs.append([r for r in (get_s(item, "payload_ref"), get_s(item, "result_ref")) if r])
        applied = self._tx.apply(units)
        if self.blobs is not None:
            gone = [r for rs, ok in zip(refs, applied, strict=True) if ok for r in rs]
            if gone:
                self.blobs.delete(gone)
        with self._statics_lock:
            for job_id, ok in zip(unit_ids, applied, strict=True):
                if ok:
                    self._statics.pop(job_id, None)
        return [job_id for job_id, ok in zip(unit_ids, applied, strict=True) if ok]

    def _drop_unreferenced(self, refs: Sequence[tuple[str, str]]) -> None:
        """Delete the S3 objects of (job id, object key) pairs that were written for a
        record write that failed or was refused, unless the job's record names them.

        A write that failed without an answer (a read timeout, a reset connection, past
        botocore's retries) may have been applied, and one refused may have been refused
        because the same write had landed before (a completion the worker held through
        an outage and sends again). Their objects were deleted all the same, and the
        record pointed at nothing: `payload_missing`, the job buried unrun, or a
        succeeded job's `result_missing`. So the records are read back first
        (consistently), and an object stays when its job's record names it; when the
        read fails every object stays, for the bucket's lifecycle rule to sweep."""
        if self.blobs is None or not refs:
            return
        try:
            found = self._batch_get(
                [job_key(job_id) for job_id, _ in refs], ("payload_ref", "result_ref")
            )
        except Exception as exc:
            log.warning(
                "%d S3 objects of a failed write are kept (the lifecycle rule removes them): "
                "could not read back whether their records name them: %s",
                len(refs),
                exc,
            )
            return
        named: set[str] = set()
        for item in found.values():
            named.update(r for r in (get_s(item, "payload_ref"), get_s(item, "result_ref")) if r)
        orphans = [ref for _, ref in refs if ref not in named]
        if orphans:
            self.blobs.delete(orphans)

    # -- delivery: the scheduled release ----------------------------------------------------------
    @aws_errors(write=True)
    def release_due(self, limit: int = 10_000, time_left: Callable[[], float] | None = None) -> int:
        """Send ids for due-soon jobs that have no message on the way; returns how many
        went, the jobs it reaped and sent again included.

        Run by the scheduled function. It first reaps expired leases (whose
        jobs are sent at once), then looks at waiting jobs due within SQS's
        15-minute delay: one with no message planned (it was due too far ahead
        when written) gets one now; one still waiting `lost_after` seconds past
        its planned message is presumed lost and sent again. A duplicate is
        harmless: the second claim finds the job taken and the message is dropped.

        `time_left` (seconds left in the invocation; Lambda's context) bounds the
        run: jobs are marked and sent RELEASE_CHUNK at a time, and no shard is read
        nor chunk begun with less than RELEASE_MARGIN left. A marked job is sent
        within its chunk, so an invocation cut off at its deadline leaves at most one
        chunk marked unsent (each waits `lost_after` to be presumed lost), not every
        job marked so far; what is left is released by the next run.
        """
        if self.dispatch is None:
            return 0

        def out_of_time() -> bool:
            return time_left is not None and time_left() < RELEASE_MARGIN

        now = self._now()
        reaped = self._reap_expired(now)
        horizon = now + MAX_DELAY_SECONDS * MICRO
        lost_before = now - micros_of(self.config.lost_after)
        # (job id, when it is due, msg_at before, msg_at written): a chunk being sent
        chunk: list[tuple[str, int, int | None, int]] = []
        overdue: list[tuple[int, str, int]] = []  # (msg_at, job id, run_at): maybe lost
        # Waiting jobs whose message should be on the queue, delayed or not: a held job's
        # new message is delayed, and so is a job's due within SQS's 15 minutes (the
        # depth counts delayed messages too, so like is compared with like).
        messaged = 0
        marked = unsent = uncertain = 0
        cut_short = False

        def mark(job_id: str, before: int | None, run_at: int) -> bool:
            """Mark (and, a chunk at a time, send) one job; False once no more may be."""
            nonlocal marked, unsent, uncertain, cut_short
            if marked >= limit:
                return False
            if not chunk and out_of_time():
                cut_short = True
                return False
            at = max(run_at, now)
            written = self._mark_sent(job_id, before, at, now)
            if written is not None:
                chunk.append((job_id, at, before, written))
                marked += 1
            if len(chunk) >= RELEASE_CHUNK:
                refused, lost = self._release(chunk, now)
                unsent, uncertain = unsent + refused, uncertain + lost
                chunk.clear()
            return True

        for shard in self._shards():
            if cut_short or marked >= limit:
                break
            if out_of_time():
                cut_short = True
                break
            expr = Expr()
            key = (
                f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_WAITING, shard)))}"
                f" AND {expr.name('tm_at')} <= {expr.value(n(horizon))}"
            )
            for item in self._query(GSI_TIMER, expr, key):
                run_at = need_n(item, "tm_at")  # a waiting job's timer is its run_at
                planned = get_n(item, "msg_at")
                if planned is None:
                    if not mark(job_id_of(item), None, run_at):
                        break
                    continue
                messaged += 1
                if run_at <= lost_before and planned <= lost_before:
                    overdue.append((planned, job_id_of(item), run_at))
        if not cut_short:
            # Only a full reading can say how many are lost (_presumed_lost).
            overdue.sort()
            for planned, job_id, run_at in overdue[: self._presumed_lost(len(overdue), messaged)]:
                if not mark(job_id, planned, run_at):
                    break
        if chunk:
            refused, lost = self._release(chunk, now)
            unsent, uncertain = unsent + refused, uncertain + lost
        # The reaped jobs sent again count as released: a run that moved only those
        # reported 0 (the scheduled function's {"released": 0}, no poller log line).
        released = marked - unsent - uncertain + reaped.sent
        if unsent:
            log.error(
                "%d of %d job ids could not be sent to SQS (see the warning before); "
                "the scheduled function tries again on its next run",
                unsent,
                marked,
            )
        if uncertain:
            log.warning(
                "%d of %d job ids went to SQS in requests whose answers were lost: they "
                "are most likely on the queue (not counted as released); any that are "
                "not are sent again once lost_after has passed",
                uncertain,
                marked,
            )
        if cut_short:
            log.warning(
                "the scheduled release stopped as the invocation's deadline neared, "
                "after sending %d job ids; the next run releases the rest",
                released,
            )
        return released

    def _presumed_lost(self, overdue: int, messaged: int) -> int:
        """How many of the jobs still waiting long after their message to send again.

        A job may wait that long because its message was lost, or because the queue
        is behind: re-sending every one of a backlog ten minutes old doubled it, and
        again ten minutes later. The queue holds a message for each job that still
        has one (and maybe a few stale duplicates), so only the shortfall, messages
        fewer than jobs that should have them, is presumed lost, the longest
        waiting first. When SQS cannot say, all of them are.

        Like is compared with like: the queue's in-flight messages include one for
        each running job (received, and kept hidden while it runs), which is no
        waiting job's message, so the running jobs (the reap has run) are taken off
        them; counted as the waiting jobs', R running jobs hid up to R lost messages
        for as long as the load lasted. The two counts are read a moment apart, so a
        job claimed or finished in between may make one overdue job sent twice."""
        if not overdue:
            return 0
        depth = self.dispatch.depth() if self.dispatch is not None else None
        if depth is None:
            return overdue
        waiting = depth.for_waiting(self._count_running())
        return max(0, min(overdue, messaged - waiting))

    def _count_running(self) -> int:
        """Jobs holding a lease: the timer index's running partitions, counted (a
        Query with Select=COUNT, which returns no items)."""
        return sum(
            counted(self.ddb.query, request)
            for request in self._partition_counts(
                GSI_TIMER, "tm_pk", lambda shard: timer_partition(TIMER_RUNNING, shard)
            )
        )

    def _partition_counts(
        self, index: str, key: str, partition: Callable[[int], str]
    ) -> Iterator[dict[str, Any]]:
        """One Select=COUNT query a shard of an index's partition (`counted` runs
        each): the entries are all the answer needs, so no item is sent back."""
        for shard in self._shards():
            expr = Expr()
            condition = f"{expr.name(key)} = {expr.value(s(partition(shard)))}"
            yield {
                "TableName": self.table,
                "IndexName": index,
                "KeyConditionExpression": condition,
                **expr.placeholders(),
            }

    def _send_marked(self, items: Sequence[tuple[str, int]], now: int) -> int:
        """Send ids of jobs due at the given times whose write just now set their msg_at
        to `_planned_message(run_at, now)` (add, retry, reap, redrive).

        A send known to have failed takes that mark back, as `_release` does, so the
        next release_due (a minute) sends the job, instead of presuming its message
        lost `lost_after` (ten minutes) later. A send whose answer was lost keeps it:
        its messages are most likely on the queue, and the lost-message sweep sends
        the job again only when the queue holds fewer messages than jobs awaiting one
        (sending it at the next release made a sixth copy of a job botocore had
        already sent five times). The mark goes only if it is still the
        one written here (a claim or a release since keeps theirs). Best effort: the
        jobs are stored either way, so nothing here raises; once one mark cannot be
        taken back (DynamoDB unreachable too) the rest are left for lost_after.
        Returns how many ids went to the queue (a lost answer's not counted)."""
        unsent = self._send(list(items), now)
        sent = len({job_id for job_id, _ in items}) - len(set(unsent.all()))
        failed = set(unsent.refused)
        if not failed:
            return sent
        for job_id, run_at in items:
            planned = self._planned_message(run_at, now)
            if job_id not in failed or planned is None:
                continue
            try:
                self._unmark_sent(job_id, planned, None)
            except Exception as exc:
                log.warning(
                    "could not take back the message marks of %d unsent jobs (%s): the "
                    "release sends them once lost_after has passed",
                    len(failed),
                    type(exc).__name__,
                )
                return sent
        return sent

    def _release(
        self, to_send: list[tuple[str, int, int | None, int]], now: int
    ) -> tuple[int, int]:
        """Send what release_due marked; a mark whose send failed is taken back, so the
        next run tries again instead of waiting `lost_after` (one whose answer was lost
        stays, as in `_send_marked`). Returns how many failed, and how many went in a
        request whose answer was lost."""
        unsent = self._send([(job_id, at) for job_id, at, _, _ in to_send], now)
        failed = set(unsent.refused)
        for job_id, _, before, written in to_send:
            if job_id in failed:
                self._unmark_sent(job_id, written, before)
        return len(failed), len(set(unsent.uncertain))

    def _unmark_sent(self, job_id: str, planned: int, before: int | None) -> None:
        """Put msg_at back as it was, unless something else has changed it since."""
        expr = Expr()
        condition = f"{expr.name('msg_at')} = {expr.value(n(planned))}"
        if before is None:
            expr.remove("msg_at")
        else:
            expr.set("msg_at", n(before))
        with contextlib.suppress(ClientError):
            self._update_if(job_id, expr, condition)

    def _update_if(self, job_id: str, expr: Expr, condition: str) -> bool:
        """One conditional write to a job; False when its condition no longer holds."""
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=job_key(job_id),
                UpdateExpression=expr.update_expression(),
                ConditionExpression=condition,
                **expr.placeholders(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _mark_sent(self, job_id: str, previous: int | None, run_at: int, now: int) -> int | None:
        """Record the message about to be sent (its msg_at, returned), unless another
        release got there first (None)."""
        planned = self._planned_message(run_at, now)
        if planned is None:
            return None
        expr = Expr()
        condition = expr.one_of("state", WAITING) + " AND "
        if previous is None:
            condition += f"attribute_not_exists({expr.name('msg_at')})"
        else:
            condition += f"{expr.name('msg_at')} = {expr.value(n(previous))}"
        expr.set("msg_at", n(planned))
        return planned if self._update_if(job_id, expr, condition) else None

    # -- attempt history, due work, workers ------------------------------------------------------
    @aws_errors(write=False)
    def attempts(self, job_id: str, tenant: str | None = None) -> list[Attempt] | None:
        item = self._owned_item(job_id, tenant, ("pk", "attempt_log"))
        if item is None:
            return None
        try:
            slots = item.get("attempt_log", {}).get("M", {})
            entries = [json.loads(v["S"]) for v in slots.values() if "S" in v]
            entries.sort(key=lambda e: int(e.get("q", 0)))
            return history.decode_all(entries, self.history_limit)
        except (*BAD_SHAPE, RecursionError) as exc:  # a log edited by hand: 500 internal_error
            raise stored_rows.damaged(job_id, exc) from exc

    # -- the dashboard's reads ---------------------------------------------------------------------
    def _tenant_items(self, tenant: str) -> Iterator[Item]:
        """The tenant index's entries of one tenant (state, queue, type; no payloads).

        DynamoDB keeps no per-tenant counts, so the dashboard's counts read these:
        a query per shard, linear in the tenant's jobs (docs/dashboard.md)."""
        for shard in self._shards():
            expr = Expr()
            key = f"{expr.name('tn_pk')} = {expr.value(s(tenant_partition(tenant, shard)))}"
            yield from self._query(GSI_TENANT, expr, key, page=1000)

    @aws_errors(write=False)
    def state_counts(self, tenant: str | None = None) -> dict[tuple[str, JobState], int]:
        if tenant is None:
            return self.counts()
        out: dict[tuple[str, JobState], int] = {}
        for item in self._tenant_items(tenant):
            try:
                bucket = (need_s(item, "queue"), JobState(need_s(item, "state")))
            except BAD_SHAPE as exc:  # a damaged record: not counted, as listings skip it
                log.warning("job %s: its record cannot be read: %s", _item_id(item), _why(exc))
                continue
            out[bucket] = out.get(bucket, 0) + 1
        return out

    def _check_backlog(self, cap: Backlog, jobs: Sequence[NewJob]) -> None:
        """Raise BacklogFull when these jobs (their keys not yet stored) do not fit the
        cap. Counted from the waiting index, then written, with no transaction spanning
        both (the index is eventually consistent, and a count is no condition a write
        can carry): the cap holds per process here, not across processes."""
        held = sum(
            1
            for new in jobs
            if new.idempotency_key is not None
            and self.get_by_key(new.tenant, new.idempotency_key) is not None
        )
        refused = cap.refuses(self.waiting_count(cap.tenant), len(jobs) - held)
        if refused is not None:
            raise refused

    @aws_errors(write=False)
    def waiting_count(self, tenant: str) -> int:
        """The tenant's waiting index counted (Select=COUNT, a query per shard): its
        entries are the tenant's waiting jobs only, where state_counts reads an entry for
        every job the tenant has, finished ones too. A table made before that index
        (fair turns deploy it) is counted the old way."""
        total = 0
        for request in self._partition_counts(
            GSI_TENANT_DUE, "tn_pk", lambda shard: tenant_partition(tenant, shard)
        ):
            try:
                total += counted(self.ddb.query, request)
            except ClientError as exc:
                message = str(exc.response.get("Error", {}).get("Message", ""))
                if "index" not in message.lower():
                    raise
                return waiting_in(self.state_counts(tenant))
        return total

    @aws_errors(write=False)
    def throughput(self, since: datetime, tenant: str | None = None) -> list[MinuteTally]:
        """One query per minute partition of the tallies the finish and reap wrote."""
        first = to_micros(since) // MINUTE_MICROS * MINUTE_MICROS
        last = self._now() // MINUTE_MICROS * MINUTE_MICROS
        totals: dict[tuple[int, str], list[int]] = {}
        for minute in range(first, last + 1, MINUTE_MICROS):
            expr = Expr()
            key = f"{expr.name('pk')} = {expr.value(s(MINUTE_PREFIX + str(minute)))}"
            for item in self._query(None, expr, key, consistent=True):
                if tenant is not None and need_s(item, "t") != tenant:
                    continue
                tally = totals.setdefault((minute, need_s(item, "q")), [0, 0])
                tally[0 if need_s(item, "e") == "succeeded" else 1] += need_n(item, "n")
        return [
            MinuteTally(queue, from_micros(minute), ok, bad)
            for (minute, queue), (ok, bad) in sorted(totals.items())
            if ok or bad
        ]

    @aws_errors(write=False)
    def get_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        held = self.ddb.get_item(
            TableName=self.table, Key=idem_key(tenant, idempotency_key), ConsistentRead=True
        ).get("Item")
        if held is None:
            return None
        job = self.get(need_s(held, "job_id"), tenant)
        if job is None or job.idempotency_key != idempotency_key:
            return None
        return job

    def _tenant_oldest_due(self, tenant: str, queues: Sequence[str] | None) -> dict[str, datetime]:
        waiting = [
            job_id_of(item)
            for item in self._tenant_items(tenant)
            if get_s(item, "state") in (JobState.QUEUED.value, JobState.RETRYING.value)
            and (queues is None or get_s(item, "queue") in queues)
        ]
        now = self._now()
        oldest: dict[str, int] = {}
        # Only what the answer needs: no payload read (nor a damaged one decoded).
        found = self._batch_get([job_key(i) for i in waiting], ("queue", "state", "run_at"))
        for item in found.values():
            queue, state = get_s(item, "queue"), get_s(item, "state")
            try:
                run_at = get_n(item, "run_at")
            except BAD_SHAPE:
                run_at = None
            if queue is None or run_at is None or state not in WAITING_VALUES:
                continue
            if run_at <= now and (queue not in oldest or run_at < oldest[queue]):
                oldest[queue] = run_at
        return {queue: from_micros(at) for queue, at in oldest.items()}

    @aws_errors(write=False)
    def oldest_due(
        self, queues: Sequence[str] | None = None, tenant: str | None = None
    ) -> dict[str, datetime]:
        """Per shard, the due part of the timer index's waiting partition, oldest first:
        the first entry seen for a queue is its oldest. With `queues`, a shard is left as
        soon as each of them has been seen."""
        if queues is not None and not queues:
            return {}
        if tenant is not None:
            return self._tenant_oldest_due(tenant, queues)
        now = self._now()
        oldest: dict[str, int] = {}
        for shard in self._shards():
            expr = Expr()
            key = (
                f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_WAITING, shard)))}"
                f" AND {expr.name('tm_at')} <= {expr.value(n(now))}"
            )
            filter_ = expr.one_of("queue", [s(q) for q in queues]) if queues else None
            seen: set[str] = set()
            for item in self._query(GSI_TIMER, expr, key, filter_, page=1000):
                queue = need_s(item, "queue")
                at = need_n(item, "tm_at")
                seen.add(queue)
                if queue not in oldest or at < oldest[queue]:
                    oldest[queue] = at
                if queues is not None and len(seen) == len(set(queues)):
                    break
        return {queue: from_micros(at) for queue, at in oldest.items()}

    @aws_errors(write=True)
    def take_tokens(self, key: str, rate: float, burst: int, cost: int = 1) -> float:
        return take_tokens(self, key, rate, burst, cost)  # one item per bucket: dynamodb_limits.py

    @aws_errors(write=True)
    def beat(self, worker: str, queues: Sequence[str] | None, started_at: datetime) -> None:
        now = self._now()
        item: Item = {
            **worker_key(worker),
            "started_at": n(to_micros(started_at)),
            "last_beat": n(now),
            "expires_at": n(now // MICRO + history.BEAT_RETENTION_SECONDS),
        }
        text = history.queues_text(queues)
        if text is not None:
            item["queues"] = s(text)
        # An upsert by UpdateItem: it sets every attribute of the beat and removes
        # queues when none are given, so it is a PutItem's effect (the worker role may
        # do both; PutItem is there for webhook deliveries, infra/generate.py).
        key = worker_key(worker)
        fields = {k: v for k, v in item.items() if k not in key}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        self.ddb.update_item(
            TableName=self.table,
            Key=key,
            UpdateExpression="SET "
            + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
            + ("" if text is not None else " REMOVE queues"),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    @aws_errors(write=True)
    def forget_worker(self, worker: str) -> None:
        # Its last beat set to 0 rather than the item deleted: the worker function's
        # role may update the table but not delete from it (infra/generate.py). The
        # item expires with the others (expires_at); a worker not beating is skipped.
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=worker_key(worker),
                UpdateExpression="SET #b = :zero",
                ConditionExpression="attribute_exists(#b)",  # never beat: nothing to forget
                ExpressionAttributeNames={"#b": "last_beat"},
                ExpressionAttributeValues={":zero": n(0)},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    @aws_errors(write=False)
    def live_workers(self, within: float) -> list[WorkerBeat]:
        since = self._now() - micros_of(within)
        expr = Expr()
        key = f"{expr.name('pk')} = {expr.value(s(WORKER_PK))}"
        live = [
            WorkerBeat(
                need_s(item, "sk"),
                history.queues_of(get_s(item, "queues")),
                from_micros(need_n(item, "started_at")),
                from_micros(need_n(item, "last_beat")),
            )
            for item in self._query(None, expr, key, consistent=True)
            if need_n(item, "last_beat") >= since
        ]
        return sorted(live, key=lambda b: b.worker)

    def probe(self) -> None:
        """One consistent read that needs the endpoint and the table: `spool serve`,
        `spool worker` and the poller call it at start (as Redis and Postgres check
        when opened) and exit 1 with the store's message, instead of running and
        answering 503 from their first second. Not on Lambda: a cold start does not
        pay a round trip for it."""
        self.cache_epoch("")  # any consistent read of the table does

    @aws_errors(write=False)
    def cache_epoch(self, tenant: str) -> int:
        """The tenant's epoch (`n` of its epoch item); negative once the item's birth
        mark is not the one this process first saw. A table deleted and made again
        (create=1 by another process) read a never-touched tenant's epoch as 0 again,
        what the caches held: they answered for jobs the table no longer had, for their
        whole TTL (found by a chaos run, s49). So the first read of a tenant's epoch
        that finds no mark on its item writes one (`born`, with `n` 0 when the item is
        new): once per tenant per table, never again while the table lives; a bump
        (ADD n) keeps it. A read finds it in the same GetItem as before."""
        key = epoch_key(tenant)
        item = self.ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        born = get_s(item, "born") if item is not None else None
        if item is None or born is None:
            item = self.ddb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression=(
                    "SET born = if_not_exists(born, :born), n = if_not_exists(n, :zero)"
                ),
                ExpressionAttributeValues={":born": s(secrets.token_hex(8)), ":zero": n(0)},
                ReturnValues="ALL_NEW",
            )["Attributes"]
            born = get_s(item, "born") or ""
        epoch = get_n(item, "n") or 0
        with self._births_lock:
            seen = self._births.setdefault(tenant, born)
            if seen != born:
                self._births[tenant] = born
                self._rebirths[tenant] = self._rebirths.get(tenant, 0) + 1
            emptied = self._rebirths.get(tenant, 0)
        return epoch_after_emptyings(epoch, emptied)

    # -- the webhook outbox (see base.py; dynamodb_webhooks.py) ------------------------------------
    @aws_errors(write=True)
    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[Delivery]:
        return self._outbox.claim(limit, lease_seconds, self._now())

    @aws_errors(write=True)
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
        at = None if retry_at is None else to_micros(retry_at)
        return self._outbox.finish(delivery_id, lease_token, outcome, at, error, self._now())

    @aws_errors(write=False)
    def webhooks(self, job_id: str, tenant: str | None = None) -> list[Delivery]:
        item = self._owned_item(job_id, tenant, ("pk", "hooks"))
        if item is None:
            return []
        ids = hook_ids(item)
        return self._outbox.for_ids(self._batch_get([hook_key(i) for i in ids])) if ids else []

    @aws_errors(write=False)
    def webhook_counts(self) -> dict[str, int]:
        return self._outbox.counts()

    def hurry(self, seconds: float | None) -> None:
        """This process is stopping (Worker.stop): no call is tried again after a try
        that failed (None: as usual again). A try in flight keeps its read timeout
        (20 s): botocore cannot cut it short. `seconds` is for stores that can."""
        self._hurry.on = seconds is not None

    def close(self) -> None:
        if self._owns_clients:
            for client in (
                self.ddb,
                getattr(self.dispatch, "client", None),
                getattr(self.blobs, "client", None),
            ):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()


def state_event(state: JobState) -> str:
    """The counter a reap bumps beside 'failed'."""
    return "dead" if state is JobState.DEAD else "retried"


def from_url(url: str, clock: Clock | None = None) -> DynamoStore:
    from botocore.exceptions import BotoCoreError, NoCredentialsError, NoRegionError

    config = DynamoConfig.from_url(url)
    if config.queue is None and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        # A polling `spool worker` may go without; on Lambda the queue is what runs a
        # job (run_jobs is its trigger), so without it every job is stored, answered
        # 201 and never run, and nothing says why.
        raise ValueError(
            "on Lambda a dynamodb:// store needs ?queue=<the jobs queue's URL>: "
            "run_jobs only runs the jobs that queue delivers"
        )
    try:
        return DynamoStore(config, clock)
    except NoRegionError:
        # open_store turns this into a ConfigError naming SPOOL_STORE_URL.
        raise ValueError(
            "no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION), or add ?region=... to the URL"
        ) from None
    except NoCredentialsError:
        # Met by the first request (create=1 makes one here): said as what to set, not
        # as "unexpected error: NoCredentialsError".
        raise ValueError(NO_CREDENTIALS) from None
    except BotoCoreError as exc:
        # create=1's first requests, with nothing answering at the endpoint (moto_server
        # not started): said as the same URL without create=1 says it at its first
        # request, not as "unexpected error: EndpointConnectionError".
        raise StoreUnavailable(f"AWS is unreachable: {type(exc).__name__}") from exc


__all__ = [
    "DynamoConfig",
    "DynamoStore",
    "create_resources",
    "from_url",
    "make_clients",
]
