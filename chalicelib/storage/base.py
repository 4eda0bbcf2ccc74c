"""The JobStore protocol: the one interface every backend implements.

Every backend passes the same contract suite (tests/contract/). The store is
the truth about each job; *delivery* (how a due job reaches a worker: polling
with wake-ups, or an SQS message) lives beside it in `Notifier`, so the
contract stays the same for SQL stores and for DynamoDB.

Rules every backend keeps:
- `add` is all or nothing; an idempotency key already seen for the same tenant
  returns the existing job (created=False) and stores nothing new.
- `claim` takes due jobs (queued/retrying with run_at <= now), highest
  priority first, then earliest run_at, moves them to running under a fresh
  lease token and counts the attempt. A running job whose lease expired is
  first *reaped*: back to retrying (due now), or to dead when that was its
  last attempt; the expired attempt counts as a failure.
- `finish` applies a completion only while the lease token still matches and
  the job is running; otherwise it returns False and changes nothing.
- Counters (enqueued, succeeded, failed, retried, dead, cancelled per queue
  and type) are updated in the same transaction as the transition, so every
  process reads the same system-wide totals.

Optional attributes a worker looks for: `notifier` (a Notifier, for prompt
wake-ups) and `concurrent_writes = True` (calls from two threads run on
separate connections, so completions may be written while a claim runs).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from chalicelib.clock import Clock
from chalicelib.errors import BadRequest
from chalicelib.models import (
    AddResult,
    Completion,
    CounterKey,
    Job,
    JobPage,
    JobQuery,
    JobState,
    NewJob,
)

MAX_LIST_LIMIT = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEASE_EXPIRED_ERROR = "lease expired: the worker stopped before finishing the attempt"


@runtime_checkable
class JobStore(Protocol):
    clock: Clock

    def add(self, jobs: Sequence[NewJob]) -> list[AddResult]: ...

    def get(self, job_id: str, tenant: str | None = None) -> Job | None: ...

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Job]:
        """Lease up to `limit` due jobs; with `ids`, only those (used by SQS delivery)."""
        ...

    def finish(self, completions: Sequence[Completion]) -> list[bool]: ...

    def extend_lease(self, job_id: str, lease_token: str, lease_seconds: float) -> bool: ...

    def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """Cancel a waiting job. Raises JobNotFound, or InvalidTransition if running/finished."""
        ...

    def list_jobs(self, query: JobQuery) -> JobPage: ...

    def redrive(self, job_ids: Sequence[str], tenant: str | None = None) -> list[Job]:
        """Move dead jobs back to queued with a fresh attempt budget; skips others."""
        ...

    def counts(self) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (queue, state)."""
        ...

    def counters(self) -> dict[CounterKey, int]: ...

    def next_due_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """When the next waiting job or lease expiry falls due, so idle workers sleep exactly."""
        ...

    def purge(self, finished_before: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` terminal jobs finished before the given time."""
        ...

    def close(self) -> None: ...


class Notifier(Protocol):
    """Wakes idle workers when work arrives (delivery, kept out of the contract)."""

    def notify(self) -> None: ...

    def wait(self, timeout: float) -> bool:
        """Block until notified or timeout; True when notified."""
        ...

    def close(self) -> None: ...


def completion_events(state: JobState) -> tuple[str, ...]:
    """The counters a completion bumps."""
    if state is JobState.SUCCEEDED:
        return ("succeeded",)
    if state is JobState.RETRYING:
        return ("failed", "retried")
    return ("failed", "dead")


def to_micros(when: datetime) -> int:
    """Exact integer microseconds since the epoch: comparable without float error."""
    return (when - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """Lists are ordered by (created_at, id); the cursor is the last pair seen."""
    raw = f"{to_micros(created_at)}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Parse an opaque cursor; a malformed one is the client's error, not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        return int(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("invalid cursor", {"cursor": cursor}) from exc


def check_limit(limit: int) -> int:
    if limit < 1 or limit > MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}", {"limit": limit})
    return limit
