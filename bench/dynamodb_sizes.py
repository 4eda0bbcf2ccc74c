"""An item's size as DynamoDB bills it, for the benchmarks that count read and write
units under moto (bench/aws_requests.py: a finished job's record; bench/scrape_queues.py:
what one scrape reads). They had a copy each, and the copies counted a number's
digits differently.

DynamoDB's rules (Developer Guide, "Item sizes and formats"): an attribute is its
name's UTF-8 bytes plus its value's; a string its UTF-8 bytes, binary its bytes, a
number about one byte per two significant digits plus one, a Boolean or null one
byte, a set its members, a list or map 3 bytes plus one per element plus the
elements (a map's names too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def item_size(item: Mapping[str, Any]) -> int:
    """The size of an item in the low-level client's form ({"name": {"S": "..."}})."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(value: Mapping[str, Any]) -> int:
    """One typed value's size (see the module's rules)."""
    [(kind, body)] = value.items()
    if kind == "S":
        return len(body.encode())
    if kind == "N":
        return _number_size(body)
    if kind == "B":
        return len(body)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in body)
    if kind == "NS":
        return sum(_number_size(n) for n in body)
    if kind == "BS":
        return sum(len(b) for b in body)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in body)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in body.items())
    raise ValueError(f"not a DynamoDB type: {kind!r}")


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1
