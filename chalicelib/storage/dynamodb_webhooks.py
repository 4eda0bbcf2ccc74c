"""The webhook outbox in the DynamoDB table: one item per delivery.

A delivery is ``pk = "H#<delivery id>"``, ``sk = "H"``, holding the Delivery's
fields (times as integer microseconds). It is Put in the same
TransactWriteItems as the job's terminal transition (finish, reap, cancel),
whose update also ADDs the delivery's id to the job's ``hooks`` string set, so
a job's deliveries are one keyed read (a Query filtered on the tenant where a
tenant asks, DynamoStore._owned_item) and one BatchGetItem away and a purge
deletes them with the job.

A job keeps its newest N finished deliveries (SPOOL_WEBHOOK_HISTORY, the store's
webhook_history): when its set lists more ids than that, the transition first reads
them (consistently, after the read its own condition rests on) and its unit also
Deletes the finished ones beyond the newest N (at most MAX_DROPS at a time) and SETs
``hooks`` to the ids that stay plus the new one. SET, not ADD and DELETE: one
update may not name an attribute twice. The set read is still the set written
over, because only a terminal transition changes it and the transition's
condition (the lease token, or the version a cancel read) fails if another
came between. Pending deliveries are never dropped, so the set stays within
N + pending + 1 ids (N at most outbox.MAX_KEPT_FINISHED), far from the 400 KB item limit.

The sparse ``timer`` index finds them: a pending delivery sits in partition
``H#<shard>`` at the time it next needs a worker (when due, or when its lease
runs out, so a delivery whose worker died comes back by itself); a failed one
in ``HF#<shard>`` at its finish; a delivered one leaves the index. Claims query
``H#`` up to now and take each with one conditional UpdateItem; counts are
Select=COUNT queries of ``H#`` and ``HF#``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.ids import new_lease_token
from chalicelib.storage.base import from_micros, micros_of, utf8_text
from chalicelib.storage.dynamodb_aws import counted, pages
from chalicelib.storage.dynamodb_schema import (
    GSI_TIMER,
    Expr,
    get_n,
    get_s,
    n,
    need_n,
    need_s,
    s,
    shard_of,
    timer_partition,
)
from chalicelib.webhooks import outbox
from chalicelib.webhooks.outbox import Delivery

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

    Item = dict[str, AttributeValueTypeDef]
else:
    Item = dict

HOOK_SK = "H"
TIMER_PENDING = "H"  # timer partitions: pending deliveries ...
TIMER_FAILED = "HF"  # ... and failed ones
MICRO = 1_000_000
# Deletes one transition adds to its unit, at most: a job that piled up deliveries
# before they were pruned sheds them over its next few transitions, each unit
# staying far inside TransactWriteItems' 100 actions.
MAX_DROPS = 25
PRUNE_PROJECTION = ("id", "state", "created_at")


@dataclass(frozen=True)
class Pruning:
    """A job's delivery ids as read before its transition, and those its new
    delivery's unit deletes (finished ones beyond the newest it keeps, and ids
    whose item is gone)."""

    listed: tuple[str, ...]
    dropped: tuple[str, ...] = ()


def pruning(
    listed: Sequence[str], deliveries: Mapping[str, Mapping[str, Any]], kept: int
) -> Pruning:
    """What to drop from `listed` so that `kept` finished deliveries stay, given its
    delivery items keyed 'pk|sk' (a BatchGetItem of PRUNE_PROJECTION); oldest first, at
    most MAX_DROPS."""
    if len(listed) <= kept:
        return Pruning(tuple(listed))  # too few finished ones to drop any
    gone: list[str] = []
    finished: list[tuple[int, str]] = []
    for delivery_id in listed:
        item = deliveries.get(f"H#{delivery_id}|{HOOK_SK}")
        if item is None:
            gone.append(delivery_id)
        elif get_s(item, "state") != outbox.PENDING:
            finished.append((need_n(item, "created_at"), delivery_id))
    finished.sort()
    extra = [i for _, i in finished[: max(0, len(finished) - kept)]]
    return Pruning(tuple(listed), tuple((gone + extra)[:MAX_DROPS]))


def hook_key(delivery_id: str) -> Item:
    return {"pk": s(f"H#{delivery_id}"), "sk": s(HOOK_SK)}


def hook_ids(job_item: Mapping[str, AttributeValueTypeDef]) -> list[str]:
    """The delivery ids a job item lists in its `hooks` set."""
    return sorted(job_item.get("hooks", {}).get("SS", []))


def item_to_delivery(item: Mapping[str, AttributeValueTypeDef]) -> Delivery:
    def when(attr: str) -> Any:
        value = get_n(item, attr)
        return None if value is None else from_micros(value)

    return Delivery(
        id=need_s(item, "id"),
        job_id=need_s(item, "job_id"),
        tenant=need_s(item, "tenant"),
        url=need_s(item, "url"),
        event=need_s(item, "event"),
        state=need_s(item, "state"),
        attempts=need_n(item, "attempts"),
        next_at=when("next_at"),
        lease_token=get_s(item, "lease_token"),
        lease_expires_at=when("lease_exp"),
        created_at=from_micros(need_n(item, "created_at")),
        finished_at=when("finished_at"),
        last_error=get_s(item, "last_error"),
    )


class DynamoOutbox:
    """The outbox operations, on the store's client and table."""

    def __init__(self, ddb: DynamoDBClient, table: str, shards: int) -> None:
        self.ddb = ddb
        self.table = table
        self.shards = shards

    # -- written with a transition ------------------------------------------------------
    def stage(
        self,
        job_expr: Expr,
        job_id: str,
        tenant: str,
        url: str,
        state: str,
        now: int,
        expires_at: int | None = None,
        prune: Pruning | None = None,
    ) -> list[tuple[TransactWriteItemTypeDef, str]]:
        """The Put of a new pending delivery (and its id ADDed to the job's update),
        then the Deletes of what `prune` drops (the job's `hooks` then SET to the ids
        that stay): the caller adds the actions to the transition's unit. Returns
        (action, key) pairs."""
        delivery_id = outbox.new_delivery_id()
        dropped = prune.dropped if prune is not None else ()
        if prune is not None and dropped:
            gone = set(dropped)
            stay = [i for i in prune.listed if i not in gone]
            job_expr.set("hooks", {"SS": [*stay, delivery_id]})
        else:
            job_expr.add_to_set("hooks", delivery_id)
        key = hook_key(delivery_id)
        item: Item = {
            **key,
            "id": s(delivery_id),
            "job_id": s(job_id),
            "tenant": s(tenant),
            "url": s(url),
            "event": s(outbox.event_for(state)),
            "state": s(outbox.PENDING),
            "attempts": n(0),
            "next_at": n(now),
            "created_at": n(now),
            "tm_pk": s(self._partition(TIMER_PENDING, delivery_id)),
            "tm_at": n(now),
        }
        if expires_at is not None:
            item["expires_at"] = n(expires_at)  # TTL: goes with the finished job
        action: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        deletes = zip(self.deletes(dropped), dropped, strict=True)
        return [
            (action, f"H#{delivery_id}|{HOOK_SK}"),
            *((delete, f"H#{gone}|{HOOK_SK}") for delete, gone in deletes),
        ]

    def deletes(self, delivery_ids: Sequence[str]) -> list[TransactWriteItemTypeDef]:
        """A purge's deletes of a job's deliveries (in the job's unit)."""
        return [{"Delete": {"TableName": self.table, "Key": hook_key(i)}} for i in delivery_ids]

    # -- the outbox's own operations ------------------------------------------------------
    def claim(self, limit: int, lease_seconds: float, now: int) -> list[Delivery]:
        if limit <= 0:
            return []
        expires = now + micros_of(lease_seconds)
        due = itertools.islice(
            heapq.merge(*(self._due(shard, now) for shard in range(self.shards))), limit * 2
        )
        token = new_lease_token()
        claimed: list[Delivery] = []
        for _, delivery_id in due:
            if len(claimed) >= limit:
                break
            expr = Expr()
            condition = (
                f"{expr.name('state')} = {expr.value(s(outbox.PENDING))} AND "
                f"{expr.name('tm_at')} <= {expr.value(n(now))}"
            )
            expr.set("lease_token", s(token)).set("lease_exp", n(expires)).set("tm_at", n(expires))
            expr.add("attempts", 1)
            item = self._update(delivery_id, expr, condition)
            if item is not None:
                claimed.append(item_to_delivery(item))
        return claimed

    def _due(self, shard: int, now: int) -> Iterator[tuple[int, str]]:
        expr = Expr()
        key = (
            f"{expr.name('tm_pk')} = {expr.value(s(timer_partition(TIMER_PENDING, shard)))}"
            f" AND {expr.name('tm_at')} <= {expr.value(n(now))}"
        )
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_TIMER,
            "KeyConditionExpression": key,
            **expr.placeholders(),
        }
        for response in pages(self.ddb.query, request):
            for entry in response.get("Items", []):
                yield need_n(entry, "tm_at"), need_s(entry, "pk")[2:]

    def finish(
        self,
        delivery_id: str,
        lease_token: str,
        outcome: str,
        retry_at: int | None,
        error: str | None,
        now: int,
    ) -> bool:
        expr = Expr()
        condition = (
            f"{expr.name('state')} = {expr.value(s(outbox.PENDING))} AND "
            f"{expr.name('lease_token')} = {expr.value(s(lease_token))}"
        )
        expr.remove("lease_token", "lease_exp")
        short = utf8_text(outbox.short_error(error))
        if short is None:
            expr.remove("last_error")
        else:
            expr.set("last_error", s(short))
        if outcome == outbox.RETRYING:
            at = now if retry_at is None else retry_at
            expr.set("next_at", n(at)).set("tm_at", n(at))
        else:
            expr.set("state", s(outcome)).set("finished_at", n(now))
            expr.remove("next_at")
            if outcome == outbox.FAILED:
                partition = self._partition(TIMER_FAILED, delivery_id)
                expr.set("tm_pk", s(partition)).set("tm_at", n(now))
            else:
                expr.remove("tm_pk", "tm_at")
        return self._update(delivery_id, expr, condition) is not None

    def for_ids(self, items: Mapping[str, Item]) -> list[Delivery]:
        found = [item_to_delivery(i) for i in items.values()]
        found.sort(key=lambda d: (d.created_at, d.id))
        return found

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for state, kind in ((outbox.PENDING, TIMER_PENDING), (outbox.FAILED, TIMER_FAILED)):
            total = sum(self._count(timer_partition(kind, shard)) for shard in range(self.shards))
            if total:
                out[state] = total
        return out

    def _count(self, partition: str) -> int:
        expr = Expr()
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_TIMER,
            "KeyConditionExpression": f"{expr.name('tm_pk')} = {expr.value(s(partition))}",
            **expr.placeholders(),
        }
        return counted(self.ddb.query, request)

    # -- plumbing -----------------------------------------------------------------------------
    def _partition(self, kind: str, delivery_id: str) -> str:
        return timer_partition(kind, shard_of(delivery_id, self.shards))

    def _update(self, delivery_id: str, expr: Expr, condition: str) -> Item | None:
        try:
            response = self.ddb.update_item(
                TableName=self.table,
                Key=hook_key(delivery_id),
                UpdateExpression=expr.update_expression(),
                ConditionExpression=condition,
                ReturnValues="ALL_NEW",
                **expr.placeholders(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return dict(response.get("Attributes", {}))
