"""Writes that must land together: TransactWriteItems, packed and retried.

A *unit* is one job's share of a transaction: its own writes (usually one; an
add with an idempotency key has two) and the counters they move. `apply` packs
units into as few transactions as fit (100 actions, 3.5 MB, no item twice), adds
one counter update per (queue, type, event) touched, and treats each unit on its
own: a unit whose condition fails is dropped and the rest retried, so a batch of
completions where one lost its lease still applies the others in one request.
A unit's last `optional` actions are best effort: one of them refused drops
only those, and the unit is retried without them (a job's transition must not
fail because its idempotency key item is held by another job).
`once` is the all-or-nothing building block, for an add that must not be split.

Counters are sharded (a random shard per transaction) so that concurrent
transactions rarely touch the same counter item: DynamoDB cancels a transaction
that conflicts with another one in flight on an item.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.errors import StoreUnavailable
from chalicelib.storage.dynamodb_schema import (
    MINUTE_EVENT,
    Expr,
    counter_key,
    epoch_key,
    minute_counter_key,
    n,
    s,
)

# A minute tally outlives its minute by this long (DynamoDB's TTL then deletes it).
MINUTE_TTL_SECONDS = 2 * 86400

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

TRANSACTION_ACTIONS = 100  # TransactWriteItems limit
TRANSACTION_BYTES = 3_500_000  # under the 4 MB request limit
TRANSACTION_ATTEMPTS = 8


@dataclass
class Unit:
    """One job's share of a transaction: its own writes and the counters they move."""

    actions: list[TransactWriteItemTypeDef]
    keys: list[str]
    counters: list[tuple[str, str, str, int]] = field(default_factory=list)
    size: int = 1024
    optional: int = 0  # the last actions that may be dropped if refused (see the module)
    epoch: str | None = None  # the tenant whose cache epoch this unit's change bumps

    def required(self) -> Unit:
        """This unit without its optional actions."""
        keep = len(self.actions) - self.optional
        return Unit(self.actions[:keep], self.keys, self.counters, self.size, epoch=self.epoch)


class Cancelled(Exception):
    """A transaction was refused; `reasons` holds one entry per unit (Code "None" if fine)."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


def _unit_reason(unit: Unit, reasons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A unit's share of a cancelled transaction's reasons as one: its first failure
    (marked Optional when it is one of the unit's optional actions), or Code "None"."""
    for position, reason in enumerate(reasons):
        if reason.get("Code") not in (None, "None"):
            mine = dict(reason)
            if position >= len(unit.actions) - unit.optional:
                mine["Optional"] = True
            return mine
    return {"Code": "None"}


class Transactions:
    def __init__(
        self, ddb: DynamoDBClient, table: str, counter_shards: int, rng: random.Random
    ) -> None:
        self.ddb = ddb
        self.table = table
        self.counter_shards = counter_shards
        self.rng = rng

    def backoff(self, attempt: int) -> None:
        time.sleep(self.rng.uniform(0, min(0.5, 0.01 * 2**attempt)))

    def counter_actions(
        self, counts: Mapping[tuple[str, str, str], int]
    ) -> list[TransactWriteItemTypeDef]:
        shard = self.rng.randrange(self.counter_shards)
        actions: list[TransactWriteItemTypeDef] = []
        for (queue, type_, event), amount in sorted(counts.items()):
            if amount == 0:
                continue
            expr = Expr().add("n", amount)
            if event.startswith(MINUTE_EVENT):  # a throughput tally: type_ is the tenant
                key, minute, outcome = minute_counter_key(event, type_, queue, shard)
                expr.set("q", s(queue)).set("t", s(type_)).set("e", s(outcome))
                expr.set("expires_at", n(minute // 1_000_000 + MINUTE_TTL_SECONDS))
            else:
                key = counter_key(queue, type_, event, shard)
                expr.set("q", s(queue)).set("t", s(type_)).set("e", s(event))
            actions.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": key,
                        "UpdateExpression": expr.update_expression(),
                        **expr.placeholders(),  # type: ignore[typeddict-item]
                    }
                }
            )
        return actions

    def chunks(self, units: Sequence[Unit], reserved: int = 0) -> Iterator[list[int]]:
        """Pack units into transactions: at most 100 actions (less `reserved`), 3.5 MB,
        one write per item. The counters and tenant epochs a chunk's units share
        are one action each."""
        chunk: list[int] = []
        actions = reserved
        size = 0
        keys: set[str] = set()
        counters: set[tuple[str, str, str]] = set()
        epochs: set[str] = set()
        for index, unit in enumerate(units):
            unit_counters = {c[:3] for c in unit.counters} - counters
            unit_epochs = ({unit.epoch} if unit.epoch is not None else set()) - epochs
            needed = len(unit.actions) + len(unit_counters) + len(unit_epochs)
            if chunk and (
                actions + needed > TRANSACTION_ACTIONS
                or size + unit.size > TRANSACTION_BYTES
                or keys.intersection(unit.keys)
            ):
                yield chunk
                chunk, actions, size, keys, counters, epochs = [], reserved, 0, set(), set(), set()
                unit_counters = {c[:3] for c in unit.counters}
                unit_epochs = {unit.epoch} if unit.epoch is not None else set()
                needed = len(unit.actions) + len(unit_counters) + len(unit_epochs)
            chunk.append(index)
            actions += needed
            size += unit.size
            keys.update(unit.keys)
            counters.update(unit_counters)
            epochs.update(unit_epochs)
        if chunk:
            yield chunk

    def epoch_action(self, tenant: str) -> TransactWriteItemTypeDef:
        """ADD 1 to a tenant's invalidation epoch item (JobStore.cache_epoch)."""
        expr = Expr().add("n", 1)
        return {
            "Update": {
                "TableName": self.table,
                "Key": epoch_key(tenant),
                "UpdateExpression": expr.update_expression(),
                **expr.placeholders(),  # type: ignore[typeddict-item]
            }
        }

    def once(self, units: Sequence[Unit]) -> None:
        """One all-or-nothing transaction; raises Cancelled with per-unit reasons.

        It also bumps, once each, the epochs of the tenants its units name
        (`Unit.epoch`), so the change and the bumps land together."""
        totals: dict[tuple[str, str, str], int] = {}
        actions: list[TransactWriteItemTypeDef] = []
        for unit in units:
            actions.extend(unit.actions)
            for queue, type_, event, amount in unit.counters:
                totals[(queue, type_, event)] = totals.get((queue, type_, event), 0) + amount
        actions.extend(self.counter_actions(totals))
        tenants = {unit.epoch for unit in units if unit.epoch is not None}
        actions.extend(self.epoch_action(tenant) for tenant in sorted(tenants))
        try:
            self.ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            response: dict[str, Any] = dict(exc.response)
            reasons: list[dict[str, Any]] = [
                dict(r) for r in response.get("CancellationReasons", [])
            ]
            per_unit: list[dict[str, Any]] = []
            position = 0
            for unit in units:
                mine = reasons[position : position + len(unit.actions)]
                position += len(unit.actions)
                per_unit.append(_unit_reason(unit, mine))
            counter_failed = next(
                (r for r in reasons[position:] if r.get("Code") not in (None, "None")), None
            )
            if counter_failed is not None and all(r["Code"] == "None" for r in per_unit):
                per_unit = [dict(counter_failed) for _ in units]
            raise Cancelled(per_unit) from exc

    def apply(self, units: Sequence[Unit]) -> list[bool]:
        """Apply each unit on its own: one whose condition fails is dropped, the rest retried.

        Each transaction bumps the epochs of the tenants of the units it applies
        (`Unit.epoch`) and no other: a unit dropped takes its bump with it."""
        applied = [False] * len(units)
        todo = list(units)
        for chunk in self.chunks(units):
            live = list(chunk)
            for attempt in range(TRANSACTION_ATTEMPTS):
                if not live:
                    break
                try:
                    self.once([todo[i] for i in live])
                except Cancelled as cancelled:
                    reasons = dict(zip(live, cancelled.reasons, strict=True))
                    refused = [
                        i for i in live if reasons[i].get("Code") == "ConditionalCheckFailed"
                    ]
                    if refused:
                        for i in refused:
                            if reasons[i].get("Optional"):  # retried without those
                                todo[i] = todo[i].required()
                        live = [i for i in live if i not in refused or reasons[i].get("Optional")]
                        continue
                    # Conflicts with concurrent transactions (often on a counter item): back off.
                    self.backoff(attempt)
                    continue
                for i in live:
                    applied[i] = True
                break
            else:
                raise StoreUnavailable("DynamoDB transactions kept conflicting; try again")
        return applied
