"""Spool's Python client: talk to a Spool API over HTTP, nothing of the server imported.

    from spool_client import Client

    with Client("http://127.0.0.1:8000", "my-key") as spool:
        job = spool.enqueue("echo", {"hello": "world"})
        print(spool.wait(job.id, timeout=30).result)

Client (sync) and AsyncClient (asyncio) have one method per route; retries of
connection failures, 429 and 503 are built in, and every enqueue carries an
idempotency key, so a retry never makes a second job. Errors are typed by the
API's error code (spool_client.errors). `verify` checks a completion webhook's
signature (spool_client.webhooks). See docs/client.md.
"""

from __future__ import annotations

from spool_client.aio import AsyncClient
from spool_client.calls import JobSpec
from spool_client.client import Client
from spool_client.errors import (
    AnswerTooLarge,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
    SpoolClientError,
    StoreNotMigrated,
    StoreUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    UnknownJobType,
    ValidationFailed,
    WaitTimeout,
)
from spool_client.models import Enqueued, Job, Page, Redriven
from spool_client.retry import NO_RETRY, RetryPolicy
from spool_client.webhooks import WebhookVerificationError, verify

__all__ = [
    "NO_RETRY",
    "AnswerTooLarge",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Enqueued",
    "Forbidden",
    "IdempotencyConflict",
    "Job",
    "JobSpec",
    "Misconfigured",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Redriven",
    "RequestTimeout",
    "RetryPolicy",
    "ServerError",
    "SpoolClientError",
    "StoreNotMigrated",
    "StoreUnavailable",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "UnknownJobType",
    "ValidationFailed",
    "WaitTimeout",
    "WebhookVerificationError",
    "verify",
]
