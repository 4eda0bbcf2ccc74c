"""moto's TransactWriteItems, undone item by item instead of table by table.

To undo a cancelled transaction, moto (5.2) deep-copies the whole table before it
applies one, once for each item the transaction names, and puts the copy back when
a condition fails. A store's finish or redrive is a transaction of two or three
items, so its cost grew with everything the table held: in a DynamoDB contract test
with a few hundred jobs, copying tables was 45% of moto's time (py-spy). Real
DynamoDB keeps no such copy, and nothing a test asks of moto depends on one.

Installed (tests/backends.py, for the in-process moto), a transaction saves the
items it names (a copy each, or that there was none), moto's copy of the table
becomes the table itself, and a cancelled transaction puts back those items alone:
the same state moto's own copy restored, as tests/test_moto_rollback.py checks.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

_INSTALLED = False


class _TablesNotCopied:
    """Stands in for the `copy` module inside moto.dynamodb.models: a Table is
    handed back as it is, anything else copied as before (update_item copies an
    item before it changes it)."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def install() -> None:
    """Patch moto's DynamoDB backend (once a process)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = _saved_items(self, transact_items)
        try:
            original(self, transact_items)
        except Exception:
            _put_back(saved)
            raise

    models.copy = _TablesNotCopied(Table)  # type: ignore[attr-defined,assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _INSTALLED = True


Saved = list[tuple[Any, Any, Any, Any]]  # (table, hash key, range key, item copy or None)


def _saved_items(backend: Any, transact_items: list[dict[str, Any]]) -> Saved:
    """A copy of each item the transaction names (None where there is none yet)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    saved: Saved = []
    for entry in transact_items:
        op = next(iter(entry.values())) if len(entry) == 1 else None
        if not isinstance(op, dict) or op.get("TableName") not in backend.tables:
            continue  # moto refuses it before it changes anything
        table = backend.tables[op["TableName"]]
        attrs = op.get("Key") or op.get("Item")
        keys = [table.hash_key_attr, table.range_key_attr]
        if not isinstance(attrs, dict) or any(k not in attrs for k in keys if k is not None):
            continue  # a malformed operation: moto refuses it before it changes anything
        hash_key, range_key = (DynamoType(attrs[k]) if k is not None else None for k in keys)
        current = _current(table, hash_key, range_key)
        saved.append((table, hash_key, range_key, copy.deepcopy(current)))
    return saved


def _current(table: Any, hash_key: Any, range_key: Any) -> Any:
    """The stored item, read without moto's get_item (whose defaultdict lookup adds
    an empty group for a hash key it has not met)."""
    if range_key is None:
        return table.items.get(hash_key)
    group = table.items.get(hash_key)
    return None if group is None else group.get(range_key)


def _put_back(saved: Saved) -> None:
    for table, hash_key, range_key, item in reversed(saved):
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
            continue
        group = table.items.get(hash_key)
        if item is None:
            if group is not None:
                group.pop(range_key, None)
                if not group:
                    del table.items[hash_key]
        else:
            table.items[hash_key][range_key] = item
