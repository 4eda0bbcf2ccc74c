"""Errors the engine raises; the HTTP edge maps each to one status code."""

from __future__ import annotations

import math
from typing import Any

from chalicelib.retry import retry_after_seconds


class SpoolError(Exception):
    """Base class: carries a stable machine-readable code and optional details."""

    code = "spool_error"
    status = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(SpoolError):
    code = "bad_request"
    status = 400


class Unauthorized(SpoolError):
    code = "unauthorized"
    status = 401


class JobNotFound(SpoolError):
    code = "not_found"
    status = 404


class InvalidTransition(SpoolError):
    """The job exists but is in a state where the operation makes no sense."""

    code = "conflict"
    status = 409


class IdempotencyConflict(SpoolError):
    """An idempotency key already names a job that differs from what was asked now.

    Returning that job would tell the client its new request was accepted when
    it was not; storing a second job would break the key's promise. details
    carry the existing job's id so the client can look at it.
    """

    code = "idempotency_conflict"
    status = 409


class PayloadTooLarge(SpoolError):
    code = "payload_too_large"
    status = 413


class RateLimited(SpoolError):
    """Over a limit a wait lifts: 429, with Retry-After in whole seconds (at least 1).
    Here, not at the HTTP edge that raises most of them, so the service can tell the
    refusal of a redrive's tokens (api/throttle.py's redrive_charge) from a store's
    failure."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float, details: object = None) -> None:
        super().__init__(message, details)
        self.retry_after = max(1, math.ceil(retry_after))


class ValidationFailed(SpoolError):
    code = "validation_error"
    status = 422


class UnknownJobType(ValidationFailed):
    code = "unknown_job_type"


# What follows "unknown job type 'T'" in an HTTP answer for a type no known one is close
# to (chalicelib/handlers.py unknown_type): curl users had only the name. The command
# lines cut the message here and say the fix in their own terms, once.
UNKNOWN_TYPE_FIX_START = ": no handler is registered for it"


class JobUnreadable(SpoolError):
    """A job's stored record cannot be read (edited by hand into a bad shape, written
    by a broken release): the server's fault, not the request's, and not a passing
    outage either (retrying the same read gives the same answer). The message names
    the job and what is wrong with its record, never its payload."""

    code = "job_unreadable"
    status = 500
    # What is wrong, in a line (stored_rows.damaged sets it): a claim that buries the
    # job names it in last_error, as get does (a time named by its column).
    reason = ""


# What a 503 says when a write's reply was lost: the store may have applied it, so a
# client retrying it blindly (an enqueue without an idempotency key) may make it twice.
UNCERTAIN_ADVICE = (
    "check its state before retrying (an enqueue is safe to retry with the same idempotency_key)"
)


class StoreUnavailable(SpoolError):
    """The backing store cannot be reached; callers should retry later.

    `public`, when given, is what an HTTP client is told instead of `message`, which
    is for the operator (the log, the CLI) and names what clients have no business
    knowing: a file's path on the server. Anyone may ask /health, without a key."""

    code = "store_unavailable"
    status = 503

    def __init__(
        self, message: str, retry_after: int = 5, details: Any = None, public: str | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after
        self.public = public


class UncertainWrite(StoreUnavailable):
    """A write whose reply was lost: the store may have applied it. Its message is for
    whoever sent the request (the API's 503, the command line): check, or retry an
    enqueue with its idempotency key. `reason` is what happened without that advice:
    a worker, which sent no request, says what becomes of its jobs instead
    (store_outage.lost_write)."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(
            f"{reason}, so this change may have been applied: {UNCERTAIN_ADVICE}", retry_after
        )
        self.reason = reason


class Misconfigured(SpoolError):
    """A setting is malformed, so the server cannot answer; its log names which."""

    code = "misconfigured"
    status = 503

    def __init__(
        self,
        message: str = "the server is misconfigured: its operator must fix a setting "
        "(the server's log names it)",
    ) -> None:
        super().__init__(message)

    @classmethod
    def setting(cls, why: object) -> Misconfigured:
        """A malformed setting found while admitting a job: the server's to fix, not the
        job's (a 503, where a refusal of the payload would be a 422 saying "fix the job")."""
        return cls(f"{why}: the server's operator must fix it; nothing was stored")


class StoreNotMigrated(SpoolError):
    code = "store_not_migrated"
    status = 503


# Raised by handlers ---------------------------------------------------------


class PermanentError(Exception):
    """A handler raises this when retrying cannot help: the job goes straight to dead."""


class RetryAfter(Exception):
    """A handler raises this to be retried after a specific delay, not the backoff."""

    def __init__(self, seconds: float, message: str = "") -> None:
        self.seconds = retry_after_seconds(seconds)  # TypeError/ValueError: see there
        super().__init__(message or f"retry requested after {seconds}s")

    def __reduce__(self) -> tuple[type[RetryAfter], tuple[float, str]]:
        # Exception's own reduce would call RetryAfter(message), refused as no number.
        return type(self), (self.seconds, str(self))
