"""Attempt history and worker beats: the shapes every store writes and reads.

Each store keeps a job's last N attempts (SPOOL_ATTEMPT_HISTORY, default 25)
beside the job, appended in the same write as the transition they explain.
The SQL stores and DynamoDB keep them as compact JSON, one object per
attempt, in the form this module encodes; times are integer microseconds so
they come back exactly as written, on every store.

An entry is held to a size (MAX_ENTRY_BYTES, less on DynamoDB where the whole
item must fit in 400 KB): a traceback keeps its end (the frame that raised and
the message), an error message its start, a log tail its last lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.config import Settings
from chalicelib.models import Attempt, short_error_type
from chalicelib.storage.base import LEASE_EXPIRED_ERROR, from_micros, to_micros

_SETTING = "SPOOL_ATTEMPT_HISTORY"
DEFAULT_ATTEMPT_HISTORY = 25
MAX_ATTEMPT_HISTORY = 1000
# One entry at most: a store's own bound, whatever a worker was told (SPOOL_TRACEBACK_BYTES).
MAX_ENTRY_BYTES = 16 * 1024
# Worker beats older than this are deleted when another beat is written (SQL stores)
# or expire by TTL (DynamoDB): live_workers never looks back further.
BEAT_RETENTION_SECONDS = 24 * 3600
UNKNOWN_WORKER = "unknown"
LEASE_EXPIRED = "lease_expired"
TRIMMED = "[... {n} characters trimmed ...]\n"

# ASCII JSON: NUL and lone surrogates travel as \u escapes every store can hold.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def history_limit(env: Mapping[str, str] | None = None) -> int:
    """SPOOL_ATTEMPT_HISTORY: how many attempts a store keeps per job (the last N).

    Stores are opened from a URL alone, so they read the variable themselves.
    """
    source = os.environ if env is None else env
    settings = Settings(extra={name: value for name, value in source.items() if name == _SETTING})
    return settings.integer(
        "SPOOL_ATTEMPT_HISTORY", DEFAULT_ATTEMPT_HISTORY, 1, MAX_ATTEMPT_HISTORY
    )


def keep_tail(text: str, max_chars: int) -> str:
    """The end of `text` in at most max_chars (for a traceback: where it was raised)."""
    if len(text) <= max_chars:
        return text
    marker_room = len(TRIMMED.format(n=len(text))) + 1
    if max_chars <= marker_room:
        return text[-max_chars:] if max_chars > 0 else ""
    kept = max_chars - marker_room
    return TRIMMED.format(n=len(text) - kept) + text[len(text) - kept :]


def keep_head(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)] + "…"


def _same(text: str) -> str:
    return text


def encode(attempt: Attempt, escape: Callable[[str], str] = _same, seq: int | None = None) -> str:
    """One attempt as compact JSON. `escape` maps text a store cannot hold (Postgres:
    NUL, lone surrogates); `seq` is DynamoDB's position in its ring of slots.

    Written out by hand: it runs once per finish, and this is about three times
    cheaper than building a dict for json to encode."""
    parts = [
        f'{{"n":{attempt.number:d},"s":{to_micros(attempt.started_at):d},'
        f'"f":{to_micros(attempt.finished_at):d},"w":{_dumps(escape(attempt.worker))},'
        f'"o":{_dumps(attempt.outcome)}'
    ]
    if attempt.error_type is not None:
        parts.append(f',"et":{_dumps(escape(attempt.error_type))}')
    if attempt.error is not None:
        parts.append(f',"e":{_dumps(escape(attempt.error))}')
    if attempt.traceback is not None:
        parts.append(f',"tb":{_dumps(escape(attempt.traceback))}')
    if attempt.next_delay is not None:
        parts.append(f',"d":{_dumps(float(attempt.next_delay))}')
    if attempt.log_tail:
        parts.append(f',"lt":{_dumps([escape(line) for line in attempt.log_tail])}')
    if seq is not None:
        parts.append(f',"q":{seq:d}')
    parts.append("}")
    return "".join(parts)


def encode_within(
    attempt: Attempt,
    max_bytes: int = MAX_ENTRY_BYTES,
    escape: Callable[[str], str] = _same,
    seq: int | None = None,
) -> str:
    """encode(fit(attempt)), encoding only once when it already fits (the usual case)."""
    text = encode(attempt, escape, seq)
    if len(text) <= max_bytes:
        return text
    return encode(fit(attempt, max_bytes), escape, seq)


def decode(data: str | Mapping[str, Any], unescape: Callable[[str], str] = _same) -> Attempt:
    raw: Mapping[str, Any] = json.loads(data) if isinstance(data, str) else data

    def opt(key: str) -> str | None:
        value = raw.get(key)
        return None if value is None else unescape(str(value))

    delay = raw.get("d")
    return Attempt(
        number=int(raw["n"]),
        started_at=from_micros(int(raw["s"])),
        finished_at=from_micros(int(raw["f"])),
        worker=unescape(str(raw.get("w") or UNKNOWN_WORKER)),
        outcome=str(raw["o"]),
        error_type=opt("et"),
        error=opt("e"),
        traceback=opt("tb"),
        next_delay=None if delay is None else float(delay),
        log_tail=tuple(unescape(str(line)) for line in raw.get("lt") or ()),
    )


def decode_all(
    entries: Iterable[str | Mapping[str, Any]] | None,
    limit: int,
    unescape: Callable[[str], str] = _same,
) -> list[Attempt]:
    """Stored entries, oldest first, the last `limit` of them (a lowered limit applies
    at once to reads, and to what is stored as new attempts arrive)."""
    attempts = [decode(e, unescape) for e in entries or ()]
    return attempts[-limit:] if limit else []


def size(attempt: Attempt) -> int:
    return len(encode(attempt))


def _encoded(text: str) -> int:
    return len(_dumps(text))


def _shrink(text: str, budget: int, trim: Callable[[str, int], str]) -> str:
    """`text` trimmed (by `trim`, keeping its head or tail) until its JSON takes
    at most `budget` bytes; escapes make that up to 12 bytes a character."""
    chars = len(text)
    while chars > 0 and _encoded(text) > budget:
        chars = min(chars - 1, max(0, budget - 2), len(text) * budget // _encoded(text))
        text = trim(text, chars)
    return text


def fit(attempt: Attempt, max_bytes: int = MAX_ENTRY_BYTES) -> Attempt:
    """The attempt shrunk to encode in at most about max_bytes.

    The error type keeps its start (models.short_error_type), the error
    message up to a quarter (its start), the log tail a quarter (its last lines),
    the traceback the rest (its end: the frame that raised and the exception's
    own line).
    """
    from dataclasses import replace

    if size(attempt) <= max_bytes:
        return attempt
    if attempt.error_type is not None:
        # The worker cuts it (models.error_type_name); held here too, as the entry's own
        # bound: kept whole, a 2 MB name put a DynamoDB item past 400 KB.
        attempt = replace(attempt, error_type=short_error_type(attempt.error_type))
    quarter = max(64, max_bytes // 4)
    error = attempt.error
    if error is not None and _encoded(error) > quarter:
        error = _shrink(error, quarter, keep_head)
    lines = list(attempt.log_tail)
    while lines and _encoded("".join(lines)) + 3 * len(lines) > quarter:
        lines.pop(0)
    attempt = replace(attempt, error=error, log_tail=tuple(lines))
    if attempt.traceback is not None:
        rest = size(replace(attempt, traceback=None)) + len(',"tb":')
        budget = max(0, max_bytes - rest)
        traceback = _shrink(attempt.traceback, budget, keep_tail)
        attempt = replace(attempt, traceback=traceback or None)
    return attempt


def lease_expired(
    number: int,
    started_at: datetime | None,
    expired_at: datetime,
    worker: str | None,
    dead: bool,
) -> Attempt:
    """The attempt a reap records: the worker holding the lease stopped answering.

    It ends at the lease's expiry (how long the worker held the job); a job that
    goes back to retrying is due at once (next_delay 0), a dead one never.
    """
    return Attempt(
        number=number,
        started_at=started_at or expired_at,
        finished_at=expired_at,
        worker=worker or UNKNOWN_WORKER,
        outcome=LEASE_EXPIRED,
        error=LEASE_EXPIRED_ERROR,
        next_delay=None if dead else 0.0,
    )


def queues_text(queues: Sequence[str] | None) -> str | None:
    """A worker's queues as stored: JSON, or None for every queue."""
    return None if queues is None else _dumps(list(queues))


def queues_of(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))
