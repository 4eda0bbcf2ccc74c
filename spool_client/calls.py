"""The HTTP request behind each client method, built once for the sync and async clients.

Nothing here does I/O: a `Call` says what to send; client.py and aio.py send it
(with retries) and turn the answer into models. Job ids are quoted into the path,
so an id like "../dlq" names no other route.
"""

from __future__ import annotations

import math
import os
import re
import sys
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from spool_client import client_text, durations
from spool_client.errors import AnswerTooLarge, UnexpectedResponse
from spool_client.retry import RetryPolicy

URL_VARIABLE = "SPOOL_URL"
KEY_VARIABLE = "SPOOL_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_WAIT = 20.0  # the server holds a long-poll at most this long (?wait=)
# How long after a wait's deadline its last long-poll's answer is still awaited: the
# server holds that long-poll until the deadline, so the answer lands just after it.
DEADLINE_GRACE = 1.0
# Each try's connect, write and read: past the 10 s a server on SQLite waits for its
# write lock before answering 503 "stayed locked" (nothing written), so the client
# reads that answer instead of calling the server unreachable.
DEFAULT_TIMEOUT = 15.0
DEFAULT_BATCH = 100  # the server's default SPOOL_MAX_BATCH; a smaller limit is learned
USER_AGENT = "spool-client/0.1"
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    read_timeout: float | None = None  # a long-poll needs more than the default
    # time.monotonic() past which no retry starts (a wait's own timeout): the retry
    # policy alone would keep a wait(timeout=2) retrying a 503 for a minute.
    deadline: float | None = None
    # Error codes answered to the caller at once rather than retried: the caller has
    # a better next step (a long-poll refused for too_many_waits: a plain look).
    final_codes: frozenset[str] = frozenset()

    def retry_within(self, wait: float | None, now: float) -> float | None:
        """The retry policy's pause, or None when it would end past the deadline."""
        if wait is None or (self.deadline is not None and now + wait > self.deadline):
            return None
        return wait

    def budget(self, timeout: float, now: float) -> tuple[float, bool]:
        """How long the next try may take in all (connecting, sending, the whole
        answer), and whether the deadline set that (a try that runs out then ends the
        call: DeadlinePassed). A try gets the client's timeout, a long-poll its wait
        on top; a wait's tries end DEADLINE_GRACE after its deadline at the latest."""
        budget = timeout + (self.read_timeout or 0.0)
        if self.deadline is not None:
            left = self.deadline + DEADLINE_GRACE - now
            if left < budget:
                return max(0.0, left), True
        return budget, False


def no_answer(budget: float) -> str:
    """What a try that ran out of time says, sync or async, whichever timer ended it
    (httpx's per-read timeout says only "timed out")."""
    return f"no whole answer within {budget:g}s"


class DeadlinePassed(Exception):
    """A try cut short by its call's deadline (a wait's timeout): no answer came in
    time. wait() turns it into WaitTimeout; it never reaches a caller."""


@dataclass(frozen=True)
class JobSpec:
    """One job for `enqueue_many` (the same fields `enqueue` takes)."""

    type: str
    payload: Any = None
    queue: str | None = None
    priority: int | None = None
    delay: float | timedelta | str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def settings(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The base URL and key: given, else SPOOL_URL / SPOOL_API_KEY, else the laptop server.

    Checked here, where the mistake is made, rather than failing on the first
    request as an unreachable host (no scheme) or an encoding error (a key with
    a space or a non-ASCII letter, which no server key can match anyway). An
    empty variable is an unset one (docs/settings.md), and so is key="": no key
    is sent, and the server answers "missing API key".
    """
    if url is not None and not isinstance(url, str):
        raise TypeError(f"the server URL is a str, not {type(url).__name__}")
    if key is not None and not isinstance(key, str):
        raise TypeError(f"the API key is a str, not {type(key).__name__}")
    base = (url or os.environ.get(URL_VARIABLE, "").strip() or DEFAULT_URL).strip()
    scheme, sep, rest = base.partition("://")
    if sep and scheme.lower() in ("http", "https"):  # schemes are case-insensitive (RFC 3986)
        base = f"{scheme.lower()}://{rest}"
    if not base.startswith(("http://", "https://")):  # no host: _check_base says so
        raise ValueError(f"the server URL must start with http:// or https://, not {base!r}")
    if "?" in base or "#" in base:
        raise ValueError("the server URL is a base (scheme, host, optional path): no ? or #")
    _check_base(base)
    key = key if key is not None else os.environ.get(KEY_VARIABLE, "").strip()
    if key and not _VISIBLE_ASCII.fullmatch(key):
        raise ValueError("an API key is visible ASCII characters only (no spaces)")
    return base.rstrip("/"), key or None


def _check_base(base: str) -> None:
    """What would otherwise fail on the first request as an error that is not the
    client's (httpx.InvalidURL) or as minutes of retries against port 99999. The
    messages never repeat the URL: it may hold a password."""
    if not base.isprintable() or any(c.isspace() for c in base):
        raise ValueError("the server URL holds spaces or control characters")
    try:
        parts = urlsplit(base)
        port = parts.port  # ValueError: not a number, or out of 0-65535
    except ValueError as exc:
        raise ValueError(f"the server URL is malformed: {exc}") from None
    if not parts.hostname:
        raise ValueError("the server URL has no host: http://HOST[:PORT][/PATH]")
    if port == 0:
        raise ValueError("the server URL's port is 0: give the port the server listens on")


def shown_url(url: str) -> str:
    """The URL for an error message, its password (if the URL holds one) masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def not_an_answer(status: int, content_type: str, location: str | None) -> str:
    """Why a success-looking answer is not one: a redirect (never followed: the
    X-API-Key would go to whatever host `Location` names), else not Spool's JSON."""
    kind = content_type or "no content type"
    if 300 <= status < 400:
        where = shown_url(location) if location else "nowhere"
        return (
            f"answered {status} redirecting to {where} (not followed: the API key goes "
            "only to the URL given; give the final URL instead)"
        )
    return f"answered {status} ({kind}), not Spool's JSON"


SCRUBBED = "***"
SCRUB_MIN = 8  # a key shorter than this is not looked for: "k" would mangle every message


def scrub(value: Any, key: str | None) -> Any:
    """`value` (a string, or JSON) with every copy of the API key replaced by ***.

    What a server sends back goes into this client's exceptions, and exceptions go
    into logs and error trackers: a server or proxy that echoes the key (in an
    error's message or details, a reason phrase, a Location, a broken status line)
    must not put it there."""
    if not key or len(key) < SCRUB_MIN:
        return value
    if isinstance(value, str):
        return value.replace(key, SCRUBBED)
    if isinstance(value, list):
        return [scrub(item, key) for item in value]
    if isinstance(value, dict):
        return {scrub(name, key): scrub(item, key) for name, item in value.items()}
    return value


def holds_key(text: str, key: str | None) -> bool:
    return bool(key) and len(key or "") >= SCRUB_MIN and (key or "") in text


def headers(key: str | None) -> dict[str, str]:
    # Only the codings calls.Inflater reads (httpx would add br and zstd when their
    # packages are installed).
    out = {
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": USER_AGENT,
    }
    if key:
        out["X-API-Key"] = key
    return out


def new_key() -> str:
    """An idempotency key for an enqueue whose caller gave none: unique per job,
    reused by every retry of that enqueue."""
    return "spool-client-" + uuid.uuid4().hex


NOT_JSON_HINT = (
    "send JSON's own types (dict, list, str, number, bool, None): convert a date or "
    "datetime with .isoformat(), a set with list(), or pass the handler's pydantic model, "
    "which the client sends as model_dump(mode='json')"
)


def build_request(
    http: httpx.Client | httpx.AsyncClient,
    call: Call,
    url: str,
    headers: dict[str, str],
    timeout: httpx.Timeout,
) -> httpx.Request:
    """The request for a call. A body JSON cannot hold (a date in a payload dict) is
    refused here with the fix: httpx's own TypeError named the type and nothing else."""
    try:
        return http.build_request(
            call.method, url, params=call.params, json=call.json, headers=headers, timeout=timeout
        )
    except TypeError as exc:
        what = "payload" if call.path == "/enqueue" else "request"
        raise TypeError(f"{what} is not JSON: {exc}; {NOT_JSON_HINT}") from None


IN_EVENT_LOOP = (
    "spool_client.Client called inside a running asyncio event loop: each call blocks "
    "the event loop (wait() for up to its timeout), and every other task with it; use "
    "spool_client.AsyncClient and await its methods, or run the call in a thread "
    "(await asyncio.to_thread(spool.enqueue, ...))"
)


def in_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop now (asyncio is not imported for
    the question: a program that never imported it runs none)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return False
    try:
        aio.get_running_loop()
    except RuntimeError:
        return False
    return True


def caller_stacklevel() -> int:
    """warnings.warn's stacklevel, from the caller of this, for the first frame outside
    this package: a warning then names the user's line, not a listing's generator."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(here):
        frame = frame.f_back
        level += 1
    return level


def payload_json(payload: Any) -> dict[str, Any]:
    """A payload as JSON: a mapping, or a pydantic model (a handler's payload model)."""
    if payload is None:
        return {}
    dump = getattr(payload, "model_dump", None)
    if callable(dump):
        data = dump(mode="json", exclude_unset=False)
    elif isinstance(payload, Mapping):
        data = dict(payload)
    else:
        raise TypeError(f"payload must be a dict or a pydantic model, not {type(payload).__name__}")
    if not isinstance(data, dict):
        raise TypeError("a payload model must dump to a JSON object")
    return data


def delay_seconds(delay: float | timedelta | str) -> float:
    """A delay as the API takes it: seconds. Text is read as `spool enqueue --delay`
    reads it ("30s", "1h30m"): sent as it was, the server refused "1h" with a 422.
    A number goes as it is, so the server's bounds answer for it as before."""
    if isinstance(delay, timedelta):
        return delay.total_seconds()
    if not isinstance(delay, str):
        return delay
    try:
        return durations.parse_seconds(delay)
    except ValueError as exc:
        said = str(exc)
        if durations.EXAMPLES not in said:  # "-5s": right form, negative
            said += f"; give seconds or text like {durations.EXAMPLES}"
        raise ValueError(f"delay: {said}") from None


def job_body(spec: JobSpec) -> dict[str, Any]:
    """The JSON of one job, with its idempotency key (generated when absent)."""
    body: dict[str, Any] = {"type": spec.type, "payload": payload_json(spec.payload)}
    if spec.queue is not None:
        body["queue"] = spec.queue
    if spec.priority is not None:
        body["priority"] = spec.priority
    if spec.delay is not None:
        body["delay"] = delay_seconds(spec.delay)
    if isinstance(spec.run_at, datetime):
        body["run_at"] = spec.run_at.isoformat()
    elif spec.run_at is not None:
        raise TypeError(f"run_at is a datetime, not {type(spec.run_at).__name__}")
    if spec.max_attempts is not None:
        body["max_attempts"] = spec.max_attempts
    if spec.callback_url is not None:
        body["callback_url"] = spec.callback_url
    body.update(spec.extra)
    key = spec.idempotency_key
    body["idempotency_key"] = new_key() if key is None else _key(key)
    return body


def _key(key: object) -> str:
    """A caller's idempotency key as the server takes it, refused here (before any job of
    the call is sent) otherwise. Only a key not given is made up: an empty one (a field
    that came out blank) made a new key on every call, the very doubles the caller's key
    was meant to prevent. A control character (client_text.py, the server's own rule)
    is named by its code point: the key itself would put it in the traceback."""
    if not (isinstance(key, str) and key):
        raise ValueError(f"idempotency_key is a non-empty str, not {key!r}")
    refused = client_text.refusal(key)
    if refused is not None:
        raise ValueError(refused.message("idempotency_key"))
    return key


def as_spec(job: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    if not isinstance(job, Mapping):
        raise TypeError(f"each job is a JobSpec or a dict, not {type(job).__name__}")
    fields = dict(job)
    known = {k: fields.pop(k) for k in list(fields) if k in JobSpec.__dataclass_fields__}
    if "type" not in known:
        raise TypeError('each job needs a "type"')
    known.pop("extra", None)
    return JobSpec(**known, extra=fields)


def job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise ValueError("a job id is required")
    if not isinstance(job_id, str):
        raise TypeError(f"a job id is a string, not {type(job_id).__name__}")
    if job_id in (".", ".."):
        # A path segment the URL is resolved against: /dlq/./redrive would be sent as
        # POST /dlq/redrive, which redrives every dead job. No job id is either.
        raise ValueError(f"{job_id!r} is not a job id")
    try:
        return f"/{quote(job_id, safe='')}{suffix}"
    except UnicodeEncodeError:  # a lone surrogate (bytes that were not UTF-8, decoded)
        raise ValueError("a job id is text (it holds characters that are not UTF-8)") from None


def query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def enqueue(body: dict[str, Any]) -> Call:
    return Call("POST", "/enqueue", json=body)


def enqueue_batch(bodies: list[dict[str, Any]]) -> Call:
    return Call("POST", "/enqueue", json={"jobs": bodies})


def status(
    job_id: str,
    wait: float = 0,
    attempts: bool = False,
    deadline: float | None = None,
    webhooks: bool = False,
) -> Call:
    params = query(
        wait=f"{wait:g}" if wait > 0 else None,
        attempts="true" if attempts else None,
        webhooks="true" if webhooks else None,
    )
    return Call(
        "GET",
        "/status" + job_path(job_id),
        params or None,
        read_timeout=wait if wait else None,
        deadline=deadline,
        final_codes=WAITS_FULL_CODES if wait > 0 else frozenset(),
    )


# A long-poll refused because the key's (or the process's) long-polls are all taken
# (429 too_many_waits, SPOOL_MAX_WAITS_PER_TENANT): wait() looks without ?wait, which
# is not limited, and long-polls again after a pause, rather than retrying the
# long-poll until its retries ran out (TooManyRequests long before the wait's timeout).
WAITS_FULL_CODES = frozenset({"too_many_waits"})


def throttled_nap(retry_after: float | None, nap: float) -> float:
    """The pause after a plain look that stood in for a refused long-poll: the early
    nap, or the server's Retry-After when longer (at most EARLY_NAP_MAX * 5)."""
    return min(max(nap, retry_after or 0.0), EARLY_NAP_MAX * 5)


def list_jobs(
    state: str | None, queue: str | None, type: str | None, limit: int, cursor: str | None
) -> Call:
    return Call(
        "GET",
        "/jobs",
        query(state=state, queue=queue, type=type, limit=limit, cursor=cursor),
    )


def next_cursor(given: str | None, sent: str | None) -> str | None:
    """The cursor to ask for the next page with, or None after the last page. One that
    comes back as sent would ask for the same page forever (a cache between client and
    server that ignores the query answers the first page again): it is refused."""
    if given is not None and given == sent:
        raise UnexpectedResponse(
            None,
            "application/json",
            "the server",
            "answered a page whose next_cursor is the cursor it was asked for (a cache "
            "between client and server that ignores the query string?), so the listing "
            "would never end",
        )
    return given


class CursorTrail:
    """The cursors one listing has asked with, to refuse a next_cursor met before.

    A server's cursors name a place in the listing's order, (created_at, id), each
    past the last, so no cursor comes twice in one listing. next_cursor alone caught
    only the page that named itself: a server whose pages named each other (a, b, a,
    ...) was followed forever, and `spool jobs --all`, which prints when the listing
    ends, held a third of a gigabyte after twenty seconds, and growing, having
    printed nothing. One string per page is kept, far less than the pages."""

    __slots__ = ("last", "sent")

    def __init__(self, first: str | None) -> None:
        self.last = first
        self.sent = {first} if first is not None else set()

    def next(self, given: str | None) -> str | None:
        """The cursor to ask for the next page with, or None after the last page."""
        cursor = next_cursor(given, self.last)
        if cursor is not None:
            if cursor in self.sent:
                raise UnexpectedResponse(
                    None,
                    "application/json",
                    "the server",
                    "answered a page whose next_cursor is one this listing was already "
                    "asked with (its pages lead round in a circle), so the listing would "
                    "never end",
                )
            self.sent.add(cursor)
        self.last = cursor
        return cursor


def dead(queue: str | None, type: str | None, limit: int, cursor: str | None) -> Call:
    return Call("GET", "/dlq", query(queue=queue, type=type, limit=limit, cursor=cursor))


def cancel(job_id: str) -> Call:
    return Call("POST", "/jobs" + job_path(job_id, "/cancel"))


def redrive(job_id: str) -> Call:
    return Call("POST", "/dlq" + job_path(job_id, "/redrive"))


def redrive_all(
    queue: str | None, type: str | None, limit: int | None, died_before: datetime | None = None
) -> Call:
    if died_before is not None and not isinstance(died_before, datetime):
        raise TypeError(f"died_before is a datetime, not {died_before.__class__.__name__}")
    bound = None if died_before is None else died_before.isoformat()
    return Call(
        "POST", "/dlq/redrive", json=query(queue=queue, type=type, limit=limit, died_before=bound)
    )


def batch_limit(details: Any, sent: int) -> int | None:
    """From a 413 to a batch: the server's jobs-per-batch limit, when that was the
    refusal (details {"limit", "size"} with size the number of jobs sent); None
    when the body's bytes were over instead."""
    if not isinstance(details, dict):
        return None
    limit, size = details.get("limit"), details.get("size")
    if isinstance(limit, int) and size == sent and 0 < limit < sent:
        return limit
    return None


def positive_batch(size: int | None) -> int | None:
    """batch_size as given, checked: a negative one slices the jobs wrong (a batch
    stored, then an empty one refused), so it is refused before anything is sent."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch_size is a whole number, at least 1, not {size!r}")
    return size


def seconds(name: str, value: float | None, *, allow_none: bool) -> float | None:
    """A timeout in seconds: NaN would never be reached (a wait that never ends), and a
    negative one reads as a wait that timed out without asking."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} is a number of seconds, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} is a number of seconds, 0 or more, not {value!r}")
    return float(value)


def batch_answer(answer: dict[str, Any], sent: int) -> list[Any]:
    """The per-job views of a batch answer: one per job sent, or UnexpectedResponse."""
    views = answer.get("jobs")
    if not isinstance(views, list) or len(views) != sent:
        raise UnexpectedResponse(
            None, "application/json", "the server", f"answered a batch of {sent} jobs oddly"
        )
    return views


# A long-poll that comes back early while the job is still running (a proxy that drops
# ?wait, a server that does not hold) is followed by this growing pause, not at once.
EARLY_NAP_FIRST = 0.05
EARLY_NAP_MAX = 1.0


def early_nap(asked: float, took: float, nap: float) -> float:
    """How long to pause before the next long-poll: 0 when the last one was held."""
    return 0.0 if took >= asked / 2 else nap


# The most of one answer a client reads (its body, decoded): Spool's largest answers (a
# page of jobs with 256 KiB results) stay well below; a wrong URL's file or an endless
# body is cut here instead of filling the process's memory.
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024


def answer_bound(value: int) -> int:
    """`max_answer_bytes` checked: a whole number of bytes above 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_answer_bytes is a whole number of bytes above 0, not {value!r}")
    return value


def answer_buffer(headers: Mapping[str, str], limit: int, url: str) -> bytearray:
    """The buffer for an answer's body; AnswerTooLarge at once if its Content-Length is
    past `limit` (nothing of the body is read)."""
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(shown_url(url), limit)
    return bytearray()


def read_already(response: httpx.Response, limit: int, url: str) -> bytes | None:
    """The body of an answer its transport handed over already read (an httpx.Response
    made with its content, as httpx.MockTransport's are), held to `limit`; None for one
    still to stream. iter_raw() refuses the first kind (StreamConsumed), and httpx has
    decoded it already, so there is nothing left for an Inflater to do."""
    if not response.is_stream_consumed:
        return None
    body = bytearray()
    take(body, response.content, limit, url)
    return bytes(body)


def read_answer(
    response: httpx.Response, limit: int, url: str, go_on: Callable[[], bool] = lambda: True
) -> bytes | None:
    """An answer's whole body, at most `limit` bytes of it decoded (AnswerTooLarge past
    that), read as it streams in; `go_on` is asked after each piece (it may raise, as
    a spent budget does), and None is the answer once it says no: the caller
    abandons the answer and closes the response. Client's two ways of trying read
    with it; AsyncClient with aread_answer, its twin."""
    content = read_already(response, limit, url)
    if content is not None:
        return content
    body = Inflater(response.headers, limit, url)  # raw bytes, inflated within the limit
    for chunk in response.iter_raw():
        body.feed(chunk)
        if not go_on():
            return None
    return body.finish()


async def aread_answer(response: httpx.Response, limit: int, url: str) -> bytes:
    """read_answer for an answer read in an event loop (cancelled from outside)."""
    content = read_already(response, limit, url)
    if content is not None:
        return content
    body = Inflater(response.headers, limit, url)
    async for chunk in response.aiter_raw():
        body.feed(chunk)
    return body.finish()


class Inflater:
    """An answer's body as it arrives on the wire (httpx's iter_raw), decoded by its
    Content-Encoding into a buffer held to `limit` as it is inflated.

    httpx's own decoders inflate each piece whole: 64 KiB of gzipped zeros became
    64 MiB before a byte of it was counted, so a server's "bomb" made a client with
    max_answer_bytes of 1 MiB hold 150 MiB. Here no inflation yields more than the
    room left plus one byte. Spool never compresses its answers; a proxy may, with
    gzip or deflate. Any other coding cannot be read: httpx.DecodingError, as a
    corrupt body is (a failed try)."""

    def __init__(self, headers: Mapping[str, str], limit: int, url: str) -> None:
        self.body = answer_buffer(headers, limit, url)
        self.limit, self.url = limit, url
        codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in _WBITS):
            raise httpx.DecodingError(f"Content-Encoding {', '.join(codings)!r} is not supported")
        self.coding = codings[0] if codings else None
        self._zlib: Any = None
        if self.coding is not None:
            self._zlib = zlib.decompressobj(_WBITS[self.coding])
        self._started = False

    def feed(self, data: bytes) -> None:
        if self._zlib is None:
            take(self.body, data, self.limit, self.url)
            return
        try:
            while data:
                room = self.limit - len(self.body) + 1  # one byte past the limit tells
                try:
                    out = self._zlib.decompress(data, room)
                except zlib.error:
                    if self.coding != "deflate" or self._started:
                        raise
                    # "deflate" is zlib-wrapped by the standard, raw by some servers.
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = self._zlib.decompress(data, room)
                self._started = True
                take(self.body, out, self.limit, self.url)
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise httpx.DecodingError(str(exc)) from None

    def finish(self) -> bytes:
        if self._zlib is not None:
            try:
                take(self.body, self._zlib.flush(), self.limit, self.url)
            except zlib.error as exc:
                raise httpx.DecodingError(str(exc)) from None
        return bytes(self.body)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def take(body: bytearray, chunk: bytes, limit: int, url: str) -> None:
    """Add a piece of the body; AnswerTooLarge once it passes `limit`: an answer without
    a length, or longer than it said, is cut as it streams in, never read whole."""
    body += chunk
    if len(body) > limit:
        raise AnswerTooLarge(shown_url(url), limit)


@dataclass(frozen=True)
class Options:
    """What Client and AsyncClient are built from, checked once for both."""

    url: str
    key: str | None
    timeout: float
    retry: RetryPolicy
    batch_size: int
    max_answer_bytes: int
    # No URL given and SPOOL_URL unset: DEFAULT_URL was taken, which an unreachable
    # server's message says (retry.transport_hint), as the user never wrote it.
    default_url: bool = False


def client_options(
    url: str | None,
    key: str | None,
    timeout: float,
    retry: RetryPolicy | None,
    batch_size: int | None,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
) -> Options:
    base, key = settings(url, key)
    checked = seconds("timeout", timeout, allow_none=False) or 0.0
    if not 0 < checked < float("inf"):
        raise ValueError(f"timeout is a number of seconds above 0, not {timeout!r}")
    return Options(
        base,
        key,
        checked,
        retry or RetryPolicy(),
        positive_batch(batch_size) or DEFAULT_BATCH,
        answer_bound(max_answer_bytes),
        default_url=not url and not os.environ.get(URL_VARIABLE, "").strip(),
    )
