"""When a failed request is tried again, and after how long.

Retried: a connection that failed or broke (the request may or may not have
reached the server), 429 (too many waits), and 502/503/504 (the server or its
store is briefly down), except a 503 `misconfigured`: a malformed server setting
answers every request the same until its operator fixes it. Retrying is safe
for every call this client makes: reads change nothing, every enqueue carries an
idempotency key (a second try of a write that did commit gets the same job back,
never a second one), and a cancel or redrive whose retry finds the work already
done settles on the job as it stands (see client.py). Anything else (a 4xx, a
500) is an answer and is raised at once.
"""

from __future__ import annotations

import math
import random
import re
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Error codes of a retried status that no retry changes: raised at once, not after
# a minute of backoff (Client().health() against a misconfigured server took ~30 s).
PERMANENT_CODES = frozenset({"misconfigured"})

# Failures that happen before a byte of the request left this machine: the
# server cannot have acted on it. Every other transport failure is ambiguous.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request itself is wrong (a bad URL scheme, a header httpx cannot write):
# no retry can help.
_HOPELESS: tuple[type[Exception], ...] = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by tries and by time.

    attempts: tries in all, the first included (1 turns retrying off).
    base, cap: the n-th retry waits about base * 2**(n-1) seconds, at most cap,
        jittered between half and all of that, so many clients that failed
        together do not come back together.
    deadline: no retry starts later than this many seconds after the first try,
        so a request ends within deadline + the client's timeout (which bounds
        each try as a whole; a long-poll's wait on top).
    max_retry_after: a Retry-After longer than this is not waited for; the
        error is raised with its `retry_after` for the caller to decide.
    """

    attempts: int = 8
    base: float = 0.25
    cap: float = 5.0
    deadline: float = 60.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        # Checked here: a NaN or negative value would retry at once forever, or crash
        # time.sleep() in the middle of a retry.
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError("attempts is a whole number of tries")
        if self.attempts < 1:
            raise ValueError("attempts counts the first try too: at least 1")
        for name in ("base", "cap", "deadline", "max_retry_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} is a number of seconds, 0 or more")
        if self.base > self.cap:
            # base=10 under the default cap of 5 (or the pair the wrong way round) read as
            # "wait 10 s first", but every wait was the cap: the base meant nothing.
            raise ValueError(
                f"base {self.base:g}s is more than cap {self.cap:g}s: every wait would be "
                "the cap; raise cap too, or lower base"
            )

    def backoff(self, retry: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)

    def delay(self, tries: int, started: float, retry_after: float | None) -> float | None:
        """Seconds to sleep before the next try, or None to stop: `tries` were made
        so far, the first at `started` (time.monotonic)."""
        if tries >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        # A Retry-After is waited out, but never less than the backoff: a server that
        # says 0 (or a date in the past) every time is not hammered in a tight loop.
        wait = self.backoff(tries) if retry_after is None else max(retry_after, self.backoff(tries))
        if time.monotonic() + wait - started > self.deadline:
            return None
        return wait


NO_RETRY = RetryPolicy(attempts=1)


def retried_answer(status: int, body: Any, final: frozenset[str] = frozenset()) -> bool:
    """Is this answer worth another try: a status in RETRY_STATUSES whose error
    code (Spool's `{"error": {"code"}}`, when the body has one) is not permanent,
    nor one the call handles itself (`final`: a wait's too_many_waits)."""
    if status not in RETRY_STATUSES:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code not in PERMANENT_CODES and code not in final


# What fails a try as a lost connection does: the network's errors, and an answer
# whose body cannot be decoded (a corrupt gzip), which escaped as a raw httpx error
# and left an enqueue's caller unable to tell whether the job was stored.
TRY_FAILED: tuple[type[httpx.TransportError], type[httpx.DecodingError]] = (
    httpx.TransportError,
    httpx.DecodingError,
)


def retryable(exc: httpx.TransportError | httpx.DecodingError) -> bool:
    return (
        not isinstance(exc, _HOPELESS)
        and not untrusted_certificate(exc)
        and not plain_http_answer(exc)
    )


# OpenSSL's reasons when what answers its ClientHello is not TLS (a plain-HTTP
# server's "HTTP/1.1 400 ..." read as a TLS record): 1.1 and 3.0 say
# WRONG_VERSION_NUMBER; later releases RECORD_LAYER_FAILURE or PACKET_LENGTH_TOO_LONG.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


def plain_http_answer(exc: BaseException) -> bool:
    """An https:// URL whose server answered in plain HTTP (`make run`, `spool
    serve`): the server is up and answered at once, so retrying only delayed the
    one fix, the URL's scheme, by the whole backoff."""
    seen: BaseException | None = exc
    for _ in range(5):  # httpx -> httpcore -> ssl
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and getattr(seen, "reason", None) in _NOT_TLS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def transport_hint(exc: BaseException, url: str, default_for: str | None = None) -> str:
    """What to add to a transport failure's message when its cause is the URL.

    default_for names the client class when the URL was the default, taken because
    none was given and SPOOL_URL is unset: "cannot reach http://127.0.0.1:8000" alone
    named an address the user never wrote (a new terminal without the export, or a
    server on another port), with nothing saying what sets another."""
    if url.startswith("https://") and plain_http_answer(exc):
        return (
            f" (the server there answers plain HTTP, not TLS: use http://{url[len('https://') :]})"
        )
    if default_for is not None:
        return (
            f" (no URL was given and SPOOL_URL is unset, so this is the default, the laptop "
            f"server's: give the server's URL as {default_for}(url, key), or export SPOOL_URL "
            f"and SPOOL_API_KEY as `spool serve` printed them)"
        )
    return ""


def reached_server(exc: BaseException) -> bool:
    """The try connected and sent its request, but no whole answer came in time.

    httpx's per-read timeout, and the whole-try bound (which raises the same), fire
    only once a connection is open (a connect that hangs is httpx.ConnectTimeout):
    the server is up but too slow, so "cannot reach" sent people looking for a
    server that was down, or a wrong URL, when it was neither."""
    return isinstance(exc, httpx.ReadTimeout)


def failure_lead(exc: BaseException, url: str) -> str:
    """The first words of a TransportError's message: what became of the last try."""
    if reached_server(exc):
        return f"reached {url}, but it did not answer in time"
    return f"cannot reach {url}"


def untrusted_certificate(exc: BaseException) -> bool:
    """The server's TLS certificate failed verification: no retry changes that."""
    seen: BaseException | None = exc
    for _ in range(5):  # httpx -> httpcore -> ssl
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def maybe_sent(exc: httpx.TransportError | httpx.DecodingError) -> bool:
    """Could the server have acted on a request that failed this way?"""
    return not isinstance(exc, _NOT_SENT)


_DELAY_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
# Longer than any wait a caller would make; keeps a 400-digit value or the year 9999 finite.
MAX_RETRY_AFTER = 366 * 86400.0


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date (RFC 9110 allows both)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    # RFC 9110 delay-seconds is ASCII digits. float() also took "inf", "1e999" (an
    # error whose retry_after was inf: time.sleep() raises on it), "nan", "1_0" and
    # other scripts' digits; those are as if absent. A leading "-" reads as 0.
    if _DELAY_SECONDS.fullmatch(value):
        return min(max(0.0, float(value)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 20-digit hour or year
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)
