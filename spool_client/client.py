"""The synchronous client: one method per route, retries built in.

    with Client("http://127.0.0.1:8000", key) as spool:
        job = spool.enqueue("echo", {"hello": "world"})
        print(spool.wait(job.id, timeout=30).result)

aio.py is the same over asyncio; calls.py builds the requests both send.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from spool_client import calls, pickling
from spool_client.calls import DEFAULT_TIMEOUT, Call, JobSpec
from spool_client.direct import own_transport
from spool_client.errors import (
    Conflict,
    PayloadTooLarge,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    WaitTimeout,
    error_for,
)
from spool_client.models import Enqueued, Job, Page, Redriven
from spool_client.retry import (
    TRY_FAILED,
    RetryPolicy,
    failure_lead,
    maybe_sent,
    reached_server,
    retried_answer,
    retry_after,
    retryable,
    transport_hint,
)


class Client:
    """A Spool API client.

    url and key default to SPOOL_URL and SPOOL_API_KEY (then to the laptop
    server, http://127.0.0.1:8000). timeout bounds each connect and read, and
    the reading of each answer's body as a whole (a long-poll gets its wait on
    top); a try that runs out is retried like a dropped connection. wait() ends
    within its own timeout however the server answers (docs/client.md,
    "Timeouts"). retry decides which failures are tried again; pass
    `RetryPolicy(attempts=1)` to see every failure at once. max_answer_bytes
    bounds each answer's body (64 MiB by default): one past it is AnswerTooLarge,
    read no further. http lets you bring your own httpx.Client (proxies, TLS, a
    test transport); it is not closed here.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        max_answer_bytes: int = calls.DEFAULT_MAX_ANSWER_BYTES,
        http: httpx.Client | None = None,
    ) -> None:
        options = calls.client_options(url, key, timeout, retry, batch_size, max_answer_bytes)
        self._default_for = "Client" if options.default_url else None
        self.url, self.key, self.timeout = options.url, options.key, options.timeout
        self.retry, self.batch_size = options.retry, options.batch_size
        self.max_answer_bytes = options.max_answer_bytes
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=timeout, transport=own_transport(self.url))
        self._pid = os.getpid()
        self._headers = calls.headers(self.key)

    # -- lifecycle ---------------------------------------------------------
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled (a multiprocessing pool's argument): URL, key and options, no
        connection; the copy opens its own (spool_client/pickling.py)."""
        return pickling.reduced(self)

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending -----------------------------------------------------------
    def _forked(self) -> None:
        """After a fork (multiprocessing, gunicorn --preload, a prefork worker), give
        this process connections of its own. The child inherits the parent's pooled
        sockets: two processes writing requests into one connection and reading each
        other's answers, `get(a)` answered with job b and an enqueue with another's
        id. The inherited pool is dropped, not closed (closing would not end the
        parent's connection, but nothing here should touch it). A closed client stays
        closed; an `http=` client is the caller's to make per process."""
        if self._own_http and self._pid != os.getpid() and not self._http.is_closed:
            self._http = httpx.Client(timeout=self.timeout, transport=own_transport(self.url))
            self._pid = os.getpid()

    def _send(self, call: Call) -> Any:
        """Send with retries; the JSON answer, or the typed error of the last try."""
        self._forked()
        if calls.in_event_loop():
            # A sync call in an async def stalls every task of the loop, silently.
            warnings.warn(calls.IN_EVENT_LOOP, RuntimeWarning, stacklevel=calls.caller_stacklevel())
        started = time.monotonic()
        tries = 0
        sent_before = False
        timeout = httpx.Timeout(self.timeout, read=self.timeout + (call.read_timeout or 0))
        while True:
            tries += 1
            try:
                request = calls.build_request(
                    self._http, call, self.url + call.path, self._headers, timeout
                )
                budget, cut = call.budget(self.timeout, time.monotonic())
                if call.deadline is None:
                    response, content = self._exchange_here(request, budget)
                else:
                    response, content = self._exchange(request, budget, cut)
            except httpx.InvalidURL as exc:  # an argument too long for any URL
                raise ValueError(f"the request cannot be sent: {exc}") from None
            except TRY_FAILED as exc:  # a dropped answer, or one that cannot be decoded
                wait = self.retry.delay(tries, started, None) if retryable(exc) else None
                wait = call.retry_within(wait, time.monotonic())
                if wait is None:
                    # httpx quotes what the server sent (a broken status line): a cause
                    # that echoes the key is dropped, and the message scrubbed.
                    cause = None if calls.holds_key(str(exc), self.key) else exc
                    raise TransportError(
                        calls.scrub(
                            f"{failure_lead(exc, calls.shown_url(self.url))}: "
                            f"{type(exc).__name__}: {exc}"
                            f"{transport_hint(exc, calls.shown_url(self.url), self._default_for)}",
                            self.key,
                        ),
                        tries,
                        reached=reached_server(exc),
                    ) from cause
                sent_before = sent_before or maybe_sent(exc)
                time.sleep(wait)
                continue
            body = _json(content)
            # Not a 503 `misconfigured`, nor a code the call handles (call.final_codes).
            if retried_answer(response.status_code, body, call.final_codes):
                after = retry_after(response)
                wait = call.retry_within(self.retry.delay(tries, started, after), time.monotonic())
                if wait is not None:
                    sent_before = sent_before or response.status_code != 429
                    time.sleep(wait)
                    continue
            return _answer(response, body, self.key, sent_before)

    def _exchange_here(self, request: httpx.Request, budget: float) -> tuple[httpx.Response, bytes]:
        """One try of a call without a deadline, on this thread: each connect and read
        bounded by httpx, and the body's reading by `budget` in all (checked as each
        piece arrives). A head sent a byte at a time is bounded per read only: a thread
        per try, as `_exchange` runs, cost 25-45% of Client.enqueue's rate
        (docs/client.md, "Timeouts")."""
        began = time.monotonic()

        def in_budget() -> bool:
            if time.monotonic() - began > budget:
                raise httpx.ReadTimeout("", request=request)
            return True

        try:
            response = self._http.send(request, stream=True, follow_redirects=False)
            try:
                content = calls.read_answer(response, self.max_answer_bytes, self.url, in_budget)
                assert content is not None  # in_budget raises, never says no
            finally:
                response.close()
        except httpx.ReadTimeout:
            # httpx's own per-read timeout (a silent server) says only "timed out": say
            # the bound, as the async client and docs/client.md do.
            raise httpx.ReadTimeout(calls.no_answer(budget), request=request) from None
        return response, content

    def _exchange(
        self, request: httpx.Request, budget: float, cut: bool
    ) -> tuple[httpx.Response, bytes]:
        """One try, bounded as a whole: the response and its body, within `budget` s.

        httpx's timeouts bound each read, not the answer: a server that sends a byte
        a second would hold a call for as long as it liked. So the try runs on a
        thread of its own while this one waits at most `budget`. A try past it is
        left behind (its thread drops the connection at the next piece of the body,
        once the head has come, or when httpx's per-read timeout ends it) and fails:
        httpx.ReadTimeout, retried as a dropped connection is, or DeadlinePassed when
        the deadline of a wait set the budget (`cut`). The thread runs in a copy of
        the caller's context (contextvars), as a request made here would.
        """
        if cut and budget <= 0:
            raise calls.DeadlinePassed
        done, abandoned = threading.Event(), threading.Event()
        outcome: list[tuple[httpx.Response, bytes] | Exception] = []

        def run() -> None:
            try:
                response = self._http.send(request, stream=True, follow_redirects=False)
                try:
                    content = calls.read_answer(
                        response,
                        self.max_answer_bytes,
                        self.url,
                        lambda: not abandoned.is_set(),
                    )
                    if content is None:
                        return  # closed below: the connection is dropped, not reused
                finally:
                    response.close()
                outcome.append((response, content))
            except httpx.ReadTimeout:  # httpx's per-read timeout: "timed out", no bound
                outcome.append(httpx.ReadTimeout(calls.no_answer(budget), request=request))
            except Exception as exc:
                outcome.append(exc)
            finally:
                done.set()

        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(run,), name="spool-client-request", daemon=True
        ).start()
        try:
            if not done.wait(budget):
                if cut:
                    raise calls.DeadlinePassed
                raise httpx.ReadTimeout(calls.no_answer(budget), request=request)
        finally:
            if not done.is_set():
                abandoned.set()
        result = outcome[0]
        if isinstance(result, Exception):
            raise result
        return result

    # -- enqueue -----------------------------------------------------------
    def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> Enqueued:
        """Add one job. payload is a dict or a handler's pydantic payload model.

        Without an idempotency_key one is generated and sent with every retry,
        so a retried request never makes a second job.
        """
        body = calls.job_body(
            JobSpec(
                type,
                payload,
                queue,
                priority,
                delay,
                run_at,
                max_attempts,
                idempotency_key,
                callback_url,
            )
        )
        answer = self._send(calls.enqueue(body))
        return Enqueued.from_json(answer, body["idempotency_key"])

    def enqueue_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, batch_size: int | None = None
    ) -> list[Enqueued]:
        """Add many jobs, in batches no larger than the server takes (learned from
        its 413 when smaller than batch_size); results in the order given.

        A batch holding an invalid job stores none of it. Every job carries an
        idempotency key, so a retried batch never doubles one; a key you reuse
        for a different job raises IdempotencyConflict, and that batch's other
        jobs are stored (`details["stored"]` names them). If a later batch fails,
        the earlier ones stay stored: send the same jobs again with your own keys
        to finish.
        """
        bodies = [calls.job_body(calls.as_spec(j)) for j in jobs]
        size = calls.positive_batch(batch_size) or self.batch_size
        results: list[Enqueued] = []
        start = 0
        while start < len(bodies):
            chunk = bodies[start : start + size]
            try:
                answer = self._send(calls.enqueue_batch(chunk))
            except PayloadTooLarge as exc:
                size = _smaller(exc, size, len(chunk))
                self.batch_size = min(self.batch_size, size)
                continue
            results.extend(
                Enqueued.from_json(view, body["idempotency_key"])
                for view, body in zip(calls.batch_answer(answer, len(chunk)), chunk, strict=True)
            )
            start += len(chunk)
        return results

    # -- reading -------------------------------------------------------------
    def get(self, job_id: str, *, attempts: bool = False, webhooks: bool = False) -> Job:
        """The job now; attempts=True adds attempt_history (each attempt's story),
        webhooks=True adds webhooks (each completion webhook's delivery state)."""
        call = calls.status(job_id, attempts=attempts, webhooks=webhooks)
        return Job.from_json(self._send(call))

    def wait(self, job_id: str, timeout: float | None = 60.0) -> Job:
        """Long-poll until the job is terminal (succeeded, dead, cancelled).

        Raises WaitTimeout (with the job's last state, None if no answer came) if it
        is not after `timeout` seconds, ending at most DEADLINE_GRACE (1 s) later
        however slowly the server answers; None waits for as long as it takes.
        """
        timeout = calls.seconds("timeout", timeout, allow_none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        nap = calls.EARLY_NAP_FIRST
        last: Job | None = None
        while True:
            left = calls.MAX_WAIT if deadline is None else deadline - time.monotonic()
            wait = max(0.0, min(calls.MAX_WAIT, left))
            asked = time.monotonic()
            refused: TooManyRequests | None = None
            try:
                try:
                    answer = self._send(calls.status(job_id, wait=wait, deadline=deadline))
                except TooManyRequests as exc:
                    if exc.code not in calls.WAITS_FULL_CODES:
                        raise
                    refused = exc  # the long-polls are all taken: look without ?wait
                    answer = self._send(calls.status(job_id, deadline=deadline))
            except calls.DeadlinePassed:
                raise WaitTimeout(last, timeout or 0.0, job_id) from None
            job = last = Job.from_json(answer)
            if job.terminal:
                return job
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
            pause = (
                calls.throttled_nap(refused.retry_after, nap)
                if refused is not None
                else calls.early_nap(wait, now - asked, nap)
            )
            if pause:
                time.sleep(pause if deadline is None else min(pause, deadline - now))
                nap = min(nap * 2, calls.EARLY_NAP_MAX)

    def pages(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """Pages of your jobs, oldest first, following next_cursor to the end."""
        trail = calls.CursorTrail(cursor)
        while True:
            page = Page.from_json(
                self._send(calls.list_jobs(state, queue, type, page_size, cursor))
            )
            yield page
            cursor = trail.next(page.next_cursor)
            if cursor is None:
                return

    def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Every job matching the filters, oldest first; pages are fetched as you go."""
        for page in self.pages(state=state, queue=queue, type=type, page_size=page_size):
            yield from page.jobs

    def dead_pages(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        trail = calls.CursorTrail(cursor)
        while True:
            page = Page.from_json(self._send(calls.dead(queue, type, page_size, cursor)))
            yield page
            cursor = trail.next(page.next_cursor)
            if cursor is None:
                return

    def dead_letters(
        self, *, queue: str | None = None, type: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every dead job (the dead-letter store) matching the filters."""
        for page in self.dead_pages(queue=queue, type=type, page_size=page_size):
            yield from page.jobs

    # -- acting --------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """Cancel a waiting job (409 Conflict when it is running or finished)."""
        return self._settle(calls.cancel(job_id), job_id, lambda job: job.state == "cancelled")

    def redrive(self, job_id: str) -> Job:
        """Put a dead job back to queued with a fresh attempt budget."""
        return self._settle(calls.redrive(job_id), job_id, lambda job: job.state != "dead")

    def redrive_all(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        limit: int | None = None,
        died_before: datetime | None = None,
    ) -> Redriven:
        """Redrive dead jobs in bulk (the server's default limit is 1000 a call).

        Only jobs that died strictly before `died_before` (with a time zone); without
        it, the server's clock at the start of the call. To redrive more than one call
        takes, pass the first answer's `died_before` to every later call: jobs it
        redrove that died again since are then not redriven twice.
        """
        call = calls.redrive_all(queue, type, limit, died_before)
        return Redriven.from_json(self._send(call))

    def _settle(self, call: Call, job_id: str, done: Callable[[Job], bool]) -> Job:
        """A cancel or redrive whose earlier try may have been applied: a 409 on the
        retry means "already done" when the job now stands as the call would leave it."""
        try:
            return Job.from_json(self._send(call))
        except Conflict as conflict:
            if not conflict.retried_after_send:
                raise
            job = self.get(job_id)
            if done(job):
                return job
            raise

    def health(self) -> dict[str, Any]:
        """GET /health (no key needed): {"status": "ok", "store": "ok"}, or Unavailable."""
        body: dict[str, Any] = self._send(Call("GET", "/health"))
        return body


def _answer(response: httpx.Response, body: Any, key: str | None, sent_before: bool) -> Any:
    """The JSON object a final answer carries, or the error it is (the sync and async
    clients' last step). What the server sent is scrubbed of the key before it goes
    into an exception. Every route answers a JSON object with a 2xx; a 3xx is not
    followed."""
    if response.status_code >= 400:
        error = error_for(
            response.status_code,
            calls.scrub(body, key),
            retry_after(response),
            calls.scrub(response.reason_phrase, key),
        )
        error.retried_after_send = sent_before
        if isinstance(error, Unauthorized) and not key:
            error.keyless = True
        raise error
    if response.status_code >= 300 or not isinstance(body, dict):
        content_type = calls.scrub(response.headers.get("content-type", ""), key)
        location = calls.scrub(response.headers.get("location"), key)
        raise UnexpectedResponse(
            response.status_code,
            content_type,
            calls.shown_url(str(response.url.copy_with(query=None))),
            calls.not_an_answer(response.status_code, content_type, location),
        )
    return body


def _not_json(constant: str) -> Any:
    """json.loads' parse_constant: NaN and Infinity are not JSON. Python reads them, but
    Spool never answers them (allow_nan=False), and a caller (`spool status --json`, a
    strict JSON reader after it) must not be handed them as numbers."""
    raise ValueError(f"{constant} is not JSON")


def _json(content: bytes) -> Any:
    """The answer's JSON, or None for a body that is not (read by status instead).

    RecursionError too: json.loads raises it, not ValueError, for arrays nested past
    the interpreter's limit, and a hostile server's answer must not escape raw."""
    if not content:
        return None
    try:
        return json.loads(content, parse_constant=_not_json)
    except (ValueError, RecursionError):  # not JSON (NaN too), not UTF-8, nested too deep
        return None


def _smaller(exc: PayloadTooLarge, size: int, sent: int) -> int:
    """The batch size to try after a 413: the server's job limit, or half (bytes)."""
    limit = calls.batch_limit(exc.details, sent)
    if limit is not None:
        return limit
    if sent > 1:
        return max(1, sent // 2)
    raise exc
