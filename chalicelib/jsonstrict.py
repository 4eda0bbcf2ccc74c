"""JSON as RFC 8259 defines it: no NaN, no Infinity, on the way in and out.

Python's json module reads the literals NaN, Infinity and -Infinity, and reads
an out-of-range number such as 1e999 as float('inf'); it then writes them back
as bare NaN/Infinity, which no strict parser (JavaScript, Go, jq, Postgres
jsonb) accepts. One value like that in a stored payload breaks every response
that includes it, so Spool refuses them wherever JSON comes in (`loads_strict`),
checks what it is about to store (`is_finite_json`), and the HTTP edge never
writes them (chalicelib.api.http.dumps, with `finite_or_null` for rows stored
before this rule).

The checks that may meet a value no JSON document decodes to (a handler's
result: nested 100,000 deep, or holding itself) walk it with a stack of their
own, so they answer instead of raising RecursionError or never returning.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from chalicelib.number_text import too_small, underflows

# Why a value has no JSON form, in words for whoever built it (the API's body
# parser says the first; the worker says both of a handler's result).
NESTED_TOO_DEEP = "arrays and objects are nested too deeply"
CIRCULAR = "an array or object in it contains itself (a circular reference)"


class Refused(ValueError):
    """Text json.loads reads but strict JSON does not; `token` is the text to point at."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


class NonFiniteNumber(Refused):
    """A number JSON cannot carry: NaN, Infinity, or a literal too large for a float."""


class RepeatedName(Refused):
    """An object naming one member twice."""


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not valid JSON: JSON numbers are finite", name)


class UnderflowingNumber(Refused):
    """A literal below the smallest float, such as 1e-400, that json.loads reads as 0."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise NonFiniteNumber(f"the number {shown} is out of range: JSON numbers are finite", text)
    if underflows(text, value):
        # Read as 0, a `timeout` or `delay` the client meant as positive would pass as
        # 0 (or be refused as "not greater than 0", a number the client never sent).
        raise UnderflowingNumber(f"the number {too_small(text)} (send 0, or a larger number)", text)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are all different. RFC 8259 leaves repeated names to the
    parser, and parsers differ (Python keeps the last, others the first or refuse): a
    proxy or audit log reading `{"type": "echo", "type": "fail"}` would see another
    job than the one Spool runs, so it is refused."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [name for name, _ in pairs]
        repeated = next(name for i, name in enumerate(names) if name in names[:i])
        raise RepeatedName(f"the name {repeated!r} appears twice in one object", f'"{repeated}"')
    return obj


# One decoder for every call, as json.loads keeps one for calls without options: given
# hooks, json.loads builds a JSONDecoder and its scanner per call (~40% of a small
# body's parse). The scanner holds no state between documents, so threads share it.
_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
    object_pairs_hook=_unique_keys,
)


def _document(text: str | bytes) -> str:
    """The text json.loads (Python 3.11) hands its decoder: bytes read in the encoding
    their first bytes show (UTF-8, -16 or -32), a str starting with a BOM refused."""
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return text
    if not isinstance(text, bytes | bytearray):
        raise TypeError(
            f"the JSON object must be str, bytes or bytearray, not {text.__class__.__name__}"
        )
    return text.decode(json.detect_encoding(text), "surrogatepass")


class StrictRefusal(json.JSONDecodeError):
    """loads_strict's refusal of a token json.loads reads (NaN, 1e999, a repeated
    name...): `refused_path(doc)` finds where it is."""


# What refused_path's parse makes of a token loads_strict refuses.
_MARK = object()


class _Repeated(list[tuple[str, Any]]):
    """An object naming a member twice, as refused_path's parse keeps it."""


def _float_or_mark(text: str) -> Any:
    try:
        return _finite_float(text)
    except Refused:
        return _MARK


def _int_or_mark(text: str) -> Any:
    try:
        return int(text)
    except ValueError:  # more digits than the interpreter converts
        return _MARK


def _pairs_or_marked(pairs: list[tuple[str, Any]]) -> Any:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeated(pairs)


_MARKING = json.JSONDecoder(
    parse_constant=lambda name: _MARK,
    parse_float=_float_or_mark,
    parse_int=_int_or_mark,
    object_pairs_hook=_pairs_or_marked,
)


def refused_path(text: str) -> list[str | int] | None:
    """The path to the first token loads_strict refuses in `text`, in the order the
    parser meets them (a value before the object holding it); a repeated name's path
    ends in that name. None when there is none, or `text` is not JSON at all."""
    try:
        value = _MARKING.decode(text)
    except (ValueError, RecursionError):
        return None
    # Depth-first, each container's members before the container itself (its own
    # hook runs once they are parsed), with a stack of its own.
    stack: list[tuple[list[str | int], Any, bool]] = [([], value, False)]
    while stack:
        path, item, done = stack.pop()
        if item is _MARK:
            return path
        if isinstance(item, _Repeated):
            if done:
                names = [name for name, _ in item]
                return [*path, next(n for i, n in enumerate(names) if n in names[:i])]
            stack.append((path, item, True))
            stack.extend(([*path, name], child, False) for name, child in reversed(item))
        elif isinstance(item, dict):
            pairs = reversed(list(item.items()))
            stack.extend(([*path, name], child, False) for name, child in pairs)
        elif isinstance(item, list):
            indexed = reversed(list(enumerate(item)))
            stack.extend(([*path, index], child, False) for index, child in indexed)
    return None


def loads_strict(text: str | bytes) -> Any:
    """json.loads, but NaN, Infinity, -Infinity, overflowing numbers, numbers that
    underflow to 0 (1e-400) and objects naming one member twice are refused.

    Raises json.JSONDecodeError (a ValueError) for every refusal, so callers that
    already catch it need no second except clause.
    """
    try:
        return _DECODER.decode(_document(text))
    except Refused as exc:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        # The parser does not say where the token was; its first occurrence is a
        # close enough pointer for a person reading the message.
        raise StrictRefusal(str(exc), doc, max(0, doc.find(exc.token))) from None


def is_finite_json(value: Any) -> bool:
    """True when no float anywhere inside `value` is NaN or infinite.

    Walks dicts, lists and tuples only: what a JSON document decodes to. This runs
    on every enqueue, so the common value takes the quick recursive walk; one nested
    past the recursion limit, or holding itself, takes the walk with its own stack.
    """
    try:
        return _finite(value)
    except RecursionError:
        return _finite_walked(value)


# Values _finite answers True for without a look inside: a frame each saved.
_PLAIN_LEAVES = frozenset({str, int, bool, type(None)})


def _finite(value: Any) -> bool:
    """The quick walk: plain loops and no frame for a string, int, bool or None inside,
    where `all()` over a generator cost a frame per value and one per container (about
    7,000 instructions for {"n": 1}, stop 42). It looks at the same values in the same
    order and stops at the same first NaN (tests/test_jsonstrict_finite.py)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return True
    for item in items:
        if type(item) in _PLAIN_LEAVES:
            continue
        if not _finite(item):
            return False
    return True


def _finite_walked(value: Any) -> bool:
    """is_finite_json for any depth: each container is walked once, so one that
    holds itself ends the walk there."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict | list | tuple) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return True


# The most digits an integer may have for a reader to convert it: Python's default
# limit (PYTHONINTMAXSTRDIGITS), not this process's own, which a handler may lift
# (sys.set_int_max_str_digits(0)) while the API, the CLI and clients keep the default.
READABLE_INT_DIGITS = sys.int_info.default_max_str_digits
# A run starts only after a non-digit: unanchored, the search tried again at every digit
# of a shorter run, 4,300 steps at each of 4,300 places (a result of twenty 4,300-digit
# strings, what the refusal advises returning, took 212 ms a finish; anchored, 1 ms).
_LONG_DIGIT_RUN = re.compile(f"(?<![0-9])[0-9]{{{READABLE_INT_DIGITS + 1}}}")


def holds_unreadable_int(value: Any, encoded: str) -> bool:
    """True when an integer inside `value` (a decoded JSON document, `encoded` its
    text) has more than READABLE_INT_DIGITS digits. A reader with Python's default
    limit fails on the whole document ("Exceeds the limit ... for integer string
    conversion"). The text is searched first (in C): only a document with so long a
    run of digits, in a number or a string, is walked."""
    if _LONG_DIGIT_RUN.search(encoded) is None:
        return False
    bound = 10**READABLE_INT_DIGITS
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if abs(item) >= bound:
                return True
        elif isinstance(item, dict | list):
            stack.extend(item.values() if isinstance(item, dict) else item)
    return False


# The deepest nesting pydantic's JSON parser (jiter) reads: a document whose arrays and
# objects nest deeper is refused "recursion limit exceeded" (a scalar is level 0).
MAX_NESTING = 201


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when dicts, lists and tuples inside `value` nest more than `limit` levels
    (a scalar is level 0, `[]` level 1). Walks with its own stack, to any depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth + 1 > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def deep_path(value: Any, limit: int) -> list[str | int] | None:
    """The path to the first array or object (in the text's order) nested deeper than
    `limit` (a scalar is level 0, `value` itself, a container, level 1): where a parser
    with that limit gives up. None when none is. Walks with its own stack, to any depth."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            pairs: Any = reversed(list(item.items()))
        elif isinstance(item, list | tuple):
            pairs = reversed(list(enumerate(item)))
        else:
            continue
        if len(path) + 1 > limit:
            return path
        stack.extend(([*path, step], child) for step, child in pairs)
    return None


# log10(2), rounded down: an integer of n bits has at least (n - 1) * this + 1 digits.
_DIGITS_PER_BIT = 0.30102


def json_text_over(value: Any, limit: int) -> bool:
    """True when the JSON text of `value` is surely longer than `limit` characters,
    told without writing it: a handler's `["x" * 1000] * 100_000` is one shared string
    in memory and 100 MB once encoded, and encoding it to measure it ran a worker out
    of memory.

    Counts what the encoder writes at least: a string's characters and its quotes
    (each character is one or more), an object's keys so and a colon, an integer's
    digits, a byte for any other value and one for each bracket and comma. It stops
    once past `limit`, so it walks at most `limit` values however shared or circular
    `value` is, with its own stack (a container is counted before its items are
    pushed: a list of ten million is refused, not copied). A value JSON has no form
    for counts as nothing: the encoder says what is wrong with it."""
    count = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            count += len(item) + 2
        elif isinstance(item, bool) or item is None:
            count += 4
        elif isinstance(item, int):
            bits = abs(item).bit_length()
            count += int((bits - 1) * _DIGITS_PER_BIT) + 1 if bits > 1 else 1
        elif isinstance(item, float):
            count += 1
        elif isinstance(item, dict | list | tuple):
            count += 1 + len(item)  # its brackets and commas: over already, nothing pushed
            if count > limit:
                return True
            if isinstance(item, dict):
                count += sum(len(key) + 3 if isinstance(key, str) else 3 for key in item)
                stack.extend(item.values())
            else:
                stack.extend(item)
        if count > limit:
            return True
    return False


def is_circular(value: Any) -> bool:
    """True when a dict, list or tuple inside `value` contains itself, at any depth:
    what json.dumps refuses as "Circular reference detected".

    A depth-first walk that knows the containers on its path (the current one's
    ancestors): meeting one of them again is a cycle. A container met again off
    the path is only shared (`[x, x]`), which JSON writes twice, so it is skipped.
    """
    path: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        key = id(item)
        if leaving:
            path.remove(key)
            done.add(key)
        elif isinstance(item, dict | list | tuple) and key not in done:
            if key in path:
                return True
            path.add(key)
            stack.append((item, True))  # popped once everything below it is walked
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, False) for child in children)
    return False


def finite_or_null(value: Any) -> Any:
    """A copy with every NaN or infinite float replaced by None (what JSON.stringify does)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def is_utf8(text: str) -> bool:
    """False for a str no UTF-8 spells: one holding a lone surrogate (argv bytes that
    were not UTF-8, a JSON or Lambda event escape such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def replaced_surrogates(text: str) -> str:
    """`text` with each lone surrogate made U+FFFD (the replacement character): what
    a handler's own text (an exception's message, a traceback, a log line) becomes
    before any store or answer holds it (storage.base.utf8_text, for text or None)."""
    if text.isascii() or is_utf8(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


# A path longer than this many steps at each end is shown by its first steps and its
# last (a loc too deep has 200): an answer's details.loc holds it whole.
SHOWN_STEPS = 6


def shown_path(place: list[str | int]) -> str:
    """`place` as "a.b.1" for a message, cut in the middle when long, and escaped: a
    name holding a lone surrogate would put it in the message too."""
    steps = [str(step) for step in place]
    shown = ".".join(steps)
    if len(steps) > 2 * SHOWN_STEPS:  # "a.b...(9 more)...y.z", not "b....(9 more)....y"
        cut = len(steps) - 2 * SHOWN_STEPS
        head, tail = ".".join(steps[:SHOWN_STEPS]), ".".join(steps[-SHOWN_STEPS:])
        shown = f"{head}...({cut} more)...{tail}"
    return shown.encode("utf-8", "backslashreplace").decode()


def surrogate_path(value: Any) -> list[str | int] | None:
    """The path to the first string, or object name, no UTF-8 spells (a lone surrogate:
    json.loads joins a pair into one character, so any left is unpaired); None when
    none is. Depth-first with its own stack, to any depth. A name is looked at just
    before its value, so the first in the text is the one found."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not is_utf8(item):
                return path
        elif isinstance(item, dict):
            for name, child in reversed(list(item.items())):
                stack.append(([*path, name], child))
                stack.append(([*path, name], name))  # popped first: the name, then its value
        elif isinstance(item, list):
            pairs = reversed(list(enumerate(item)))
            stack.extend(([*path, index], child) for index, child in pairs)
    return None
