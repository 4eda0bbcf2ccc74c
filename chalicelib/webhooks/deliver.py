"""Workers deliver the outbox: claim due deliveries, POST them signed, record how
each attempt ended.

Delivery runs on its own threads (`Deliverer.run` beside a long-running
worker, `Deliverer.drain` beside the scheduled function's drain), never on the
job pool's, so a slow or dead receiver costs webhook slots, not job
throughput. Each attempt is bounded by SPOOL_WEBHOOK_TIMEOUT and holds its
delivery under a lease longer than that; a worker killed mid-delivery leaves
the lease to run out and another worker delivers again with the same
webhook-id (at least once; receivers drop duplicates by that id).

An answer of 2xx delivers it. 410 Gone, a URL the guard refuses (checked
again here with fresh DNS: an address can change after enqueue) or a tenant
that no longer has a secret fail it at once. Anything else (connection error,
timeout, 3xx, 4xx, 5xx) is retried with exponential backoff and jitter
(SPOOL_WEBHOOK_BACKOFF up to SPOOL_WEBHOOK_BACKOFF_MAX, honouring a longer
Retry-After) until SPOOL_WEBHOOK_MAX_ATTEMPTS attempts, then failed: visible on
the job (GET /status/{id}?webhooks=true) and in /metrics.

A store that fails (any error: chalicelib/store_outage.py) is an outage: said
once when it starts and once when it ends, claims paused with jittered backoff,
and an attempt's outcome the store would not take is held and recorded first
when it is back (a delivery made is not made again because its record failed).
A stop during an outage tries once more, then names what it could not record:
those deliveries' leases run out and they are sent again (at least once).

The tenants' secrets may live in SSM (SPOOL_WEBHOOKS_PARAMETER: source.py), read on
first need and kept a while. Before each claim they are read (from the cache, mostly):
while SSM will not give them, or gives a malformed value, nothing is claimed (a claim
spends one of a delivery's attempts), so every delivery waits in the outbox and is
made once they read again; said once when that starts and once when it ends.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chalicelib import logs, ssrf
from chalicelib.config import ConfigError, Settings
from chalicelib.errors import JobUnreadable
from chalicelib.storage.base import JobStore
from chalicelib.store_outage import Outage, is_store_error, lost_write
from chalicelib.webhooks import body, config, outbox, signing, source
from chalicelib.webhooks.outbox import Delivery

log = logging.getLogger("spool.webhooks")

USER_AGENT = "spool-webhooks/1"
# Between tries at the tenants' secrets while their parameter cannot be read.
SECRETS_PAUSE = 5.0
MAX_RETRY_AFTER = 3600.0
# Called after every attempt with (outcome, seconds): the worker's metrics hook in here.
Observer = Callable[[str, float], None]
Sender = Callable[[Delivery, bytes, dict[str, str], config.WebhookSettings], dict[str, Any]]


class _Outcome:
    """One attempt's outcome, to be recorded (held while the store is down)."""

    def __init__(
        self, delivery: Delivery, outcome: str, retry_at: Any, error: str | None, started: float
    ) -> None:
        self.delivery = delivery
        self.outcome = outcome
        self.retry_at = retry_at
        self.error = error
        self.started = started


class Deliverer:
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        observe: Observer | None = None,
        send: Sender | None = None,
        resolver: ssrf.Resolver = ssrf.system_resolver,
    ) -> None:
        self.store = store
        self.settings = settings
        # The knobs (and SPOOL_WEBHOOKS' tenants), checked now; the tenants from a
        # parameter are read per attempt, through its cache.
        self.hooks = config.validate(settings)
        self._from_parameter = bool(source.parameter(settings))
        self._secrets_missing = False  # their parameter could not be read last time
        self.observe = observe
        self._resolver = resolver
        self._send = send or self._post
        self._rng = random.Random()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.hooks.concurrency,
            thread_name_prefix="spool-webhook",
            initializer=logs.inherited_pool(),
        )
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.outage = Outage(log, "webhook delivery")
        self._pause = 0.0  # backoff before the next claim while the store is down
        self._held: list[_Outcome] = []  # outcomes the store did not take yet
        self._held_lock = threading.Lock()

    # -- the loops --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set: claim as slots free up, nap when nothing is due."""
        inflight: set[concurrent.futures.Future[None]] = set()
        while not stop.is_set():
            free = self.hooks.concurrency - len(inflight)
            ready = free > 0 and self._record_held() and self._secrets_ready()
            claimed = self._claim(free) if ready else []
            inflight.update(self._pool.submit(self.deliver, d) for d in claimed)
            if not inflight:
                stop.wait(max(self.hooks.poll, self._pause))
                continue
            done, inflight = concurrent.futures.wait(
                inflight,
                timeout=self.hooks.poll,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            del done
        concurrent.futures.wait(inflight)
        self._let_go_held()

    def drain(self, deadline: float | None = None) -> int:
        """Deliver what is due now, claiming only while an attempt still fits before the
        deadline (time.monotonic()); returns how many attempts were made."""
        made = 0
        while deadline is None or time.monotonic() + self.hooks.timeout + 1 < deadline:
            ready = self._record_held() and self._secrets_ready()
            claimed = self._claim(self.hooks.concurrency) if ready else []
            if not claimed:
                break
            list(self._pool.map(self.deliver, claimed))
            made += len(claimed)
        self._let_go_held()
        return made

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _claim(self, limit: int) -> list[Delivery]:
        try:
            with lost_write(
                "a claim of webhook deliveries",
                "the deliveries it may have leased are sent once their leases lapse "
                f"(in at most {self.hooks.lease_seconds:g}s)",
            ):
                claimed = self.store.claim_webhooks(limit, self.hooks.lease_seconds)
        except Exception as exc:  # any store error: an outage, tried again after a pause
            self._pause = self.outage.failed(exc)
            return []
        self._pause = 0.0
        self.outage.recovered()
        return claimed

    def _secrets_ready(self) -> bool:
        """Can the tenants' secrets be read now? Always, from SPOOL_WEBHOOKS; from its
        parameter, not while SSM refuses or the value is malformed: then claim nothing
        (see the module docstring) and try again after a pause."""
        if not self._from_parameter:
            return True
        try:
            config.from_settings(self.settings)
        except (source.WebhooksUnavailable, ConfigError) as exc:
            self._pause = max(self._pause, SECRETS_PAUSE)
            if not self._secrets_missing:
                self._secrets_missing = True
                log.error(
                    "webhook delivery paused: %s; deliveries wait in the outbox until it "
                    "can be read",
                    exc.message if isinstance(exc, source.WebhooksUnavailable) else exc,
                )
            return False
        if self._secrets_missing:
            self._secrets_missing = False
            log.warning("webhook delivery resumed: the webhook settings read again")
        return True

    def _record_held(self) -> bool:
        """Record the outcomes held from an outage, oldest first; False while the
        store still refuses them (claim nothing more until it takes them)."""
        with self._held_lock:
            held, self._held = self._held, []
        for index, done in enumerate(held):
            try:
                self._record(done)
            except Exception as exc:
                with self._held_lock:
                    self._held[:0] = held[index:]
                self._pause = self.outage.failed(exc)
                return False
        return True

    def _let_go_held(self) -> None:
        """Stopping: one more try at the held outcomes, then name those not recorded
        (their leases run out and they are delivered again)."""
        if self._held and not self._record_held():
            with self._held_lock:
                held, self._held = self._held, []
            log.error(
                "the store is still unavailable; %d webhook outcomes not recorded (they "
                "are sent again once their leases run out): %s",
                len(held),
                ", ".join(done.delivery.id for done in held),
            )

    # -- one attempt ------------------------------------------------------------------
    def deliver(self, delivery: Delivery) -> None:
        started = time.monotonic()
        try:
            outcome, retry_in, error = self._attempt(delivery)
        except Exception as exc:  # the store failed us (reading the job): the lease runs out
            if is_store_error(exc):
                self.outage.failed(exc)  # said once per outage, not per delivery
            else:
                log.warning("webhook %s could not be attempted", delivery.id, exc_info=True)
            if delivery.attempts < self.hooks.max_attempts:
                return  # retried when its lease runs out
            # Its last attempt: record the failure (if the store takes it), so an attempt
            # that fails the same way every time is not claimed again forever.
            outcome, retry_in, error = outbox.RETRYING, 0.0, _describe(exc)
        if outcome == outbox.RETRYING and delivery.attempts >= self.hooks.max_attempts:
            outcome = outbox.FAILED
            error = f"gave up after {delivery.attempts} attempts: {error}"
        retry_at = None
        if outcome == outbox.RETRYING:
            retry_at = self.store.clock.now() + timedelta(seconds=retry_in)
        done = _Outcome(delivery, outcome, retry_at, error, started)
        try:
            self._record(done)
        except Exception as exc:  # held, and recorded first once the store is back
            with self._held_lock:
                self._held.append(done)
            self.outage.failed(exc)

    def _record(self, done: _Outcome) -> None:
        delivery, outcome, error = done.delivery, done.outcome, done.error
        with lost_write(
            f"the outcome of webhook {delivery.id}",
            "it is held and recorded again once the store answers",
        ):
            applied = self.store.finish_webhook(
                delivery.id, delivery.lease_token or "", outcome, done.retry_at, error
            )
        self.outage.recovered()
        if self.observe is not None:  # the attempt was made, whoever records its outcome
            self.observe(outcome, time.monotonic() - done.started)
        if not applied and not self._written(done):
            # The lease lapsed (a stalled thread, a hung POST) and another worker holds
            # the delivery now: its outcome is the delivery's, not this attempt's.
            log.info(
                "webhook %s: attempt %d of job %s not recorded (%s): its lease lapsed, "
                "and another worker took the delivery",
                delivery.id,
                delivery.attempts,
                delivery.job_id,
                outcome,
            )
            return
        self._count(outcome)
        level = logging.WARNING if outcome == outbox.FAILED else logging.INFO
        log.log(
            level,
            "webhook %s %s: job %s attempt %d%s",
            delivery.id,
            outcome,
            delivery.job_id,
            delivery.attempts,
            f" ({error})" if error else "",
        )

    def _written(self, done: _Outcome) -> bool:
        """Did an earlier write of this held outcome go through, though it raised (its
        reply lost)? Then the store refuses the rewrite, and the delivery stands as this
        attempt left it: no other worker claimed it since (a claim counts an attempt)."""
        delivery = done.delivery
        want = outbox.PENDING if done.outcome == outbox.RETRYING else done.outcome
        try:
            found = [d for d in self.store.webhooks(delivery.job_id) if d.id == delivery.id]
        except Exception:  # unreadable now: taken for another worker's, as it likely is
            return False
        return any(
            d.state == want and d.attempts == delivery.attempts and d.lease_token is None
            for d in found
        )

    def _count(self, outcome: str) -> None:
        if outcome == outbox.DELIVERED:
            self.delivered += 1
        elif outcome == outbox.FAILED:
            self.failed += 1
        else:
            self.retried += 1

    def _attempt(self, delivery: Delivery) -> tuple[str, float, str | None]:
        """(outcome, seconds until the next try, error) of one POST."""
        hooks = config.from_settings(self.settings)  # cached: a rotation applies at once
        tenant = hooks.tenant(delivery.tenant)
        if tenant is None or not tenant.keys:
            return outbox.FAILED, 0, f"the tenant has no webhook secret ({hooks.source})"
        try:
            job = self.store.get(delivery.job_id, delivery.tenant)
        except JobUnreadable as exc:
            # Not an outage: the same read fails the same way on every attempt, so
            # failed now, saying why (it burned every attempt, then "gave up").
            return outbox.FAILED, 0, unsent_why(exc)
        payload = body.build(delivery, job, hooks.max_result_bytes)
        now = int(self.store.clock.now().timestamp())
        headers = signing.headers(delivery.id, now, payload, tenant.keys)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        try:
            answer = self._send(delivery, payload, headers, hooks)
        except ssrf.Refused as exc:
            # The tenant reads this error; what a name resolves to inside the network
            # (or that it does not exist) is for the operator's log only, else any
            # internal name could be mapped by pointing a callback_url at it.
            log.warning("webhook %s refused by the SSRF guard: %s", delivery.id, exc)
            return outbox.FAILED, 0, f"refused by the SSRF guard: {_without_addresses(exc.public)}"
        except Exception as exc:  # connection refused, timeout, TLS, DNS hiccup
            return outbox.RETRYING, self._backoff(delivery.attempts), _describe(exc)
        status = int(answer["status"])
        if 200 <= status < 300:
            return outbox.DELIVERED, 0, None
        error = f"HTTP {status} from the receiver"
        if status == 410:
            return outbox.FAILED, 0, f"{error} (Gone: the endpoint asked not to be called again)"
        wait = self._backoff(delivery.attempts)
        later = _retry_after(answer.get("headers", {}).get("retry-after"))
        return outbox.RETRYING, max(wait, later or 0.0), error

    def _backoff(self, attempt: int) -> float:
        """Exponential with equal jitter: never less than half the step, so a receiver
        that is down is not retried at once by every delivery."""
        step = min(self.hooks.backoff_cap, self.hooks.backoff_base * 2.0 ** min(attempt - 1, 30))
        return step / 2 + self._rng.random() * step / 2

    def _post(
        self,
        delivery: Delivery,
        payload: bytes,
        headers: dict[str, str],
        hooks: config.WebhookSettings,
    ) -> dict[str, Any]:
        """One POST through http_request's pinned, deadline-bounded connection: the
        guard resolves the name and every address is checked before connecting. The
        answer is its status line and headers: the body is never read (a 2xx whose
        body stalls or never ends was retried as a timeout, sent again and again)."""
        from chalicelib.builtin.http_request import HttpRequestPayload, perform

        request = HttpRequestPayload(
            method="POST",
            url=delivery.url,
            headers=headers,
            body=payload.decode(),
            timeout=hooks.timeout,
            follow_redirects=False,  # a redirect is an answer: retried, never followed
            max_body_bytes=0,
            response_headers=["retry-after"],
            retry_on_status=[],
        )
        return perform(
            request,
            hooks.policy,
            None,
            hooks.ca_file,
            self._resolver,
            read_body=False,
            ca_setting="SPOOL_WEBHOOK_CA_FILE",
        )


def unsent_why(exc: JobUnreadable) -> str:
    """A failed delivery's error when its job's record does not read: what is wrong
    (never the payload) and what to do."""
    reason = exc.reason or _describe(exc)
    return (
        f"not sent: the job's stored record cannot be read ({reason}); repair or delete "
        "the job's record; this webhook is not tried again"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.BadStatusLine | http.client.UnknownProtocol):
        # Their text is the receiver's first line: not echoed to whoever reads the job
        # (the callback URL is the enqueuer's choice; its answer is not for them to read).
        return f"{type(exc).__name__}: the receiver's answer is not HTTP/1.x"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[: outbox.MAX_ERROR_CHARS]


_ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f:.]*[.:][0-9A-Fa-f:.]*")


def _without_addresses(text: str) -> str:
    """The guard's reason with every IP address in it replaced by "an address"."""

    def hide(match: re.Match[str]) -> str:
        token = match.group(0)
        core = token.rstrip(":.")
        try:
            ipaddress.ip_address(core)
        except ValueError:
            return token
        return "an address" + token[len(core) :]

    # "IP address 10.0.0.5 is not on the allowlist" reads "an IP address is ...".
    return _ADDRESS_LIKE.sub(hide, text).replace("IP address an address", "an IP address")


def _retry_after(value: str | None) -> float | None:
    """Retry-After's delay-seconds, capped. ASCII digits only: str.isdigit() also
    takes '²' (a latin-1 byte a receiver can send), which float() refuses."""
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    return None
