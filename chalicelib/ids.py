"""Job ids: "j_" and 32 hex digits, the first 12 a millisecond clock, the last 20 random.

The clock in front puts a new id at the end of every index on `id` (SQLite's and
Postgres's primary keys), so an insert touches the last leaf page instead of a random
one: a batch of random ids dirtied a page per job and wrote each to the WAL, ~30% of a
batch's add (bench notes in docs/benchmarks.md). The 80 random bits behind it are what
make an id unguessable (more than the 64 bits OWASP asks of a session id); what the
clock part reveals is when the job was made, to the millisecond, which its status
shows its owner anyway.
"""

from __future__ import annotations

import os
import secrets
import time

ID_PREFIX = "j_"
_HEX = frozenset("0123456789abcdef")


def new_job_id() -> str:
    millis = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF  # 48 bits: ~8,900 years
    # os.urandom(10).hex() is what secrets.token_hex(10) returns (token_bytes is
    # SystemRandom.randbytes, which is os.urandom), without its three Python frames.
    return f"{ID_PREFIX}{millis:012x}{os.urandom(10).hex()}"


def new_job_ids(count: int) -> list[str]:
    """Ids for one batch, ascending: lists order a batch's jobs, which share their
    `created_at`, by id, and so show them in the order they were sent, not at random."""
    if count == 1:  # a single enqueue: nothing to sort
        return [new_job_id()]
    return sorted(new_job_id() for _ in range(count))


def new_lease_token() -> str:
    return secrets.token_hex(8)


def looks_like_job_id(value: str) -> bool:
    """Any "j_" and 32 lowercase hex digits: ids made before the clock part too."""
    body = value[len(ID_PREFIX) :]
    return value.startswith(ID_PREFIX) and len(body) == 32 and _HEX.issuperset(body)
