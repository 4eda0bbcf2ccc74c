"""What each HTTP route does, in plain Python: authenticate, parse, call the
service, shape the answer. app.py calls `handle(name, request, ...)`.

One Edge per runtime holds what lives as long as the process: the keyring,
the result cache and the metrics.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from chalicelib import json_values, logs
from chalicelib import runtime as runtime_module
from chalicelib.api import auth, errors, key_source, query, ui_routes
from chalicelib.api.auth import Keyring, authorize_metrics, metrics_key
from chalicelib.api.cache import DEFAULT_MAX_BYTES, DEFAULT_RECHECK, ResultCache
from chalicelib.api.http import (
    JSON_TYPE,
    ApiRequest,
    ApiResponse,
    dumps,
    json_response,
)
from chalicelib.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chalicelib.api.pages import carried_size, page_body
from chalicelib.api.plain_job import plain_job
from chalicelib.api.query import NoQuery
from chalicelib.api.schemas import (
    SERVER_OWNED,
    DlqQuery,
    ListQuery,
    RedriveAllRequest,
    StatusQuery,
    attempt_view,
    job_view,
    webhook_view,
)
from chalicelib.api.throttle import EnqueueGate, FailedSignIns, RateLimited
from chalicelib.api.waits import (
    DEFAULT_PER_TENANT,
    DEFAULT_TOTAL,
    Slot,
    TooManyWaits,
    WaitSlots,
    server_stopping,
)
from chalicelib.errors import (
    JobNotFound,
    Misconfigured,
    PayloadTooLarge,
    SpoolError,
    StoreUnavailable,
    Unauthorized,
    UncertainWrite,
    UnknownJobType,
    ValidationFailed,
)
from chalicelib.handlers import PayloadCheck, Registry, told_details
from chalicelib.json_encode import quoted
from chalicelib.jsonstrict import (
    MAX_NESTING,
    NESTED_TOO_DEEP,
    deep_path,
    shown_path,
    surrogate_path,
)
from chalicelib.limit_settings import auth_failures, tenant_limits
from chalicelib.models import AddResult, Job, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.service import Charge, EnqueueRequest
from chalicelib.storage import stored_rows
from chalicelib.storage.base import Backlog, StoreUnreachable
from chalicelib.webhooks import source as webhook_source

# Long-polling: start with a short nap so fast jobs answer fast, back off to this.
_POLL_FIRST = 0.01
OPERATOR_KEY_ON_JOBS = (
    f"that is an operator key ({auth.METRICS_KEYS}): it opens /metrics only. Job routes "
    f"act for one tenant: send a tenant key from {auth.API_KEYS}"
)
_POLL_MAX = 0.25


class Edge:
    def __init__(self, runtime: Runtime, timer: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.settings = settings = runtime.settings
        self.service = runtime.service
        key_source.validate(settings)  # a malformed SPOOL_API_KEYS still fails loudly here
        # And a malformed webhook setting; one from SPOOL_WEBHOOKS_PARAMETER is read (and
        # refused) at the first enqueue, so a request that needs no webhook needs no SSM.
        if webhook_source.configured(settings):
            from chalicelib.webhooks import config as webhook_config

            webhook_config.validate(settings)
        self._timer = timer
        # /health needs no key: on DynamoDB every probe is a billed read, so a probe
        # that succeeded answers for this long (failures are never remembered).
        self._health_for = settings.number("SPOOL_HEALTH_CACHE_SECONDS", 5.0, 0, 60)
        self._max_values = settings.integer(
            json_values.SETTING,
            json_values.DEFAULT_MAX_BODY_VALUES,
            *json_values.MAX_BODY_VALUES_RANGE,
        )
        self._healthy_until = float("-inf")
        self._health_probe = HealthProbe(self._check_store)
        self.cache = ResultCache(
            settings.cache_size,
            settings.cache_ttl,
            timer=timer,
            epoch=runtime.store.cache_epoch,
            recheck=settings.number("SPOOL_CACHE_RECHECK", DEFAULT_RECHECK, 0, 60),
            max_bytes=settings.integer("SPOOL_CACHE_BYTES", DEFAULT_MAX_BYTES, 0, 1 << 30),
        )
        self.waits = WaitSlots(
            per_tenant=settings.integer("SPOOL_MAX_WAITS_PER_TENANT", DEFAULT_PER_TENANT, 1),
            total=settings.integer("SPOOL_MAX_WAITS", DEFAULT_TOTAL, 1),
        )
        self.metrics = runtime.metrics()
        self.metrics.attach_cache(self.cache)
        limits = tenant_limits(settings)
        self.gate = EnqueueGate(runtime.store, limits) if limits.active else None
        self.sign_ins = FailedSignIns(auth_failures(settings), timer)
        runtime.service.attempts_ceiling()  # a malformed SPOOL_MAX_ATTEMPTS: 503, not 500s

    # -- helpers -----------------------------------------------------------
    @property
    def keys(self) -> Keyring:
        """The tenant keys in force: SPOOL_API_KEYS, or the SSM parameter (cached)."""
        return key_source.keyring(self.settings)

    def tenant(self, request: ApiRequest, operator_key: str = OPERATOR_KEY_ON_JOBS) -> str:
        """The key's tenant. An operator key (SPOOL_METRICS_KEYS) is refused 403 with
        `operator_key`, saying what the route needs: it is a valid key, so it is no
        failed sign-in (it was one, answered "invalid API key")."""
        sign_in = _SignIn(self, request, operator_key)
        with sign_in:
            keys = self.keys
            key = request.header("x-api-key")
            tenant = keys.tenant_for(key, sign_in.signed(key))
        _request_tenant.set(tenant)  # for the request's log line (handle)
        return tenant

    def _refuse_operator_key(self, request: ApiRequest, message: str) -> None:
        presented = request.header("x-api-key")
        operators = auth.operator_keys(self.settings.text(auth.METRICS_KEYS))
        if presented and operators.match(presented) is not None:
            raise auth.Forbidden(message) from None

    def _sign_in(self, request: ApiRequest) -> _SignIn:
        """Count a failed authentication against the client (_SignIn)."""
        return _SignIn(self, request)

    @staticmethod
    def _too_many_failures(wait: float) -> RateLimited:
        return RateLimited(
            "too many failed authentications from this client; retry after the time in Retry-After",
            retry_after=wait,
        )

    def _job(self, job: Job) -> ApiResponse:
        return json_response(200, job_view(job))

    # -- routes --------------------------------------------------------------
    def enqueue(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        data = request.json(self.settings.max_body_bytes, max_values=self._max_values)
        jobs, batch = self._enqueue_requests(data)
        if len(request.body) * ANSWER_GROWTH > PAYLOAD_ANSWER_BYTES:
            _check_answer_sizes(jobs, batch)
        try:
            if self.gate is None:
                results = self.service.enqueue(jobs, tenant)
            else:  # refused before anything is stored; an invalid job spends no token
                built = self.service.prepare(jobs, tenant)
                keys = [new.idempotency_key for new in built]
                ids = [new.id for new in built]
                answered: list[AddResult] = []  # the store's answers: what the tokens buy
                with self.gate.admitted(tenant, keys, answered, ids) as cap:
                    results = self.service.add_prepared(jobs, built, cap, answered)
        except ValidationFailed as exc:
            _placed(exc, batch)
            raise
        views = [self._enqueued(r, request.base_path) for r in results]
        created = any(r.created for r in results)
        status = 201 if created else 200
        if batch:
            return json_response(status, {"jobs": views})
        view = views[0]
        headers = {"Content-Type": JSON_TYPE}
        if created:
            headers["Location"] = view["status_url"]
        return ApiResponse(status, enqueued_json(view), headers)

    def _enqueue_requests(self, data: Any) -> tuple[list[EnqueueRequest], bool]:
        if not isinstance(data, dict):
            raise ValidationFailed('the body must be a JSON object: one job, or {"jobs": [...]}')
        if "jobs" not in data:
            job = _enqueue_request(data, ())
            return [_check_payload(self.runtime.registry, job, ())], False
        items = data["jobs"]
        extra = sorted(set(data) - {"jobs"})
        if extra:
            raise ValidationFailed('a batch body holds only "jobs"', {"unexpected": extra})
        if not isinstance(items, list) or not items:
            raise ValidationFailed('"jobs" must be a non-empty list of jobs')
        limit = self.settings.max_batch
        if len(items) > limit:
            raise PayloadTooLarge(
                f"a batch holds at most {limit} jobs; this one has {len(items)}",
                {"limit": limit, "size": len(items)},
            )
        read = _read_batch(items)  # None: some job is invalid, and each is read alone
        parsed: list[EnqueueRequest] = []
        problems: list[Any] = []
        for index, item in enumerate(items):
            try:
                job = _enqueue_request(item, ("jobs", index)) if read is None else read[index]
                parsed.append(_check_payload(self.runtime.registry, job, ("jobs", index)))
            except ValidationFailed as exc:
                problems.append({"index": index, "message": exc.message, "details": exc.details})
        if problems:
            raise ValidationFailed("some jobs in the batch are invalid; none were stored", problems)
        return parsed, True

    def _enqueued(self, result: AddResult, base_path: str) -> dict[str, Any]:
        job = result.job
        return {
            "id": job.id,
            "state": job.state.value,
            "status_url": f"{base_path}/status/{job.id}",
            "created": result.created,
        }

    def status(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        query: StatusQuery = request.params
        wait = query.wait
        # A cached body holds no attempts or webhooks: asked for them, skip the cache.
        extras = query.attempts or query.webhooks
        cached = None if extras else self.cache.lookup(tenant, job_id)
        if cached is not None:
            self.cache.count(hit=True)
            return ApiResponse(200, cached, {"Content-Type": "application/json", "X-Cache": "hit"})
        ticket = self.cache.ticket(tenant)  # before the read: a change after it voids the put
        job = self.service.status(job_id, tenant)
        if wait > 0 and not job.terminal:
            try:
                with self.waits.hold(tenant) as slot:
                    job = self._wait_terminal(job, tenant, time.monotonic() + wait, slot)
            except TooManyWaits as exc:
                return errors.error_response(
                    exc.status,
                    exc.code,
                    exc.message,
                    exc.details,
                    {"Retry-After": str(exc.retry_after)},
                )
        if query.webhooks:
            answer = self._with_webhooks(job, tenant, query.attempts)
        elif query.attempts:
            answer = self._with_attempts(job, tenant)
        else:
            body = dumps(job_view(job))
            if job.terminal:  # only finished jobs: any other state is about to change
                self.cache.put(tenant, job_id, body, ticket)
            answer = ApiResponse(200, body, {"Content-Type": "application/json", "X-Cache": "miss"})
        # One count for each answer that says `X-Cache`: what the hit ratio's readers see.
        self.cache.count(hit=False)
        return answer

    def _with_webhooks(self, job: Job, tenant: str, attempts: bool) -> ApiResponse:
        """The job and its completion webhooks (and attempts, when asked too)."""
        view = job_view(job)
        view["webhooks"] = [webhook_view(d) for d in self.runtime.store.webhooks(job.id, tenant)]
        if attempts:
            self._put_history(view, job, tenant)
        return ApiResponse(
            200, dumps(view), {"Content-Type": "application/json", "X-Cache": "miss"}
        )

    def _with_attempts(self, job: Job, tenant: str) -> ApiResponse:
        """The job and its recorded attempts (a second read: attempts() is kept off get)."""
        view = job_view(job)
        self._put_history(view, job, tenant)
        return ApiResponse(
            200, dumps(view), {"Content-Type": "application/json", "X-Cache": "miss"}
        )

    def _put_history(self, view: dict[str, Any], job: Job, tenant: str) -> None:
        """The job's attempts into its view; a history that does not read is [] with
        attempt_history_error saying why (stored_rows.history_marker), not a 500."""
        found = stored_rows.attempts_or_marker(self.runtime.store, job.id, tenant)
        if found is None:  # purged between the two reads
            raise JobNotFound("job not found", {"id": job.id})
        attempts, marker = found
        view["attempt_history"] = [attempt_view(a) for a in attempts]
        if marker is not None:
            view["attempt_history_error"] = marker

    def _wait_terminal(self, job: Job, tenant: str, deadline: float, slot: Slot) -> Job:
        """Poll the store until the job is terminal or the deadline passes.

        Polling, not the store notifier: the notifier announces new work, not
        finished work, and a short backoff costs one indexed read per nap. A wait
        whose slot another tenant took over (WaitSlots) answers at its next nap.
        """
        nap = _POLL_FIRST
        while not job.terminal:
            left = deadline - time.monotonic()
            # Answer now: the server is about to close, or another tenant took the slot.
            if left <= 0 or server_stopping() or slot.ending:
                break
            time.sleep(min(nap, left))
            nap = min(nap * 2, _POLL_MAX)
            job = self.service.status(job.id, tenant)
        return job

    def list_jobs(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        q: ListQuery = request.params
        return self._page(
            JobQuery(tenant, q.state, q.queue, q.type, limit=q.limit, cursor=q.cursor)
        )

    def dlq(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        q: DlqQuery = request.params
        return self._page(
            JobQuery(tenant, JobState.DEAD, q.queue, q.type, limit=q.limit, cursor=q.cursor)
        )

    def _page(self, query: JobQuery) -> ApiResponse:
        body = page_body(self.service.list_jobs, query)
        return ApiResponse(200, body, {"Content-Type": JSON_TYPE})

    def cancel(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        request.no_body(self.settings.max_body_bytes)
        job = self.service.cancel(job_id, tenant)
        self.cache.drop(tenant, job_id)
        return self._job(job)

    def redrive_room(self, tenant: str, exact: int | None = None) -> AbstractContextManager[Any]:
        """The room the tenant's backlog quota leaves for redriven jobs (None: no quota):
        EnqueueGate.redrive_room, or no limit when no tenant limit is set."""
        return nullcontext(None) if self.gate is None else self.gate.redrive_room(tenant, exact)

    def backlog_cap(self, tenant: str) -> Backlog | None:
        """The backlog cap the store keeps on the tenant's redrives (None: no quota)."""
        return None if self.gate is None else self.gate.cap(tenant)

    def redrive_charge(self, tenant: str) -> Charge | None:
        """What a redrive takes from the tenant's enqueue bucket, a token a job (None:
        no rate): EnqueueGate.redrive_charge."""
        return None if self.gate is None else self.gate.redrive_charge(tenant)

    def nothing_dead(self, tenant: str, queue: str | None, type_: str | None) -> bool:
        """Under tenant limits, whether a bulk redrive of this filter has no dead job of
        the tenant's to move: then it answers none moved, not the full backlog's 429
        (asked for room first, a tenant with no dead job was told to retry, forever).
        Without limits no room is asked for, and the redrive's own listing finds none.
        An empty page with a cursor (a filtered listing that stopped at its scan budget,
        SQLite and Redis) has not looked everywhere: that is not "none"."""
        if self.gate is None:
            return False
        found = self.service.list_jobs(
            JobQuery(tenant, JobState.DEAD, queue, type_, limit=1, bodies=False)
        )
        return not found.jobs and found.next_cursor is None

    def redrive(self, request: ApiRequest, job_id: str) -> ApiResponse:
        tenant = self.tenant(request)
        request.no_body(self.settings.max_body_bytes)
        return self._job(self.redrive_one(tenant, job_id))

    def redrive_one(self, tenant: str, job_id: str) -> Job:
        """One dead job back to the queue, for the API's route and the dashboard's.

        Under tenant limits the job is read first: one that cannot be redriven is 404
        or 409 whatever the backlog. Asked only inside the quota's room, a queued job
        met with the backlog full answered 429 with a Retry-After, and the client that
        waited as told got the 409 it could have had at once. (service.redrive reads it
        again, for a job redriven or gone in between; without limits once is enough.)"""
        if self.gate is not None:
            self.service.redrivable(job_id, tenant)
        with self.redrive_room(tenant, exact=1):
            charge = self.redrive_charge(tenant)
            job = self.service.redrive(job_id, tenant, self.backlog_cap(tenant), charge)
        self.cache.drop(tenant, job_id)
        return job

    def redrive_all(self, request: ApiRequest) -> ApiResponse:
        tenant = self.tenant(request)
        data = request.json(self.settings.max_body_bytes, allow_empty=True)
        if not request.body.strip():
            data = {}  # no body: no filters (a JSON null is not an object, and is refused)
        elif isinstance(data, dict):
            data = integral_floats(RedriveAllRequest, data)  # 5.0 is the integer 5 in JSON
        try:
            # Strict, as /enqueue is: a bulk action must not read true or "5" as a limit.
            filters = RedriveAllRequest.model_validate(data, strict=True)
        except ValidationError as exc:
            raise errors.from_validation(exc) from exc
        # Echoed, so a client calling again (as `spool dlq redrive --all` does) passes
        # the server's own bound back and never reads its own clock.
        bound = filters.died_before or self.service.redrive_bound()
        moved: list[str] = []  # ids only: a whole job may carry a 256 KiB payload
        if self.nothing_dead(tenant, filters.queue, filters.type):
            return json_response(200, {"redriven": 0, "ids": moved, "died_before": bound})
        with self.redrive_room(tenant) as room:
            limit = filters.limit if room is None else min(filters.limit, room)
            for job in self.service.redriving(
                tenant,
                filters.queue,
                filters.type,
                limit,
                died_before=bound,
                cap=self.backlog_cap(tenant),
                charge=self.redrive_charge(tenant),
            ):
                self.cache.drop(tenant, job.id)
                moved.append(job.id)
        return json_response(200, {"redriven": len(moved), "ids": moved, "died_before": bound})

    def health(self, request: ApiRequest) -> ApiResponse:
        # The store's check on a thread of its own, answered within HEALTH_DEADLINE: a
        # store that took the connection and said nothing held the probe for its whole
        # call deadline (Postgres 35 s, DynamoDB's retries about two minutes).
        self._health_probe.run(HEALTH_DEADLINE)
        body: dict[str, object] = {"status": "ok", "store": "ok"}
        warnings = store_warnings(self.runtime.store)
        if warnings:
            body["warnings"] = warnings
        return json_response(200, body)

    def _check_store(self) -> None:
        # One cheap read proves the store answers; a down store makes this a 503, and
        # so does one that answers reads but already knows it cannot take a job.
        now = self._timer()
        if now >= self._healthy_until:
            self.runtime.store.get("j_health_probe")
            self._healthy_until = now + self._health_for
        # Every time: cached with the read it hid a refused write for up to
        # SPOOL_HEALTH_CACHE_SECONDS. SQLite and DynamoDB read nothing here (what this
        # process already knows); Postgres asks transaction_read_only and Redis sets a
        # key of its own that expires in a second: one round trip each.
        self.runtime.store.check_writable()

    def metrics_text(self, request: ApiRequest) -> ApiResponse:
        # Public metrics check no key, so none signs in: every string sent as one was
        # kept as a key trusted at that address, and eight of them pushed its owner out.
        if not self.settings.metrics_public:
            with self._sign_in(request):
                authorize_metrics(self.settings, self.keys, request.header)
        body = self.metrics.exposition().decode("utf-8")
        # It names every tenant's queues, and its key rides in X-API-Key, which a shared
        # cache does not treat as credentials the way it treats Authorization.
        headers = {"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"}
        return ApiResponse(200, body, headers)

    def openapi(self, request: ApiRequest) -> ApiResponse:
        self.tenant(request)
        from chalicelib.api.openapi import document

        return json_response(200, document(self.settings, self.runtime.registry))


def store_warnings(store: object) -> list[str]:
    """What the store's server is set to do that can lose acknowledged jobs though
    every call succeeds (Redis: an allkeys-* maxmemory-policy), as last read by
    check_writable. Only the Redis store has such settings, so it is the only one
    with `warnings`; /health stays 200 (the store works) and says it in its body."""
    read = getattr(store, "warnings", None)
    return list(read()) if callable(read) else []


# Seconds /health waits for the store's check: under a load balancer's usual probe
# timeout (5 s), over a healthy check's milliseconds and SQLite's 1 s for its lock.
HEALTH_DEADLINE = 3.0
# Seconds the check's thread waits for work before it looks whether its Edge is gone.
_PROBE_IDLE = 60.0


class HealthProbe:
    """Run `check` (a bound method) on a thread of its own, at most one run at a time,
    each caller waiting for a run up to a deadline: StoreUnavailable when it overruns.

    A caller that finds a run in flight waits for that run instead of starting
    another, so a frozen store holds one thread, not one per probe. The thread is
    kept (a SQLite store gives each thread a connection of its own, kept until the
    store closes) and ends once the check's owner is gone."""

    def __init__(self, check: Callable[[], None]) -> None:
        self._check = weakref.WeakMethod(check)  # type: ignore[arg-type]
        self._cond = threading.Condition()
        self._wanted = False
        self._busy = False
        self._runs = 0  # runs finished
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def run(self, deadline: float) -> None:
        with self._cond:
            if not self._busy:
                self._busy = self._wanted = True
                if self._thread is None:
                    self._start()
                self._cond.notify_all()
            goal = self._runs + 1
            if not self._cond.wait_for(lambda: self._runs >= goal, deadline):
                raise StoreUnavailable(
                    f"the job store gave no answer to /health's check within {deadline:g} s; "
                    "try again shortly",
                    retry_after=5,
                )
            error = self._error
        if error is not None:
            raise error

    def _start(self) -> None:
        """Start the check's thread (the condition held), or StoreUnavailable (503) when
        none can be started (address space or threads at their limit, for now): left
        busy, every later probe waited for a run that never came, 503 until restarted."""
        # Outside any one invocation: it runs the checks of later ones too.
        thread = logs.outside_thread(self._loop, name="spool-health")
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            self._busy = self._wanted = False
            raise StoreUnavailable(
                f"the server could not start a thread to check the job store ({exc}): it is "
                "short of memory or threads for now; try again shortly",
                retry_after=5,
            ) from exc
        self._thread = thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._wanted, _PROBE_IDLE):
                    if self._check() is None:
                        self._thread = None
                        return
                    continue
                self._wanted = False
            check = self._check()
            error: BaseException | None = None
            try:
                if check is not None:
                    check()
            except BaseException as exc:  # handed to the callers, raised there
                error = exc
            del check
            with self._cond:
                self._error = error
                self._runs += 1
                self._busy = False
                self._cond.notify_all()


class _SignIn:
    """Count a failed authentication against the client; past its rate, answer 429,
    and check no credential it has not signed in with before (FailedSignIns).

    A credential that has signed in from this address is always checked, so a
    guesser on the same address cannot lock the key's owner out. A key refused as no
    tenant's is first offered to `Edge._refuse_operator_key` with `operator_key`
    (the 403 that says what the route needs), when given.

    A class, not a @contextmanager generator: every request with a key enters one,
    and the generator's machinery cost about as much as the checks (stop 42)."""

    __slots__ = ("_credential", "_edge", "_operator_key", "_request", "_signed")

    def __init__(self, edge: Edge, request: ApiRequest, operator_key: str | None = None) -> None:
        self._edge = edge
        self._request = request
        self._operator_key = operator_key
        self._credential = ""
        self._signed: bytes | None = None

    def signed(self, key: str | None) -> bytes | None:
        """auth.digest(key) for the key check, kept for the sign-in's own record when
        `key` is the very credential it counts (the same header value: compared by
        identity, so no secret is compared in time that depends on it), where each
        made its own: one SHA-256 a request instead of two."""
        if not key:
            return None
        offered = auth.digest(key)
        if key is self._credential:
            self._signed = offered
        return offered

    def __enter__(self) -> None:
        request = self._request
        # The key the routes read (X-API-Key, else a Bearer token for /metrics), not the
        # raw headers: one valid key sent with eight Authorization headers no route reads
        # took all eight places an address has for trusted keys, and locked their owners out.
        self._credential = credential = metrics_key(request.header) or ""
        wait = self._edge.sign_ins.refusing(request.client, credential)
        if wait > 0:
            raise Edge._too_many_failures(wait)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        edge, request = self._edge, self._request
        if exc is None:
            edge.sign_ins.succeeded(request.client, self._credential, self._signed)
            return
        if isinstance(exc, Unauthorized):
            if self._operator_key is not None:
                edge._refuse_operator_key(request, self._operator_key)
            if not self._credential:
                # No key at all guesses nothing. Counted, it let any web page the
                # operator opened (an <img>, a no-cors fetch: neither can add a header)
                # spend this address's allowance and shut its sign-in (stop 55).
                return
            wait = edge.sign_ins.failed(request.client)
            if wait > 0:
                raise Edge._too_many_failures(wait) from None
        # Otherwise the exception goes on as it is.


# The most a job's payload may take in the answers that return it (GET /status, GET
# /jobs, the dashboard's job, cancel's and redrive's), counted as Lambda counts its
# answer (pages.carried_size). Lambda refuses an answer over 6 MB (API Gateway then
# answers 502): SPOOL_MAX_BODY_BYTES goes up to 10 MiB, and an 8 MB body of "é" made
# 29 MB answers, a job no one could read (stop 49). The rest of the answer needs room
# too: the result (at most worker.MAX_RESULT_BYTES, twice that carried) and the
# attempts `?attempts=true` and the dashboard's job add (at the default settings, 25
# of them, each with a traceback and a log tail: up to about 2 MiB carried).
PAYLOAD_ANSWER_BYTES = 2 * 1024 * 1024
# How much larger than its request body a payload can grow in an answer, at most:
# "é" (2 bytes) is `\u00e9` there and its backslash is escaped again (7), `1e15`
# (4 bytes) is 1000000000000000.0 (18). Bodies below PAYLOAD_ANSWER_BYTES / this
# (every body at the default limit) are not measured.
ANSWER_GROWTH = 5


def _check_answer_sizes(jobs: list[EnqueueRequest], batch: bool) -> None:
    """Refuse (413, before anything is stored) a job whose payload the answers that
    return it could not carry on Lambda."""
    for index, job in enumerate(jobs):
        size = carried_size(dumps(job.payload))
        if size > PAYLOAD_ANSWER_BYTES:
            where = f"job {index} of the batch: its " if batch else "the job's "
            details: dict[str, Any] = {"limit": PAYLOAD_ANSWER_BYTES, "size": size}
            if batch:
                details["index"] = index
            raise PayloadTooLarge(
                f"{where}payload takes {size} bytes in the answers that return it "
                f"(GET /status, GET /jobs); the limit is {PAYLOAD_ANSWER_BYTES}, so that "
                "they fit the 6 MB Lambda can answer: send a smaller payload, or keep the "
                "data elsewhere (a file or an S3 object) and send where it is"
                + ("; none of the batch's jobs were stored" if batch else ""),
                details,
            )


def enqueued_json(view: dict[str, Any]) -> str:
    """dumps(view) for the view Edge._enqueued makes (these four keys, in this order:
    three texts and a bool), written directly: the encoder's set-up for one small
    dict cost about as much as the rest of the answer (docs/benchmarks.md, stop 42).
    Each text is escaped by the encoder's own function (tests/test_enqueued_json.py)."""
    return (
        f'{{"id":{quoted(view["id"])},"state":{quoted(view["state"])},'
        f'"status_url":{quoted(view["status_url"])},'
        f'"created":{"true" if view["created"] else "false"}}}'
    )


def _enqueue_request(item: Any, loc: tuple[str | int, ...]) -> EnqueueRequest:
    if not isinstance(item, dict):
        raise ValidationFailed("a job must be a JSON object", {"loc": list(loc)})
    if not SERVER_OWNED.isdisjoint(item):
        owned = sorted(SERVER_OWNED.intersection(item))
        raise ValidationFailed(
            "these fields are set by the server and cannot be sent: " + ", ".join(owned),
            {"fields": owned, "loc": [*loc, owned[0]]},
        )
    plain = plain_job(item)  # the commonest body, read without a second parse
    if plain is not None:
        return plain
    # Strict JSON validation: "5" is not a number here, exactly as /openapi.json says.
    try:
        return EnqueueRequest.model_validate_json(
            dumps(integral_floats(EnqueueRequest, item)), strict=True
        )
    except ValidationError as exc:
        _refuse_unreadable(exc, loc, item)
        raise ValidationFailed("the job is invalid", errors.validation_details(exc, loc)) from exc


def _placed(exc: ValidationFailed, batch: bool) -> None:
    """`loc` put in the details of `exc`, a refusal the service made of a job's field, as
    every refusal of the edge's own has: the service names the field (`field`, or the
    `type` no handler has) but knows nothing of a batch's ["jobs", N]."""
    details = exc.details
    if isinstance(details, dict):  # one job (a batch of one is re-raised as it was)
        _place(details, ("jobs", 0) if batch else ())
    elif isinstance(details, list):
        for problem in details:
            if isinstance(problem, dict) and isinstance(problem.get("details"), dict):
                _place(problem["details"], ("jobs", problem["index"]))


def _place(details: dict[str, Any], prefix: tuple[str | int, ...]) -> None:
    if "loc" in details:
        return
    field = details.get("field")
    if isinstance(field, str):
        details["loc"] = [*prefix, field]
    elif "known" in details and "type" in details:  # UnknownJobType's
        details["loc"] = [*prefix, "type"]


@functools.cache
def _batch_reader() -> TypeAdapter[list[EnqueueRequest]]:
    return TypeAdapter(list[EnqueueRequest])  # built on first use, not on `import app`


def _read_batch(items: list[Any]) -> list[EnqueueRequest] | None:
    """Every job of a batch read in one strict validation, as _enqueue_request reads
    each (half the time a job of the one-by-one reading); None when any job is not
    valid, for the one-by-one reading to say which and why in its own words."""
    if not all(type(item) is dict and SERVER_OWNED.isdisjoint(item) for item in items):
        return None
    try:
        return _batch_reader().validate_json(
            dumps([integral_floats(EnqueueRequest, item) for item in items]), strict=True
        )
    except ValidationError:
        return None


def _refuse_unreadable(exc: ValidationError, loc: tuple[str | int, ...], data: Any) -> None:
    """pydantic's JSON parser refuses two things json.loads took: an unpaired UTF-16
    surrogate ("\\ud800") and very deep nesting. Its words ("unexpected end of hex
    escape at line 1 column 38") point into Spool's re-encoded copy, not the request.

    `data` is what was re-encoded (the job, or its payload at `loc`): a surrogate's
    refusal names the string (or the name) holding it, as every other 422 names its
    field; it said only [] or ["jobs", N], whatever the size of the payload."""
    for error in exc.errors():
        if error["type"] != "json_invalid":
            continue
        where = list(loc)
        if "recursion" in error["msg"]:
            # Where the limit was crossed, as a surrogate's place: [] said nothing of it.
            reason = f"its {NESTED_TOO_DEEP}: more than {MAX_NESTING} levels"
            place = deep_path(data, MAX_NESTING)
            if place is not None:
                where += place
                reason += f" (at {shown_path(place)})"
        elif "escape" in error["msg"] or "surrogate" in error["msg"]:
            reason = (
                "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), not a character"
            )
            place = surrogate_path(data)
            if place is not None:
                where += place
                reason += f" (at {shown_path(place)})"
        else:
            reason = "it cannot be read as JSON"
        raise ValidationFailed(f"the job is invalid: {reason}", {"loc": where}) from exc


def integral_floats(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema counts 144.0 as an integer and pydantic's strict mode does not:
    turn integral floats into ints for the model's int fields, and nothing else.

    `data` itself when there is none to turn (no copy: every caller only reads it),
    else a copy with them turned."""
    out = data
    for name in _int_fields(model):
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            if out is data:
                out = dict(data)
            out[name] = int(value)
    return out


@functools.cache
def _int_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that take an int (found once per model, not once per job)."""
    return tuple(
        name
        for name, field in model.model_fields.items()
        if int in (field.annotation, *get_args(field.annotation))
    )


def _check_payload(
    registry: Registry, job: EnqueueRequest, loc: tuple[str | int, ...]
) -> EnqueueRequest:
    """Hold typed payloads to their JSON schema strictly too; the service then
    validates again (leniently) and normalizes, so this only ever refuses more.

    The job comes back with the payload as checked, its integral floats made ints:
    handed on as sent, 9.3e18 in an int field (an integer, as JSON Schema counts) was
    refused by the lenient reading as "Unable to parse input string as an integer",
    at a loc without "payload", where 9300000000000000000 was taken."""
    try:
        spec = registry.get(job.type)
    except UnknownJobType as exc:
        if isinstance(exc.details, dict):
            _place(exc.details, loc)
        raise
    if spec.payload_model is None:
        return job
    payload = integral_floats(spec.payload_model, job.payload)
    with PayloadCheck(job.type, payload):  # the model is the handler author's code
        try:
            spec.payload_model.model_validate_json(dumps(payload), strict=True)
        except ValidationError as exc:
            _refuse_unreadable(exc, (*loc, "payload"), payload)
            raise ValidationFailed(
                f"payload does not match the {job.type!r} handler's model",
                {"type": job.type, "errors": told_details(exc, payload, (*loc, "payload"))},
            ) from exc
    if payload is job.payload:
        return job  # the common case: no float made an int, nothing to copy
    return job.model_copy(update={"payload": payload})


# -- the process-wide edge ---------------------------------------------------

_edge: Edge | None = None
_edge_lock = threading.Lock()


def current() -> Edge:
    """The Edge for the current runtime, rebuilt if the runtime was replaced."""
    global _edge
    rt = runtime_module.current()
    edge = _edge
    if edge is not None and edge.runtime is rt:
        return edge
    with _edge_lock:
        if _edge is None or _edge.runtime is not rt:
            _edge = Edge(rt)
        return _edge


def install(edge: Edge) -> None:
    """Serve `edge`, built for the current runtime: `spool serve` built it in its
    start-up check (chalicelib/edge_settings.check_edge), and building it again on
    the first request would repeat that work and throw its result cache away."""
    global _edge
    if edge.runtime is not runtime_module.current():
        raise ValueError("the edge was built for another runtime than the current one")
    with _edge_lock:
        _edge = edge


OPERATIONS: Mapping[str, Callable[..., ApiResponse]] = {
    "enqueue": Edge.enqueue,
    "status": Edge.status,
    "list_jobs": Edge.list_jobs,
    "dlq": Edge.dlq,
    "cancel": Edge.cancel,
    "redrive": Edge.redrive,
    "redrive_all": Edge.redrive_all,
    "health": Edge.health,
    "metrics": Edge.metrics_text,
    "openapi": Edge.openapi,
    **ui_routes.OPERATIONS,  # the dashboard (chalicelib/ui/)
}


# Each operation's method and route template, as app.py routes them (the request's
# log line names the template, never the raw path; tests/test_logs.py checks this
# table against app.py's routes).
ROUTES: Mapping[str, tuple[str, str]] = {
    "enqueue": ("POST", "/enqueue"),
    "status": ("GET", "/status/{id}"),
    "list_jobs": ("GET", "/jobs"),
    "dlq": ("GET", "/dlq"),
    "cancel": ("POST", "/jobs/{id}/cancel"),
    "redrive": ("POST", "/dlq/{id}/redrive"),
    "redrive_all": ("POST", "/dlq/redrive"),
    "health": ("GET", "/health"),
    "metrics": ("GET", "/metrics"),
    "openapi": ("GET", "/openapi.json"),
    **ui_routes.ROUTES,
}
# Each route's query parameters (chalicelib/api/query.py); a route not named takes none.
QUERIES: Mapping[str, type[BaseModel]] = {
    "status": StatusQuery,
    "list_jobs": ListQuery,
    "dlq": DlqQuery,
    **ui_routes.QUERIES,
}
# Routes that read nothing from their query string and ignore it: load balancers'
# probes, Prometheus scrape configs and browsers add parameters of their own.
IGNORED = frozenset({"health", "metrics", "ui_page", "ui_static"})
# The tenant the request's key named, once authenticated (None: not, or no key).
_request_tenant: ContextVar[str | None] = ContextVar("spool_request_tenant", default=None)


def handle(operation: str, request: ApiRequest, **params: str) -> ApiResponse:
    """Run one route and log one line for it: method, route template, status,
    duration and tenant (never the key, the query or the body)."""
    started = time.monotonic()
    token = _request_tenant.set(None)
    try:
        response = _answer(operation, request, **params)
        method, route = ROUTES.get(operation, ("-", operation))
        logs.http_request(
            method,
            route,
            response.status,
            time.monotonic() - started,
            _request_tenant.get(),
            job_id=params.get("job_id"),
            **errors.answered_error(response),
        )
        return response
    finally:
        _request_tenant.reset(token)


def _answer(operation: str, request: ApiRequest, **params: str) -> ApiResponse:
    """Run one route; every failure becomes Spool's error shape, never a traceback."""
    try:
        edge = current()
    except ValueError as exc:
        # A malformed setting (SPOOL_API_KEYS, a limit...): every request would fail
        # the same way. The operator reads which one in the log; clients get a 503
        # that names no setting, rather than a 500 per request.
        errors.log.error("the API cannot start: %s", exc)
        return errors.from_exception(Misconfigured())
    except Exception as exc:
        return _failure(exc)
    try:
        request = _read_query(edge, operation, request)
        response = OPERATIONS[operation](edge, request, **params)
    except Exception as exc:
        response = _failure(exc, reading=ROUTES.get(operation, ("",))[0] == "GET")
    if operation.startswith("ui_"):
        # Its errors too (they may echo an id or a file name): the page's own headers,
        # and never cached. An answer that set its own keeps them.
        for name, value in ui_routes.ERROR_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _read_query(edge: Edge, operation: str, request: ApiRequest) -> ApiRequest:
    """The request with its query string read (chalicelib/api/query.py) into the
    route's parameters, before the route runs: one reader, one set of rules, on every
    route. No POST route reads its query string: its filters are in the body. Ignored,
    a `?queue=X` on a bulk purge or redrive, as the GET listings take it, acted on
    every queue of the tenant; refused, nothing is done.

    A query refused is answered only to a valid key: every route read here needs one,
    and the refusal names the route's parameters, which a client without a key was
    told (422) where every other request of its gets 401."""
    if operation in IGNORED:
        return request
    method, route = ROUTES.get(operation, ("", operation))
    try:
        params = query.read(QUERIES.get(operation, NoQuery), request.query, route)
    except SpoolError as exc:
        operator_key = ui_routes.OPERATOR_KEY_HERE if operation.startswith("ui_") else None
        edge.tenant(request, operator_key or OPERATOR_KEY_ON_JOBS)  # 401 (or 429) first
        if method == "POST" and isinstance(exc, ValidationFailed):
            exc.message += ": send its options in the JSON body"
        raise
    return request.with_params(params)


def _failure(exc: Exception, reading: bool = False) -> ApiResponse:
    """Spool's error shape for `exc`; `reading`: the request was a GET, which changes
    nothing a client sees. A store write it made on the way (Redis's /metrics installs
    its summaries once per process) that lost its reply was answered "so this change may
    have been applied: check its state before retrying (an enqueue is safe to retry
    ...)": untrue of a read, during a Redis `CLIENT PAUSE ... WRITE` (stop 60)."""
    if reading and isinstance(exc, UncertainWrite):
        exc = StoreUnavailable(
            f"{exc.reason}; this request changes nothing: try again shortly",
            retry_after=exc.retry_after,
        )
    if isinstance(exc, StoreUnreachable):
        # Opening the store failed (a cold start): the operator's message names the
        # database URL, so it goes to the log and the client gets the generic one.
        errors.log.warning("%s", exc.message)
        exc = StoreUnavailable(exc.public_message, retry_after=exc.retry_after)
    elif isinstance(exc, StoreUnavailable) and exc.public is not None:
        # The same for a message naming a file on the server (the SQLite database's
        # path, told to anyone asking /health): the client reads what went wrong.
        errors.log.warning("%s", exc.message)
        exc = StoreUnavailable(exc.public, retry_after=exc.retry_after)
    return errors.from_exception(exc)
