"""How jobs, counters and idempotency keys are laid out in one DynamoDB table.

One table, three kinds of item, told apart by the partition key:

- a job: ``pk = "J#<id>"``, ``sk = "J"``; every field of the Job, times as
  integer microseconds, payload and result as JSON text (or an S3 key when
  they are too big for a record), and ``ver``, bumped by every write so a
  read-then-write can be made conditional on "nothing changed since".
- an idempotency key: ``pk = "I#<tenant>"``, ``sk = "K#<key>"`` holding the
  job id; written in the same transaction as the job, so a key is never
  claimed by two jobs. Its ``expires_at`` (TTL) is its job's: none while the
  job has none, set and removed in the transactions that set and remove the
  job's (a finish, reap or cancel; a redrive), so TTL never deletes a key
  whose job is still stored.
- a counter: ``pk = "C"``, ``sk = [queue, type, event, shard]`` holding ``n``;
  bumped with ADD in the same transaction as the transition it counts. A few
  shards per counter spread the writes so concurrent transactions rarely
  collide on one item.
- a tenant's invalidation epoch (JobStore.cache_epoch(tenant)):
  ``pk = "E#<tenant>"``, ``sk = "E"`` holding ``n``, bumped with ADD in the
  transaction of every redrive or purge that changes one of the tenant's jobs
  (made by its first bump or its first read, which also sets ``born``, a random
  birth mark, once: DynamoStore.cache_epoch). An item per tenant, each in its own
  partition, so one tenant's redrives contend with no other's. A table made
  before keeps its old store-wide ``pk = sk = "E"`` item, which nothing reads.
- a worker's beat: ``pk = "W"``, ``sk = <worker id>`` holding its queues
  (JSON), ``started_at``, ``last_beat`` and ``expires_at`` (the table's TTL,
  a day after the beat). One partition: a beat every ~15 s per worker is far
  below a partition's 1,000 writes a second.
- a limit's state (claims with a ClaimPolicy, dynamodb_limits.py):
  ``pk = "L#<queue:name or type:name>"``, ``sk = "L"`` holding ``ver``, ``run``
  (JSON list of the ids its claims started that may still run) and ``starts``
  (JSON list of [start time, how many] inside its rate window).
- fair turns: ``pk = sk = "T"`` holding ``ver`` and ``turns`` (JSON: the pass of
  every tenant ahead of the clock, and the clock).
- a token bucket (JobStore.take_tokens): ``pk = "B#<key>"``, ``sk = "B"``
  holding ``ver``, ``tokens`` (text: a float) and ``at`` (micros), expiring
  (TTL) once it would be full again, when it is the same as no item.

A job's attempt history lives on its own item (``attempt_log``, a map of
ring slots ``a0`` .. ``a<N-1>``, each one attempt as JSON with its sequence
number ``q``; ``att_seq`` counts the job's claims and picks the slot), so the
finish that records an attempt is the same conditional write as the
transition, and a job's item never holds more than N attempts.

Six sparse global secondary indexes answer the questions a store is asked.
Each partition name carries a shard suffix (``#0`` .. ``#S-1``, from a hash
of the job id) so one hot partition never caps throughput; readers merge the
shards in key order.

- ``due``: waiting jobs only, sorted by (priority desc, run_at, created_at,
  id): what `claim` takes, best first.
- ``timer``: every job by the time something next happens to it: a waiting
  job at run_at (``W#s``), a running one at its lease expiry (``R#s``), a
  finished one at finished_at (``F#s``): reaping, `next_due_at`, releasing
  delayed jobs to SQS, and `purge`.
- ``state``: jobs by state, in creation order: listings across tenants and
  `counts`.
- ``tenant``: a tenant's jobs in creation order: the API's listings.
- ``tenant_due``: a tenant's waiting jobs in the ``due`` order (``tn_pk``,
  ``due_sk``: both already on every waiting job, so no write changes): what a
  fair claim takes from one tenant, best first.
- ``due_tenants``: waiting jobs by tenant (``due_pk``, ``tn_pk``, keys only):
  which tenants have waiting jobs, one short query per few tenants (a fair
  claim skips past each tenant's entries with ``tn_pk > <last seen>``).

The indexes project only the few attributes their readers filter on, so an
update that touches none of them (a lease extension, a result) does not
rewrite them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.config import MAX_QUEUES_LISTED
from chalicelib.models import STATE_BY_VALUE, Job, JobState, JobTiming, trusted_job
from chalicelib.storage.base import from_micros, to_micros

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    Item = dict[str, AttributeValueTypeDef]
else:
    Item = dict

JOB_SK = "J"
COUNTER_PK = "C"
EPOCH_PREFIX = "E#"
EPOCH_SK = "E"
WORKER_PK = "W"
LIMIT_PREFIX = "L#"
LIMIT_SK = "L"
TURNS_PK = "T"
BUCKET_PREFIX = "B#"
GSI_DUE = "due"
GSI_TIMER = "timer"
GSI_STATE = "state"
GSI_TENANT = "tenant"
GSI_TENANT_DUE = "tenant_due"
GSI_DUE_TENANTS = "due_tenants"

# Timer partitions: what the time in tm_at means for the job.
TIMER_WAITING = "W"
TIMER_RUNNING = "R"
TIMER_FINISHED = "F"

# Keys are compared as strings, so numbers are written fixed-width and offset
# to be non-negative: priority descending, then times ascending.
_PRIORITY_LIMIT = 10**15
_TIME_OFFSET = 10**18

# Static attributes never change after add, so a stale read of them is fine.
STATIC_ATTRS = (
    "id", "tenant", "type", "queue", "priority", "created_at", "idem", "pbytes", "cb_url"
)  # fmt: skip

TABLE_ATTRIBUTES = {
    "pk": "S",
    "sk": "S",
    "due_pk": "S",
    "due_sk": "S",
    "tm_pk": "S",
    "tm_at": "N",
    "st_pk": "S",
    "tn_pk": "S",
    "created_sk": "S",
}

INDEXES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (hash key, range key, projected non-key attributes). Readers that
    # need a whole job read it from the table by key (BatchGetItem).
    GSI_DUE: ("due_pk", "due_sk", ("run_at", "queue")),
    GSI_TIMER: ("tm_pk", "tm_at", ("queue", "msg_at")),
    GSI_STATE: ("st_pk", "created_sk", ("queue", "type")),
    GSI_TENANT: ("tn_pk", "created_sk", ("state", "queue", "type")),
    GSI_TENANT_DUE: ("tn_pk", "due_sk", ("run_at", "queue", "type")),
    GSI_DUE_TENANTS: ("due_pk", "tn_pk", ()),  # keys only
}


def _projection(attrs: tuple[str, ...]) -> dict[str, Any]:
    if not attrs:
        return {"ProjectionType": "KEYS_ONLY"}
    return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(attrs)}


def table_definition(name: str) -> dict[str, Any]:
    """create_table arguments; infra/resources.json declares the same shape (a test checks)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": attr, "AttributeType": kind}
            for attr, kind in sorted(TABLE_ATTRIBUTES.items())
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": range_key, "KeyType": "RANGE"},
                ],
                "Projection": _projection(attrs),
            }
            for index, (hash_key, range_key, attrs) in INDEXES.items()
        ],
    }


# -- attribute values ----------------------------------------------------------


def s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def n(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


def get_s(item: Mapping[str, AttributeValueTypeDef], attr: str) -> str | None:
    value = item.get(attr)
    return None if value is None else value.get("S")


def get_n(item: Mapping[str, AttributeValueTypeDef], attr: str) -> int | None:
    value = item.get(attr)
    if value is None or "N" not in value:
        return None
    return int(value["N"])


def need_s(item: Mapping[str, AttributeValueTypeDef], attr: str) -> str:
    value = get_s(item, attr)
    if value is None:
        raise KeyError(f"item has no string attribute {attr!r}")
    return value


def need_n(item: Mapping[str, AttributeValueTypeDef], attr: str) -> int:
    value = get_n(item, attr)
    if value is None:
        raise KeyError(f"item has no number attribute {attr!r}")
    return value


# -- keys ------------------------------------------------------------------------


def job_key(job_id: str) -> Item:
    return {"pk": s("J#" + job_id), "sk": s(JOB_SK)}


def job_id_of(item: Mapping[str, AttributeValueTypeDef]) -> str:
    """The id from the table key, which every index entry carries."""
    return need_s(item, "pk")[2:]


def idem_key(tenant: str, key: str) -> Item:
    return {"pk": s("I#" + tenant), "sk": s("K#" + key)}


def counter_key(queue: str, type_: str, event: str, shard: int) -> Item:
    return {"pk": s(COUNTER_PK), "sk": s(json.dumps([queue, type_, event, shard]))}


# Throughput tallies (JobStore.throughput) ride the counter machinery: a counter whose
# event is "@<minute in micros>:<succeeded|failed>" and whose type is the tenant is
# written as ``pk = "M#<minute>"``, ``sk = [tenant, queue, outcome, shard]`` holding
# ``n``, expiring (TTL) two days after its minute.
MINUTE_EVENT = "@"
MINUTE_PREFIX = "M#"
MINUTE_MICROS = 60_000_000


def minute_event(now_micros: int, succeeded: bool) -> str:
    minute = now_micros // MINUTE_MICROS * MINUTE_MICROS
    return f"{MINUTE_EVENT}{minute}:{'succeeded' if succeeded else 'failed'}"


def minute_counter_key(event: str, tenant: str, queue: str, shard: int) -> tuple[Item, int, str]:
    """The item of a minute tally, its minute (micros) and its outcome."""
    minute, outcome = event[len(MINUTE_EVENT) :].split(":", 1)
    key = {"pk": s(MINUTE_PREFIX + minute), "sk": s(json.dumps([tenant, queue, outcome, shard]))}
    return key, int(minute), outcome


def epoch_key(tenant: str) -> Item:
    """A tenant's invalidation epoch (JobStore.cache_epoch): one item holding ``n``."""
    return {"pk": s(EPOCH_PREFIX + tenant), "sk": s(EPOCH_SK)}


def worker_key(worker: str) -> Item:
    return {"pk": s(WORKER_PK), "sk": s(worker)}


def limit_item_key(key: str) -> Item:
    """The state of one limit ('type:resize'): its running ids and recent starts."""
    return {"pk": s(LIMIT_PREFIX + key), "sk": s(LIMIT_SK)}


def turns_key() -> Item:
    """Fair turns: each tenant's pass and the clock, shared by every claim."""
    return {"pk": s(TURNS_PK), "sk": s(TURNS_PK)}


def bucket_key(key: str) -> Item:
    """A token bucket shared by every process ('tenant:acme')."""
    return {"pk": s(BUCKET_PREFIX + key), "sk": s("B")}


def attempt_slot(seq: int, slots: int) -> str:
    """The ring slot of the job's seq-th claim in its attempt_log map."""
    return f"a{seq % slots}"


def shard_of(job_id: str, shards: int) -> int:
    return zlib.crc32(job_id.encode()) % shards if shards > 1 else 0


def fixed_time(micros: int) -> str:
    return f"{micros + _TIME_OFFSET:020d}"


def created_sort_key(created_micros: int, job_id: str) -> str:
    """Creation order, then id: the order listings and their cursors use."""
    return f"{fixed_time(created_micros)}#{job_id}"


def due_sort_key(priority: int, run_at_micros: int, created_micros: int, job_id: str) -> str:
    clamped = max(-_PRIORITY_LIMIT + 1, min(_PRIORITY_LIMIT - 1, priority))
    return f"{_PRIORITY_LIMIT - clamped:016d}#{fixed_time(run_at_micros)}#" + created_sort_key(
        created_micros, job_id
    )


def due_partition(shard: int) -> str:
    return f"due#{shard}"


def timer_partition(kind: str, shard: int) -> str:
    return f"{kind}#{shard}"


def state_partition(state: JobState, shard: int) -> str:
    return f"{state.value}#{shard}"


def tenant_partition(tenant: str, shard: int) -> str:
    return f"{tenant}#{shard}"


# -- jobs --------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _time(item: Mapping[str, AttributeValueTypeDef], attr: str) -> datetime | None:
    micros = get_n(item, attr)
    return None if micros is None else from_micros(micros)


def item_to_timing(item: Mapping[str, AttributeValueTypeDef]) -> JobTiming:
    """The JobTiming of an item (id, type, state, run_at and lease_exp are all it
    reads: a projection may leave out the payload, the result and their S3 keys)."""
    return JobTiming(
        id=need_s(item, "id"),
        type=need_s(item, "type"),
        state=STATE_BY_VALUE[need_s(item, "state")],
        run_at=from_micros(need_n(item, "run_at")),
        lease_expires_at=_time(item, "lease_exp"),
    )


def item_to_job(item: Mapping[str, AttributeValueTypeDef], payload: Any, result: Any) -> Job:
    """Items come from our own writes, so skip validation (the claim path is hot).

    payload and result are passed in already decoded, since either may live in S3.
    """
    return trusted_job(
        {
            "id": need_s(item, "id"),
            "tenant": need_s(item, "tenant"),
            "type": need_s(item, "type"),
            "queue": need_s(item, "queue"),
            "priority": need_n(item, "priority"),
            "payload": payload,
            "state": STATE_BY_VALUE[need_s(item, "state")],
            "attempts": need_n(item, "attempts"),
            "max_attempts": need_n(item, "max_attempts"),
            "run_at": from_micros(need_n(item, "run_at")),
            "lease_token": get_s(item, "lease_token"),
            "lease_expires_at": _time(item, "lease_exp"),
            "result": result,
            "last_error": get_s(item, "last_error"),
            "idempotency_key": get_s(item, "idem"),
            "created_at": from_micros(need_n(item, "created_at")),
            "updated_at": from_micros(need_n(item, "updated_at")),
            "started_at": _time(item, "started_at"),
            "finished_at": _time(item, "finished_at"),
        }
    )


def micros(when: datetime) -> int:
    return to_micros(when)


# DynamoDB takes at most 100 operands in one IN, 300 operators and 4 KB in one
# expression. A longer list is split into ORed INs of IN_MOST (one operator each);
# past MAX_LISTED names (about 2.1 KB of placeholders, leaving room for the rest of
# a claim's condition or a limited claim's filter) no expression holds it, and one_of
# refuses it by name instead of DynamoDB refusing the request mid-claim. SPOOL_QUEUES
# is held to the same bound at start (chalicelib/config.py).
IN_MOST = 100
MAX_LISTED = MAX_QUEUES_LISTED


class Expr:
    """Collects attribute-name and value placeholders for one expression set.

    Every attribute goes through a name placeholder, so DynamoDB's long list of
    reserved words (state, type, queue, ...) never bites.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValueTypeDef] = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self._adds: list[str] = []

    def name(self, attr: str) -> str:
        alias = f"#{attr}"
        self.names[alias] = attr
        return alias

    def value(self, value: AttributeValueTypeDef) -> str:
        alias = f":v{len(self.values)}"
        self.values[alias] = value
        return alias

    def set(self, attr: str, value: AttributeValueTypeDef) -> Expr:
        self._sets.append(f"{self.name(attr)} = {self.value(value)}")
        return self

    def set_raw(self, clause: str) -> Expr:
        self._sets.append(clause)
        return self

    def remove(self, *attrs: str) -> Expr:
        self._removes.extend(self.name(a) for a in attrs)
        return self

    def add(self, attr: str, amount: int) -> Expr:
        self._adds.append(f"{self.name(attr)} {self.value(n(amount))}")
        return self

    def add_to_set(self, attr: str, *members: str) -> Expr:
        """ADD strings to a string set (created when absent)."""
        self._adds.append(f"{self.name(attr)} {self.value({'SS': list(members)})}")
        return self

    def update_expression(self) -> str:
        parts = []
        if self._sets:
            parts.append("SET " + ", ".join(self._sets))
        if self._removes:
            parts.append("REMOVE " + ", ".join(self._removes))
        if self._adds:
            parts.append("ADD " + ", ".join(self._adds))
        return " ".join(parts)

    def one_of(self, attr: str, options: list[AttributeValueTypeDef]) -> str:
        """`attr IN (...)` for any number of options up to MAX_LISTED (repeats are one)."""
        unique = list({repr(o): o for o in options}.values())
        if len(unique) > MAX_LISTED:
            raise ValueError(
                f"{len(unique)} {attr} values in one DynamoDB expression: at most "
                f"{MAX_LISTED} fit (DynamoDB takes 100 operands in an IN and 4 KB of "
                "expression); list fewer"
            )
        groups = [
            f"{self.name(attr)} IN ({', '.join(self.value(o) for o in unique[i : i + IN_MOST])})"
            for i in range(0, len(unique), IN_MOST)
        ]
        return groups[0] if len(groups) == 1 else f"({' OR '.join(groups)})"

    def placeholders(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            out["ExpressionAttributeValues"] = dict(self.values)
        return out
