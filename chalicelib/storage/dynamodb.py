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
the new record, so claiming a job costs one request and one write unit.

Delivery is kept beside the store (SqsDispatch): add, retry, reap and redrive
send the job's id, with DelaySeconds up to 15 minutes; `release_due`, run by
the scheduled function, sends ids of jobs due later than that, and re-sends
those whose message was lost.

Its neighbours: dynamodb_schema.py (the table's layout and item codec),
dynamodb_txn.py (transactions), dynamodb_aws.py (URL, clients, resources, error
mapping: boto3 is imported there, and only when a dynamodb:// URL is chosen).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.clock import Clock, SystemClock
from chalicelib.errors import (
    InvalidTransition,
    JobNotFound,
    PayloadTooLarge,
    StoreUnavailable,
)
from chalicelib.ids import new_lease_token
from chalicelib.models import (
    AddResult,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    NewJob,
    queued_job,
)
from chalicelib.storage.base import (
    LEASE_EXPIRED_ERROR,
    check_limit,
    completion_events,
    decode_cursor,
    encode_cursor,
    from_micros,
    to_micros,
)
from chalicelib.storage.dynamodb_aws import (
    INLINE_LIMIT,
    RECORD_LIMIT,
    DynamoConfig,
    aws_errors,
    create_resources,
    make_clients,
)
from chalicelib.storage.dynamodb_schema import (
    COUNTER_PK,
    GSI_DUE,
    GSI_STATE,
    GSI_TENANT,
    GSI_TIMER,
    STATIC_ATTRS,
    TIMER_FINISHED,
    TIMER_RUNNING,
    TIMER_WAITING,
    Expr,
    created_sort_key,
    due_partition,
    due_sort_key,
    dumps,
    get_n,
    get_s,
    idem_key,
    item_to_job,
    job_id_of,
    job_key,
    n,
    need_n,
    need_s,
    s,
    shard_of,
    state_partition,
    tenant_partition,
    timer_partition,
)
from chalicelib.storage.dynamodb_txn import TRANSACTION_ATTEMPTS, Cancelled, Transactions, Unit
from chalicelib.storage.s3_blobs import S3Blobs
from chalicelib.storage.sqs_dispatch import MAX_DELAY_SECONDS, SqsDispatch, delay_for

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

log = logging.getLogger("spool.dynamodb")

MICRO = 1_000_000
BATCH_GET = 100  # BatchGetItem limit
MAX_ERROR_CHARS = 32 * 1024  # a record must fit in 400 KB, whatever a handler raised
STATIC_CACHE = 10_000
WAITING = [s(JobState.QUEUED.value), s(JobState.RETRYING.value)]
TERMINAL = [s(JobState.SUCCEEDED.value), s(JobState.DEAD.value), s(JobState.CANCELLED.value)]


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
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.config = config
        self.table = config.table
        self._owns_clients = ddb is None
        if ddb is None:
            ddb, sqs, s3 = make_clients(config)
        self.ddb: DynamoDBClient = ddb
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

    def _send(self, items: list[tuple[str, int]], now: int) -> None:
        """Send ids of jobs due at the given times (delays over 15 minutes wait for release)."""
        if self.dispatch is None or not items:
            return
        batch = [
            (job_id, (run_at - now) / MICRO)
            for job_id, run_at in items
            if (run_at - now) / MICRO <= MAX_DELAY_SECONDS
        ]
        if batch:
            self.dispatch.send(batch)

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
    ) -> Iterator[Item]:
        """Every matching item, page by page, as late as the caller asks for them."""
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
        while True:
            response = self.ddb.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _load(self, item: Mapping[str, AttributeValueTypeDef]) -> Job:
        """Item to Job, following S3 keys for a payload or result kept outside the record."""
        payload_ref = get_s(item, "payload_ref")
        if payload_ref is not None and self.blobs is not None:
            payload = json.loads(self.blobs.get(payload_ref))
        else:
            payload = json.loads(get_s(item, "payload") or "{}")
        result_ref = get_s(item, "result_ref")
        if result_ref is not None and self.blobs is not None:
            result = json.loads(self.blobs.get(result_ref))
        else:
            raw = get_s(item, "result")
            result = None if raw is None else json.loads(raw)
        job = item_to_job(item, payload, result)
        self._remember(_Static.of(item))
        return job

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
                static = _Static.of(item)
                self._remember(static)
                out[static.id] = static
        return out

    # -- add --------------------------------------------------------------------------------------
    @aws_errors
    def add(self, jobs: Sequence[NewJob]) -> list[AddResult]:
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
        payloads = {i: dumps(jobs[i].payload) for i in fresh}
        too_big = [i for i in fresh if len(payloads[i]) > INLINE_LIMIT and self.blobs is None]
        if too_big:
            raise PayloadTooLarge(
                f"payload over {INLINE_LIMIT} bytes and no bucket is configured",
                {"index": too_big[0]},
            )
        offloaded: dict[int, str] = {}
        existing: dict[int, Job] = {}
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
            if self.blobs is not None and offloaded:
                self.blobs.delete(list(offloaded.values()))
            raise
        if self.blobs is not None:
            unused = [ref for i, ref in offloaded.items() if i in existing]
            if unused:
                self.blobs.delete(unused)
        results: list[AddResult] = []
        created: dict[int, Job] = {}
        for i, new in enumerate(jobs):
            if i in duplicate_of:
                first = duplicate_of[i]
                job = existing.get(first) or created[first]
                results.append(AddResult(job, False))
            elif i in existing:
                results.append(AddResult(existing[i], False))
            else:
                job = self._new_job(new, now, 0 if i in offloaded else len(payloads[i]))
                created[i] = job
                results.append(AddResult(job, True))
        self._send([(j.id, to_micros(j.run_at)) for j in created.values()], now)
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
            idem_item: Item = {
                **ikey,
                "job_id": s(new.id),
                # A key is remembered for the retention period after the job is due.
                "expires_at": n(self._expires(max(run_at, now))),
            }
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
        existing: dict[int, Job],
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
                existing[i] = self._load(item)
                any_live = True
        return any_live

    # -- get --------------------------------------------------------------------------------------
    @aws_errors
    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        item = self.ddb.get_item(
            TableName=self.table, Key=job_key(job_id), ConsistentRead=True
        ).get("Item")
        if item is None or (tenant is not None and get_s(item, "tenant") != tenant):
            return None
        return self._load(item)

    # -- claim ------------------------------------------------------------------------------------
    @aws_errors
    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Job]:
        now = self._now()
        if self.config.reap_every <= 0 or (
            self._last_reap is None or now - self._last_reap >= self.config.reap_every * MICRO
        ):
            self.reap_expired(now)
        if limit <= 0 or (queues is not None and not queues) or (ids is not None and not ids):
            return []
        expires = now + int(lease_seconds * MICRO)
        claimed: list[Job] = []
        candidates: Iterator[str]
        if ids is None:
            candidates = self._due_candidates(now, queues, limit)
        elif len(set(ids)) <= limit:
            candidates = iter(dict.fromkeys(ids))
        else:
            candidates = iter(self._best_of(list(dict.fromkeys(ids)), now, queues))
        for job_id in candidates:
            job = self._claim_one(job_id, now, expires, queues, by_id=ids is not None)
            if job is not None:
                claimed.append(job)
                if len(claimed) >= limit:
                    break
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.created_at, j.id))
        return claimed

    def _best_of(self, ids: list[str], now: int, queues: Sequence[str] | None) -> list[str]:
        """More ids than the limit: order the due ones the way claim must take them."""
        found = self._batch_get([job_key(i) for i in ids], ("state", "run_at", *STATIC_ATTRS))
        ranked: list[tuple[str, str]] = []
        for item in found.values():
            if get_s(item, "state") not in (JobState.QUEUED.value, JobState.RETRYING.value):
                continue
            if need_n(item, "run_at") > now:
                continue
            st = _Static.of(item)
            if queues is not None and st.queue not in queues:
                continue
            ranked.append((self._due_sk(st, need_n(item, "run_at")), st.id))
        return [job_id for _, job_id in sorted(ranked)]

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
        self, job_id: str, now: int, expires: int, queues: Sequence[str] | None, by_id: bool
    ) -> Job | None:
        shard = self._shard(job_id)
        for _ in range(2):
            expr = Expr()
            condition = (
                f"{expr.one_of('state', WAITING)} AND {expr.name('run_at')} <= {expr.value(n(now))}"
            )
            if queues is not None:
                condition += " AND " + expr.one_of("queue", [s(q) for q in queues])
            expr.set("state", s(JobState.RUNNING.value))
            expr.set_raw(f"{expr.name('attempts')} = {expr.name('attempts')} + {expr.value(n(1))}")
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            expr.set("lease_token", s(new_lease_token()))
            expr.set("lease_exp", n(expires))
            expr.set("started_at", n(now))
            expr.set("updated_at", n(now))
            expr.set("tm_pk", s(timer_partition(TIMER_RUNNING, shard)))
            expr.set("tm_at", n(expires))
            expr.set("st_pk", s(state_partition(JobState.RUNNING, shard)))
            expr.remove("due_pk", "due_sk", "msg_at")
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
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                old: Item | None = exc.response.get("Item")  # type: ignore[assignment]
                if old is None:
                    return None
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
            return self._load(response["Attributes"])
        return None

    # -- reaping ----------------------------------------------------------------------------------
    @aws_errors
    def reap_expired(self, now: int | None = None) -> int:
        """Expired leases back to retrying (or dead after the last attempt); returns how many."""
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
            return 0
        found = self._batch_get([job_key(job_id_of(e)) for e in expired])
        return self._reap(list(found.values()), now)

    def _reap(self, items: Sequence[Mapping[str, AttributeValueTypeDef]], now: int) -> int:
        units: list[Unit] = []
        unit_ids: list[str] = []
        retried: set[str] = set()
        for item in items:
            token = get_s(item, "lease_token")
            if token is None:
                continue
            st = _Static.of(item)
            dead = need_n(item, "attempts") >= need_n(item, "max_attempts")
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
            expr.remove("lease_token", "lease_exp")
            if dead:
                self._finished_attrs(expr, st.id, now)
            else:
                self._waiting_attrs(expr, st, now, now)
                retried.add(st.id)
            unit_ids.append(st.id)
            units.append(
                Unit(
                    [self._update(st.id, expr, condition)],
                    [_key_str(job_key(st.id))],
                    [(st.queue, st.type, "failed", 1), (st.queue, st.type, state_event(state), 1)],
                )
            )
        applied = self._tx.apply(units)
        done = [job_id for job_id, ok in zip(unit_ids, applied, strict=True) if ok]
        self._send([(i, now) for i in done if i in retried], now)
        return len(done)

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
    @aws_errors
    def finish(self, completions: Sequence[Completion]) -> list[bool]:
        if not completions:
            return []
        now = self._now()
        statics = self._statics_for([c.job_id for c in completions])
        units: list[Unit] = []
        positions: list[int] = []
        written: dict[int, str] = {}
        retries: dict[int, int] = {}
        for index, c in enumerate(completions):
            st = statics.get(c.job_id)
            if st is None:
                continue
            state, result_json, error = c.state, None, c.error
            # What the record can still hold beside its payload and an error message.
            room = RECORD_LIMIT - st.payload_bytes - MAX_ERROR_CHARS
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
            expr.remove("lease_token", "lease_exp")
            if error is None:
                expr.remove("last_error")
            else:
                expr.set("last_error", s(error[:MAX_ERROR_CHARS]))
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
            units.append(
                Unit(
                    [self._update(st.id, expr, condition)],
                    [_key_str(job_key(st.id))],
                    [(st.queue, st.type, e, 1) for e in completion_events(state)],
                    size=size,
                )
            )
            positions.append(index)
        applied = [False] * len(completions)
        try:
            outcome = self._tx.apply(units)
        except BaseException:
            if self.blobs is not None and written:
                self.blobs.delete(list(written.values()))
            raise
        for index, ok in zip(positions, outcome, strict=True):
            applied[index] = ok
        if self.blobs is not None:
            refused = [ref for index, ref in written.items() if not applied[index]]
            if refused:
                self.blobs.delete(refused)
        self._send([(completions[i].job_id, at) for i, at in retries.items() if applied[i]], now)
        return applied

    @aws_errors
    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        now = self._now()
        expires = now + int(lease_seconds * MICRO)
        expr = Expr()
        condition = (
            f"{expr.name('state')} = {expr.value(s(JobState.RUNNING.value))} AND "
            f"{expr.name('lease_token')} = {expr.value(s(lease_token))} AND "
            f"{expr.name('lease_exp')} > {expr.value(n(now))}"
        )
        expr.set("lease_exp", n(expires)).set("tm_at", n(expires)).set("updated_at", n(now))
        expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
        return self._update_if(job_id, expr, condition)

    # -- cancel and redrive -----------------------------------------------------------------------
    @aws_errors
    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        for _ in range(TRANSACTION_ATTEMPTS):
            item = self.ddb.get_item(
                TableName=self.table, Key=job_key(job_id), ConsistentRead=True
            ).get("Item")
            if item is None or (tenant is not None and get_s(item, "tenant") != tenant):
                raise JobNotFound("job not found", {"id": job_id})
            state = need_s(item, "state")
            if state not in (JobState.QUEUED.value, JobState.RETRYING.value):
                raise InvalidTransition(f"a {state} job cannot be cancelled", {"state": state})
            now = self._now()
            st = _Static.of(item)
            expr = Expr()
            # Unchanged since read (ver), and so still waiting.
            condition = (
                f"{expr.name('ver')} = {expr.value(n(need_n(item, 'ver')))} AND "
                + expr.one_of("state", WAITING)
            )
            expr.set("state", s(JobState.CANCELLED.value))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(JobState.CANCELLED, self._shard(job_id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            self._finished_attrs(expr, job_id, now)
            unit = Unit(
                [self._update(job_id, expr, condition)],
                [_key_str(job_key(job_id))],
                [(st.queue, st.type, "cancelled", 1)],
            )
            if self._tx.apply([unit])[0]:
                return self._load(item).model_copy(
                    update={
                        "state": JobState.CANCELLED,
                        "updated_at": from_micros(now),
                        "finished_at": from_micros(now),
                    }
                )
        raise StoreUnavailable("the job kept changing while being cancelled; try again")

    @aws_errors
    def redrive(self, job_ids: Sequence[str], tenant: str | None = None) -> list[Job]:
        if not job_ids:
            return []
        now = self._now()
        statics = self._statics_for(list(dict.fromkeys(job_ids)))
        moved: list[Job] = []
        for job_id in job_ids:
            st = statics.get(job_id)
            if st is None or (tenant is not None and st.tenant != tenant):
                continue
            expr = Expr()
            condition = f"{expr.name('state')} = {expr.value(s(JobState.DEAD.value))}"
            expr.set("state", s(JobState.QUEUED.value))
            expr.set("attempts", n(0))
            expr.set("updated_at", n(now))
            expr.set("st_pk", s(state_partition(JobState.QUEUED, self._shard(job_id))))
            expr.set_raw(f"{expr.name('ver')} = {expr.name('ver')} + {expr.value(n(1))}")
            expr.remove("result", "result_ref", "finished_at", "expires_at")
            self._waiting_attrs(expr, st, now, now)
            try:
                response = self.ddb.update_item(
                    TableName=self.table,
                    Key=job_key(job_id),
                    UpdateExpression=expr.update_expression(),
                    ConditionExpression=condition,
                    ReturnValues="ALL_NEW",
                    **expr.placeholders(),
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    continue
                raise
            moved.append(self._load(response["Attributes"]))
        self._send([(j.id, now) for j in moved], now)
        return moved

    # -- listing ----------------------------------------------------------------------------------
    @aws_errors
    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = check_limit(query.limit)
        after = decode_cursor(query.cursor) if query.cursor else None
        after_sk = created_sort_key(after[0], after[1]) if after else None

        def partition(index: str, value: str) -> Iterator[tuple[str, str]]:
            expr = Expr()
            hash_key = "tn_pk" if index == GSI_TENANT else "st_pk"
            key = f"{expr.name(hash_key)} = {expr.value(s(value))}"
            if after_sk is not None:
                key += f" AND {expr.name('created_sk')} > {expr.value(s(after_sk))}"
            filters = []
            if index == GSI_TENANT and query.state is not None:
                filters.append(f"{expr.name('state')} = {expr.value(s(query.state.value))}")
            if query.queue is not None:
                filters.append(f"{expr.name('queue')} = {expr.value(s(query.queue))}")
            if query.type is not None:
                filters.append(f"{expr.name('type')} = {expr.value(s(query.type))}")
            page = min(1000, limit + 1)
            for item in self._query(index, expr, key, " AND ".join(filters) or None, page=page):
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
        picked: list[str] = []
        for _, job_id in heapq.merge(*sources):
            picked.append(job_id)
            if len(picked) > limit:
                break
        page_ids = picked[:limit]
        found = self._batch_get([job_key(i) for i in page_ids])
        jobs = [
            self._load(found[_key_str(job_key(i))])
            for i in page_ids
            if _key_str(job_key(i)) in found
        ]
        cursor = None
        if len(picked) > limit and jobs:
            cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id)
        return JobPage(jobs, cursor)

    # -- counts, counters, timing -----------------------------------------------------------------
    @aws_errors
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
        while True:
            response = self.ddb.scan(**request)
            for item in response.get("Items", []):
                state = JobState(need_s(item, "st_pk").rsplit("#", 1)[0])
                bucket = (need_s(item, "queue"), state)
                out[bucket] = out.get(bucket, 0) + 1
            last = response.get("LastEvaluatedKey")
            if not last:
                return out
            request["ExclusiveStartKey"] = last

    @aws_errors
    def counters(self) -> dict[CounterKey, int]:
        expr = Expr()
        key = f"{expr.name('pk')} = {expr.value(s(COUNTER_PK))}"
        totals: dict[CounterKey, int] = {}
        for item in self._query(None, expr, key, consistent=True):
            counter = CounterKey(need_s(item, "q"), need_s(item, "t"), need_s(item, "e"))
            totals[counter] = totals.get(counter, 0) + need_n(item, "n")
        return {k: v for k, v in totals.items() if v > 0}

    @aws_errors
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
    @aws_errors
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
        found = self._batch_get([job_key(i) for i in oldest])
        units: list[Unit] = []
        unit_ids: list[str] = []
        refs: list[list[str]] = []
        for job_id in oldest:
            item = found.get(_key_str(job_key(job_id)))
            if item is None:
                continue
            expr = Expr()
            condition = (
                f"{expr.one_of('state', TERMINAL)} AND "
                f"{expr.name('finished_at')} < {expr.value(n(before))}"
            )
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
            idem = get_s(item, "idem")
            if idem is not None:
                ikey = idem_key(need_s(item, "tenant"), idem)
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
            units.append(Unit(actions, keys))
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
        return applied.count(True)

    # -- delivery: the scheduled release ----------------------------------------------------------
    @aws_errors
    def release_due(self, limit: int = 10_000) -> int:
        """Send ids for due-soon jobs that have no message on the way; returns how many.

        Run by the scheduled function. It first reaps expired leases (whose
        jobs are sent at once), then looks at waiting jobs due within SQS's
        15-minute delay: one with no message planned (it was due too far ahead
        when written) gets one now; one still waiting `lost_after` seconds past
        its planned message is presumed lost and sent again. A duplicate is
        harmless: the second claim finds the job taken and the message is dropped.
        """
        if self.dispatch is None:
            return 0
        now = self._now()
        self.reap_expired(now)
        horizon = now + MAX_DELAY_SECONDS * MICRO
        lost_before = now - int(self.config.lost_after * MICRO)
        to_send: list[tuple[str, int]] = []
        for shard in self._shards():
            expr = Expr()
            key = (
                f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_WAITING, shard)))}"
                f" AND {expr.name('tm_at')} <= {expr.value(n(horizon))}"
            )
            for item in self._query(GSI_TIMER, expr, key):
                if len(to_send) >= limit:
                    break
                run_at = need_n(item, "tm_at")  # a waiting job's timer is its run_at
                planned = get_n(item, "msg_at")
                lost = planned is not None and run_at <= lost_before and planned <= lost_before
                if planned is not None and not lost:
                    continue
                job_id = job_id_of(item)
                if self._mark_sent(job_id, planned, max(run_at, now), now):
                    to_send.append((job_id, max(run_at, now)))
        self._send(to_send, now)
        return len(to_send)

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

    def _mark_sent(self, job_id: str, previous: int | None, run_at: int, now: int) -> bool:
        """Record the message about to be sent, unless another release got there first."""
        planned = self._planned_message(run_at, now)
        if planned is None:
            return False
        expr = Expr()
        condition = expr.one_of("state", WAITING) + " AND "
        if previous is None:
            condition += f"attribute_not_exists({expr.name('msg_at')})"
        else:
            condition += f"{expr.name('msg_at')} = {expr.value(n(previous))}"
        expr.set("msg_at", n(planned))
        return self._update_if(job_id, expr, condition)

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
    return DynamoStore(DynamoConfig.from_url(url), clock)


__all__ = [
    "DynamoConfig",
    "DynamoStore",
    "create_resources",
    "from_url",
    "make_clients",
]
