"""One exception class per error code the Spool API answers with.

The server's errors all have one shape, `{"error": {"code", "message", "details"}}`;
`error_for` turns a response into the class named by its code (or, for a code
this client does not know yet, by its HTTP status), so callers catch what they
mean (`except NotFound`) instead of comparing status numbers.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any


class SpoolClientError(Exception):
    """Base class of everything this package raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its class, message and attributes, rebuilt without `__init__`.

        Exception's own pickling calls the class with the message alone, and most of
        these take more (TransportError its tries, ApiError its status and code): a
        multiprocessing pool handed one back from its worker failed to unpickle it in
        its result thread, which died, and the caller waited for ever."""
        return (_rebuilt, (type(self), self.args, dict(vars(self))))


def _rebuilt(kind: type[SpoolClientError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """A SpoolClientError from what its __reduce__ kept."""
    error = kind.__new__(kind, *args)  # BaseException.__new__ sets .args
    vars(error).update(state)
    return error


class TransportError(SpoolClientError):
    """The server could not be reached (or went away mid-request) on every try.

    reached: the last try connected but no whole answer came within the timeout (a
    server too busy or stuck to answer, not one that is down): its message says
    "reached ..., but", not "cannot reach"."""

    def __init__(self, message: str, attempts: int, *, reached: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.reached = reached


class WrongType(TypeError):
    """A field of an answer holds JSON of another type (models.py raises it, and
    UnexpectedResponse.shape names it). The message names the field and never repeats
    its value: what a server sends may echo the API key."""


class UnexpectedResponse(SpoolClientError):
    """A success status whose body is not the JSON the route answers: the URL is
    probably not a Spool server (or a proxy answered for it)."""

    def __init__(self, status: int | None, content_type: str, url: str, problem: str = "") -> None:
        kind = content_type or "no content type"
        what = problem or f"answered {status} ({kind}), not Spool's JSON"
        super().__init__(f"{url} {what}: is it a Spool server's address?")
        self.status = status

    @classmethod
    def shape(cls, kind: str, exc: Exception) -> UnexpectedResponse:
        """A JSON answer without the fields of `kind` (another service's JSON at that URL)."""
        if isinstance(exc, KeyError):
            problem = f"missing {exc}"
        elif isinstance(exc, WrongType):  # its text names the field
            problem = str(exc)
        else:
            problem = type(exc).__name__
        what = f"answered JSON that is not {kind} ({problem})"
        return cls(None, "application/json", "the server", what)


class AnswerTooLarge(SpoolClientError):
    """An answer longer than the client's `max_answer_bytes`, refused as it streamed in
    (or at once when its Content-Length said so), never retried: no route answers that
    much, so the URL is probably not a Spool server, or the server misbehaves."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(
            f"{url} sent an answer of more than {limit} bytes, the client's max_answer_bytes: "
            "is it a Spool server's address? (pass a larger max_answer_bytes if it is)"
        )
        self.url = url
        self.limit = limit


class WaitTimeout(SpoolClientError):
    """`wait()` ran out of time before the job finished; `.job` is its last state,
    None when the server gave no answer in time (`.job_id` names the job either way)."""

    def __init__(self, job: Any, timeout: float, job_id: str | None = None) -> None:
        if job is None:
            message = f"job {job_id}: the server gave no answer within {timeout:g}s"
        else:
            message = f"job {job.id} is still {job.state} after {timeout:g}s"
        super().__init__(message)
        self.job = job
        self.job_id: str | None = job.id if job is not None else job_id
        self.timeout = timeout


class ApiError(SpoolClientError):
    """The server refused the request: its status, stable code, message and details."""

    code = "error"

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        # Set by the client: an earlier try of this request may have reached the
        # server (it failed without an answer, or with a 5xx), so its work may be done.
        self.retried_after_send = False


class BadRequest(ApiError):
    """400: the body is not JSON, a cursor is malformed, a number is not finite."""


class Unauthorized(ApiError):
    """401: no API key, or one the server does not know."""

    # Set by the client that sent no key: the server's "send it in the X-API-Key
    # header" names a header a client's caller never writes.
    keyless = False

    def __str__(self) -> str:
        if not self.keyless:
            return super().__str__()
        return (
            f"{super().__str__()} (this client sends no API key: give it as "
            "Client(url, key) or in SPOOL_API_KEY)"
        )


class Forbidden(ApiError):
    """403: a valid key that this route does not accept (a tenant key on /metrics)."""


# What a URL with a path the server does not serve (`http://host:8000/ui`) is told to
# be instead; the `spool` CLI's hint for --url says it in these words too.
BASE_ADDRESS = "the server's base address, the one under which /health answers"


class NotFound(ApiError):
    """404: no such job for this key's tenant (another tenant's job looks the same),
    or no such route: the client's URL has a path the server does not serve."""

    @property
    def no_route(self) -> bool:
        """True when no route matched: a job not found names its id in details."""
        return not isinstance(self.details, dict) or self.details.get("id") is None

    def __str__(self) -> str:
        # "no route for POST /ui/enqueue" alone left the caller to guess the cause.
        if not self.no_route:
            return super().__str__()
        return f"{super().__str__()} (check that the client's URL is {BASE_ADDRESS})"


class RequestTimeout(ApiError):
    """408: the request did not arrive whole in time."""


class Conflict(ApiError):
    """409: the job is in a state where the operation makes no sense (cancel a
    running job, redrive one that is not dead)."""


class IdempotencyConflict(Conflict):
    """409: the idempotency key already names a different job (details name it)."""


class PayloadTooLarge(ApiError):
    """413: the body, or the batch, is over the server's limit (details say which)."""


class ValidationFailed(ApiError):
    """422: the job (or a query parameter) is invalid; details say where."""

    def __str__(self) -> str:
        # "the job is invalid" alone sent readers of a traceback to .details.
        return f"{self.status} {self.code}: {validation_problem(self.message, self.details)}"


SHOWN_PROBLEMS = 3
# How alike a misspelt type and a known one must be to be offered: the server's own
# cutoff (chalicelib/handlers.py CLOSE_TYPE_CUTOFF).
CLOSE_TYPE_CUTOFF = 0.6


def validation_problem(message: str, details: Any, where: str = "payload") -> str:
    """A refusal's message and its first few errors on one line. The first alone hid
    the one that explains it: a misspelt field is "width: Field required" first and
    "widht: Extra inputs are not permitted" second."""
    errors = details.get("errors") if isinstance(details, dict) else details
    if not isinstance(errors, list):
        return message
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        if "loc" in error:
            parts.append(_located(error, where))
        elif "index" in error:  # a batch: one entry per refused job, its own first error
            index, inner = error.get("index"), error.get("details")
            said = error.get("message")
            if isinstance(inner, list) and inner and isinstance(inner[0], dict):
                said = _located(inner[0], "job", skip=["jobs", index])
            parts.append(f"job {index}: {said}")
    if not parts:
        return message
    more = len(parts) - SHOWN_PROBLEMS
    shown = "; ".join(parts[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return f"{message} ({shown})"


def _located(error: Mapping[str, Any], where: str, skip: Sequence[Any] = ()) -> str:
    """`place: what` for one error; its place less a leading `skip` (a batch entry's
    own `jobs.N`), or `where` when nothing is left."""
    loc = error.get("loc")
    # A list as the API sends it; any other value (a number, true) is one place, not
    # something to iterate: list(5) raised in __str__, and the error had no text.
    place = list(loc) if isinstance(loc, list | tuple) else ([] if loc is None else [loc])
    if skip and place[: len(skip)] == list(skip):
        place = place[len(skip) :]
    return f"{'.'.join(str(p) for p in place) or where}: {error.get('msg')}"


class UnknownJobType(ValidationFailed):
    """422: no handler is registered for this job type."""

    def __str__(self) -> str:
        # The answer lists the server's types in details; a traceback showed only
        # "unknown job type 'adds'", leaving a misspelling to be guessed at.
        known = self.details.get("known") if isinstance(self.details, dict) else None
        if not isinstance(known, list):
            return super().__str__()
        names = [str(name) for name in known]
        listed = ", ".join(names) or "none"
        return (
            f"{self.status} {self.code}: {self.message}{self._guess(names)} "
            f"(this server's types: {listed}; "
            "a type of your own needs the module that registers it on the server's "
            "SPOOL_HANDLERS)"
        )

    def _guess(self, known: list[str]) -> str:
        """The hint ("; did you mean 'send_email'?") when one known type is close to the
        one sent and the server (one older than the hint) did not already give it."""
        sent = self.details.get("type") if isinstance(self.details, dict) else None
        if not isinstance(sent, str) or "did you mean" in self.message:
            return ""
        close = difflib.get_close_matches(sent, known, n=1, cutoff=CLOSE_TYPE_CUTOFF)
        return f"; did you mean {close[0]!r}?" if close else ""


class TooManyRequests(ApiError):
    """429: too many long-polls held at once (retried after Retry-After)."""


class ServerError(ApiError):
    """500 and other 5xx the server did not explain."""


class Unavailable(ApiError):
    """503: the server cannot answer now (its store is down); retried after Retry-After."""


class StoreUnavailable(Unavailable):
    """503: the store cannot be reached."""


class Misconfigured(Unavailable):
    """503: a server setting is malformed; its operator must fix it."""


class StoreNotMigrated(Unavailable):
    """503: the Postgres schema needs `spool db migrate`."""


BY_CODE: dict[str, type[ApiError]] = {
    "bad_request": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "request_timeout": RequestTimeout,
    "conflict": Conflict,
    "idempotency_conflict": IdempotencyConflict,
    "payload_too_large": PayloadTooLarge,
    "validation_error": ValidationFailed,
    "unknown_job_type": UnknownJobType,
    "too_many_waits": TooManyRequests,
    "store_unavailable": StoreUnavailable,
    "keys_unavailable": StoreUnavailable,
    "misconfigured": Misconfigured,
    "store_not_migrated": StoreNotMigrated,
    "internal_error": ServerError,
}

BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: TooManyRequests,
    503: Unavailable,
}


def error_for(
    status: int, body: Any, retry_after: float | None = None, reason: str = ""
) -> ApiError:
    """The typed error for a refusal; a body not in Spool's shape (a proxy's HTML
    page) still gives the right class by status, with its reason phrase as message."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message") or code)
        details = error.get("details")
    else:
        code = f"http_{status}"
        message = reason or f"HTTP {status}"
        details = None
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, message, details, retry_after)
