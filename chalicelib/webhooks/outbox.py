"""What a webhook delivery is, as every store keeps it in its outbox.

Stores import this module (no other webhook module), so it stays small and
free of HTTP: the rules the stores keep are in chalicelib/storage/base.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from chalicelib.models import JobState

PENDING = "pending"  # waiting for its next attempt, or being attempted under a lease
DELIVERED = "delivered"  # the receiver answered 2xx
FAILED = "failed"  # its attempts ran out, or the URL can never be reached
DELIVERY_STATES = (PENDING, DELIVERED, FAILED)
# What JobStore.webhook_counts counts: the deliveries an operator watches. Delivered
# ones are the normal case (up to KEPT_FINISHED per job), so no store counts them.
COUNTED = (PENDING, FAILED)

# How an attempt ended, as `JobStore.finish_webhook` takes it.
RETRYING = "retrying"  # stays pending, due again at retry_at
OUTCOMES = (DELIVERED, RETRYING, FAILED)

# A job keeps its newest N delivered or failed deliveries (SPOOL_WEBHOOK_HISTORY; by
# default as many as the attempt history keeps); each new delivery's write drops older
# finished ones, so a job cycled dead -> redrive -> dead cannot grow its outbox without
# limit. Pending ones (owed to the receiver, or in flight under a lease) are never dropped.
_SETTING = "SPOOL_WEBHOOK_HISTORY"
KEPT_FINISHED = 25  # the default
# At most: DynamoDB lists a job's delivery ids in its item (about 37 bytes each), and
# reads them all at each terminal transition once there are more than N.
MAX_KEPT_FINISHED = 100

ID_PREFIX = "msg_"
MAX_ERROR_CHARS = 500


def kept_finished(env: Mapping[str, str] | None = None) -> int:
    """SPOOL_WEBHOOK_HISTORY: how many finished deliveries a store keeps per job.

    Stores are opened from a URL alone, so they read the variable themselves (as
    SPOOL_ATTEMPT_HISTORY); a bad value is a ConfigError naming it as the store opens,
    so `spool serve`, `spool worker` and a Lambda refuse to start on it."""
    from chalicelib.config import Settings  # here since config imported the stores (no more)

    source = os.environ if env is None else env
    settings = Settings(extra={name: value for name, value in source.items() if name == _SETTING})
    return settings.integer("SPOOL_WEBHOOK_HISTORY", KEPT_FINISHED, 1, MAX_KEPT_FINISHED)


def new_delivery_id() -> str:
    """The webhook-id header: unique per delivery, the same on every retry of it."""
    return ID_PREFIX + secrets.token_hex(16)


def event_for(state: JobState | str) -> str:
    """The event type a terminal state announces: job.succeeded, job.dead, job.cancelled."""
    value = state.value if isinstance(state, JobState) else state
    return f"job.{value}"


def short_error(error: str | None) -> str | None:
    """An attempt's error as kept with the delivery: its start, bounded."""
    if error is None:
        return None
    return error[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class Delivery:
    """One webhook for one terminal transition of a job.

    A job that reaches a terminal state twice (dead, redriven, dead again) has
    two deliveries, each with its own id.
    """

    id: str
    job_id: str
    tenant: str
    url: str
    event: str  # event_for(the terminal state)
    state: str  # one of DELIVERY_STATES
    attempts: int  # counted when claimed
    next_at: datetime | None  # when it is due (pending); None once delivered or failed
    created_at: datetime
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
