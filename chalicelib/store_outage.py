"""Which store errors a long-running loop waits out, and how it waits.

The stores map the failures they know (a refused connection, a read-only
Postgres, Redis MISCONF, a locked SQLite file) to StoreUnavailable. Drivers have
more ways to fail than any list: a psycopg OperationalError of a kind not mapped,
a redis ResponseError from a proxy, a botocore error, a reset socket. A worker
that exited on one of those left its finished results unwritten and its jobs
`running` until their leases lapsed; so the worker, the webhook deliverer and
`spool serve`'s emulated worker treat ANY error from the store as an outage to
wait out, except the few that waiting cannot fix (`is_fatal`).

Authentication refused is fatal by choice: the store URL (and its password) is
read once when the process starts, so a rotated or wrong password is only
picked up by a restart; waiting would retry the same refused credentials for
ever while the operator reads "waiting" in the log. Exiting lets the
supervisor restart the process with the new setting, and says why. A Postgres
database that does not exist (dropped under the worker) or that the role may not
CONNECT to is refused the same way, every time, and ends the loops too
(storage/pg_refusals.py reads those refusals, which carry no SQLSTATE).

`Outage` turns a run of failures into two log lines (one when it starts, one
when the store is back) and bounded exponential backoff with jitter, instead
of one line (or one traceback) per poll.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chalicelib.errors import Misconfigured, StoreNotMigrated, StoreUnavailable, UncertainWrite
from chalicelib.redact import redact_text
from chalicelib.storage import pg_refusals

# Most reasons one outage says (Outage.failed): each new one once, then no more.
MAX_REASONS = 5
# Backoff between tries while the store is down: BASE doubling up to CAP seconds.
BASE = 0.05
CAP = 5.0
# Modules whose exceptions are the store's (its driver's) rather than Spool's own code.
_DRIVERS = frozenset({"sqlite3", "psycopg", "psycopg_pool", "redis", "botocore", "boto3"})
# SQLSTATE class 28: invalid authorization (a wrong password, no such role, pg_hba).
_PG_AUTH = ("28",)
# Exception classes (by name: no driver is imported here) of refused or missing credentials.
_REFUSED = frozenset({"AuthenticationError", "NoCredentialsError", "PartialCredentialsError"})
# AWS error codes that mean the credentials are refused, not that AWS is busy.
_AWS_AUTH = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "AccessDeniedException",
        "AccessDenied",
        "SignatureDoesNotMatch",
    }
)


def is_fatal(exc: BaseException) -> bool:
    """Errors that waiting cannot fix: the schema is too old or too new, a setting is
    bad, or the store refuses this process's credentials (see the module docstring)."""
    if isinstance(exc, StoreNotMigrated | Misconfigured):
        return True
    return _auth_refused(exc)


def fatal_error(exc: BaseException) -> BaseException:
    """What a loop ends with for a fatal `exc`: refused credentials said as such (the
    store's own message for them reads like any lost connection), else `exc`."""
    refusal = _refusal(exc)
    if refusal is None or isinstance(exc, StoreNotMigrated | Misconfigured):
        return exc
    if pg_refusals.refusal(refusal) == "database":
        error = StoreUnavailable(
            f"the store refused this process's connection to its database "
            f"({describe(refusal)}): fix the database in SPOOL_STORE_URL (or restore it, or "
            "grant its user CONNECT) and start it again; the URL is read only at start"
        )
    else:
        error = StoreUnavailable(
            f"the store refused this process's credentials ({describe(refusal)}): fix them "
            "(the user and password in SPOOL_STORE_URL, or the AWS credentials) and start it "
            "again; they are read only at start"
        )
    error.__cause__ = exc
    return error


def _auth_refused(exc: BaseException) -> bool:
    return _refusal(exc) is not None


def _refusal(exc: BaseException) -> BaseException | None:
    """Credentials refused or missing, seen in `exc` or what it was raised from (a
    store's StoreUnavailable wraps the driver's error: redis-py's AuthenticationError
    is a ConnectionError). A Postgres pool that cannot reconnect says only that it
    timed out (its reason goes to the psycopg.pool log), so that one is waited out."""
    for current in _raised_from(exc):  # the cause may be the driver's
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & _REFUSED:  # redis.AuthenticationError, botocore.NoCredentialsError
            return current
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_PG_AUTH):
            return current
        if pg_refusals.refusal(current) is not None:  # a refused connection: no SQLSTATE
            return current
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code in _AWS_AUTH:
                return current
    return None


def _raised_from(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (its cause, else its context), each once: a
    store wraps its driver's error, and the driver's is the one that says why."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# SQLSTATE classes of a value Postgres cannot hold (22: data exception, e.g. a NUL in
# text, 22P05 an untranslatable character; 54: a program limit, e.g. a row too big).
_PG_DATA = ("22", "54")
# AWS error codes for a request whose content DynamoDB refuses (an item over 400 KB, an
# expression too large): the same request is refused every time.
_AWS_DATA = frozenset({"ValidationException"})


def refuses_the_write(exc: BaseException) -> bool:
    """Did the store refuse what was written rather than fail to take writes? A
    refusal of the data (too big, a value it cannot hold) comes back on every try:
    waiting it out as an outage held every other outcome written with it, for
    nothing. Read in `exc` and what it was raised from (a store may wrap it)."""
    for current in _raised_from(exc):
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_PG_DATA):
            return True
        names = {(cls.__module__.split(".")[0], cls.__name__) for cls in type(current).__mro__}
        if ("sqlite3", "DataError") in names:  # "string or blob too big"
            return True
        response = getattr(current, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in _AWS_DATA:
            return True
    return False


def is_store_error(exc: BaseException) -> bool:
    """Did this come from the store (its driver, its socket), not from Spool's own code?
    The HTTP edge answers these 503 rather than 500."""
    if isinstance(exc, StoreUnavailable | ConnectionError | TimeoutError):
        return True
    return any(cls.__module__.split(".")[0] in _DRIVERS for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """One line for the log: the store's own message, or the error's class and text,
    with anything shaped like a password or a URL's credentials masked."""
    if isinstance(exc, StoreUnavailable):
        return exc.message
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return redact_text(f"{name}: {text}" if text else name)


@contextmanager
def lost_write(call: str, then: str) -> Iterator[None]:
    """Say a write whose reply was lost (UncertainWrite) as a loop's operator reads it:
    which `call` it was and what becomes of its jobs (`then`). The store's message is
    advice for whoever sent a request ("check its state before retrying (an enqueue is
    safe to retry with the same idempotency_key)"), and a worker's log carried it as it
    was, where the operator has no request to retry and was not told the jobs' fate.
    Raised from the store's error, so what reads its cause (is_fatal) still sees it."""
    try:
        yield
    except UncertainWrite as exc:
        raise StoreUnavailable(
            f"{call}: {exc.reason}, so it may have been applied; {then}", exc.retry_after
        ) from exc


class Outage:
    """One store outage at a time, as a loop sees it: logs its start once and its end
    once, and hands out the pause before the next try (exponential, jittered, at most
    CAP seconds). Thread-safe: the dispatcher, the flusher and pool threads share one."""

    def __init__(
        self,
        log: logging.Logger,
        what: str = "the worker",
        rng: random.Random | None = None,
        timer: Callable[[], float] = time.monotonic,
        cap: float = CAP,
    ) -> None:
        self.log = log
        self.what = what
        self.rng = rng or random.Random()
        self.timer = timer
        self.cap = cap
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        # The reasons this outage has given, each said once: its first line named only
        # the first, and an endpoint back without its queue or table (a restarted
        # moto_server, a deleted queue) then failed for a new reason no wait fixes, in
        # silence. Capped, so a reason carrying something new each time stays quiet.
        self._reasons: set[str] = set()

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, holding: int = 0, stopping: str | None = None) -> float:
        """Note a failed store call; the seconds to wait before the next try.

        `stopping`: what the loop does instead of waiting the outage out, when it is
        on its way out (a stop asked): "waits it out" was not true of a worker told
        to stop, whose next lines were its exit."""
        reason = describe(exc)
        with self._lock:
            first = self._since is None
            if first:
                self._since = self.timer()
                self._reasons = {reason}
            new = reason not in self._reasons and len(self._reasons) < MAX_REASONS
            if new:
                self._reasons.add(reason)
            self._failures += 1
            ceiling = min(self.cap, BASE * 2.0 ** min(self._failures - 1, 30))
        if new:
            self.log.warning(
                "store still unavailable, now for another reason (%s): %s waits it out",
                reason,
                self.what,
                exc_info=None if is_store_error(exc) else exc,
            )
        if first and stopping is not None:
            held = f" ({holding} finished results held)" if holding else ""
            self.log.warning(
                "store unavailable (%s) while %s stops: %s%s",
                reason,
                self.what,
                stopping,
                held,
                exc_info=None if is_store_error(exc) else exc,
            )
        elif first:
            held = f"; {holding} finished results held until it is back" if holding else ""
            self.log.warning(
                "store unavailable (%s): %s waits it out, retrying with backoff up to %gs%s",
                reason,
                self.what,
                self.cap,
                held,
                exc_info=None if is_store_error(exc) else exc,  # Spool's own bug: show where
            )
        # "Equal jitter": never less than half the ceiling, so a down store is not
        # hammered by a near-zero draw, and many workers do not retry in step.
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def recovered(self) -> None:
        """A store call succeeded: if an outage was on, say it is over (once)."""
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
            failures, self._failures = self._failures, 0
        if since is not None:
            self.log.warning(
                "store is back after %.1fs (%d tries failed); %s carries on",
                self.timer() - since,
                failures,
                self.what,
            )


class Quiet:
    """A store's own line per failed call, quietened: the first failure of a run at
    WARNING, the rest at DEBUG until a call succeeds. The loops above say the outage
    once (Outage); a line per retry from the store beneath them was the noise that
    buried the log for as long as the store was down. A lost race (two threads
    failing at once) costs at most one extra line."""

    def __init__(self) -> None:
        self._failing = False

    def level(self) -> int:
        first = not self._failing
        self._failing = True
        return logging.WARNING if first else logging.DEBUG

    def ok(self) -> None:
        if self._failing:
            self._failing = False
