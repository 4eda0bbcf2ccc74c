"""The asyncio client: client.Client's methods as coroutines, with the same retries.

async with AsyncClient("http://127.0.0.1:8000", key) as spool:
    job = await spool.enqueue("echo", {"hello": "world"})
    done = await spool.wait(job.id, timeout=30)
    async for dead in spool.dead_letters():
        ...
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from spool_client import calls, pickling
from spool_client.calls import DEFAULT_TIMEOUT, Call, JobSpec
from spool_client.client import _answer, _json, _smaller
from spool_client.direct import own_async_transport
from spool_client.errors import (
    Conflict,
    PayloadTooLarge,
    TooManyRequests,
    TransportError,
    WaitTimeout,
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


class AsyncClient:
    """A Spool API client for asyncio; see client.Client for the arguments."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        max_answer_bytes: int = calls.DEFAULT_MAX_ANSWER_BYTES,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        options = calls.client_options(url, key, timeout, retry, batch_size, max_answer_bytes)
        self._default_for = "AsyncClient" if options.default_url else None
        self.url, self.key, self.timeout = options.url, options.key, options.timeout
        self.retry, self.batch_size = options.retry, options.batch_size
        self.max_answer_bytes = options.max_answer_bytes
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout, transport=own_async_transport(self.url)
        )
        self._pid = os.getpid()
        # The event loop whose connections self._http holds (None: not used yet).
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._headers = calls.headers(self.key)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled: URL, key and options, no connection (spool_client/pickling.py)."""
        return pickling.reduced(self)

    async def aclose(self) -> None:
        if self._own_http:
            await self._pool().aclose()

    def _pool(self) -> httpx.AsyncClient:
        """The connection pool for this process and this event loop.

        httpx's pooled connections belong to the loop (and the process) that opened
        them. A client used again from a new loop (a second `asyncio.run`, a test's
        fresh loop per test) raised `RuntimeError: Event loop is closed` from its
        first call; one used in a forked child wrote into the parent's sockets and
        read its answers. Either way the pool is dropped (its connections cannot be
        closed from here) and a new one made. A closed client stays closed; an
        `http=` client is the caller's to keep to one loop."""
        if not self._own_http or self._http.is_closed:
            return self._http
        loop = asyncio.get_running_loop()
        mine = self._loop is not None and self._loop() is loop
        if self._pid != os.getpid() or (self._loop is not None and not mine):
            self._http = httpx.AsyncClient(
                timeout=self.timeout, transport=own_async_transport(self.url)
            )
            self._pid = os.getpid()
        self._loop = weakref.ref(loop)
        return self._http

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        http = self._pool()
        started = time.monotonic()
        tries = 0
        sent_before = False
        timeout = httpx.Timeout(self.timeout, read=self.timeout + (call.read_timeout or 0))
        while True:
            tries += 1
            try:
                request = calls.build_request(
                    http, call, self.url + call.path, self._headers, timeout
                )
                response, content = await self._exchange(
                    http, request, *call.budget(self.timeout, time.monotonic())
                )
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
                await asyncio.sleep(wait)
                continue
            body = _json(content)
            # Not a 503 `misconfigured`, nor a code the call handles (call.final_codes).
            if retried_answer(response.status_code, body, call.final_codes):
                wait = call.retry_within(
                    self.retry.delay(tries, started, retry_after(response)), time.monotonic()
                )
                if wait is not None:
                    sent_before = sent_before or response.status_code != 429
                    await asyncio.sleep(wait)
                    continue
            return _answer(response, body, self.key, sent_before)

    async def _exchange(
        self, http: httpx.AsyncClient, request: httpx.Request, budget: float, cut: bool
    ) -> tuple[httpx.Response, bytes]:
        """One try, the whole answer read, cancelled after `budget` seconds (httpx's
        timeouts bound each read, not the answer): httpx.ReadTimeout, retried as a
        dropped connection is, or DeadlinePassed when a wait's deadline set the budget
        (see Client._exchange). The body is read as it streams in, at most
        max_answer_bytes of it (AnswerTooLarge past that, as Client does)."""
        if cut and budget <= 0:
            raise calls.DeadlinePassed
        bound = asyncio.timeout(budget)
        try:
            async with bound:
                response = await http.send(request, stream=True, follow_redirects=False)
                try:
                    content = await calls.aread_answer(response, self.max_answer_bytes, self.url)
                finally:
                    await response.aclose()
                return response, content
        except httpx.ReadTimeout:  # httpx's per-read timeout, first: "timed out", no bound
            raise httpx.ReadTimeout(calls.no_answer(budget), request=request) from None
        except TimeoutError:
            if not bound.expired():
                raise
            if cut:
                raise calls.DeadlinePassed from None
            raise httpx.ReadTimeout(calls.no_answer(budget), request=request) from None

    async def enqueue(
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
        return Enqueued.from_json(await self._send(calls.enqueue(body)), body["idempotency_key"])

    async def enqueue_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, batch_size: int | None = None
    ) -> list[Enqueued]:
        bodies = [calls.job_body(calls.as_spec(j)) for j in jobs]
        size = calls.positive_batch(batch_size) or self.batch_size
        results: list[Enqueued] = []
        start = 0
        while start < len(bodies):
            chunk = bodies[start : start + size]
            try:
                answer = await self._send(calls.enqueue_batch(chunk))
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

    async def get(self, job_id: str, *, attempts: bool = False, webhooks: bool = False) -> Job:
        call = calls.status(job_id, attempts=attempts, webhooks=webhooks)
        return Job.from_json(await self._send(call))

    async def wait(self, job_id: str, timeout: float | None = 60.0) -> Job:
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
                    answer = await self._send(calls.status(job_id, wait=wait, deadline=deadline))
                except TooManyRequests as exc:
                    if exc.code not in calls.WAITS_FULL_CODES:
                        raise
                    refused = exc  # the long-polls are all taken: look without ?wait
                    answer = await self._send(calls.status(job_id, deadline=deadline))
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
                await asyncio.sleep(pause if deadline is None else min(pause, deadline - now))
                nap = min(nap * 2, calls.EARLY_NAP_MAX)

    async def pages(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[Page]:
        trail = calls.CursorTrail(cursor)
        while True:
            call = calls.list_jobs(state, queue, type, page_size, cursor)
            page = Page.from_json(await self._send(call))
            yield page
            cursor = trail.next(page.next_cursor)
            if cursor is None:
                return

    async def list(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Job]:
        async for page in self.pages(state=state, queue=queue, type=type, page_size=page_size):
            for job in page.jobs:
                yield job

    async def dead_pages(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[Page]:
        trail = calls.CursorTrail(cursor)
        while True:
            page = Page.from_json(await self._send(calls.dead(queue, type, page_size, cursor)))
            yield page
            cursor = trail.next(page.next_cursor)
            if cursor is None:
                return

    async def dead_letters(
        self, *, queue: str | None = None, type: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        async for page in self.dead_pages(queue=queue, type=type, page_size=page_size):
            for job in page.jobs:
                yield job

    async def cancel(self, job_id: str) -> Job:
        return await self._settle(calls.cancel(job_id), job_id, lambda j: j.state == "cancelled")

    async def redrive(self, job_id: str) -> Job:
        return await self._settle(calls.redrive(job_id), job_id, lambda j: j.state != "dead")

    async def redrive_all(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        limit: int | None = None,
        died_before: datetime | None = None,
    ) -> Redriven:
        call = calls.redrive_all(queue, type, limit, died_before)
        return Redriven.from_json(await self._send(call))

    async def _settle(self, call: Call, job_id: str, done: Callable[[Job], bool]) -> Job:
        try:
            return Job.from_json(await self._send(call))
        except Conflict as conflict:
            if not conflict.retried_after_send:
                raise
            job = await self.get(job_id)
            if done(job):
                return job
            raise

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._send(Call("GET", "/health"))
        return body
