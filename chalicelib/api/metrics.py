"""Prometheus metrics: system-wide job counts from the store, per-process timings.

Job counters and queue depth are read from the store at scrape time by a
custom collector, so every process reports the same totals whoever did the
work. Run duration and queue wait are histograms fed by a worker Middleware:
they only exist where attempts run, which is why a worker can push them to a
Pushgateway at the end of each invocation (a Lambda cannot be scraped).

Queue names are bounded before they become labels (chalicelib/api/metric_labels.py):
a tenant's made-up names cannot grow the exposition, and folded queues are
summed into `queue="_other"`, so totals stay exact. Who may read /metrics is
decided in chalicelib/api/auth.py (authorize_metrics): an operator, not a tenant.

Besides the totals, the store is asked per scrape for what people alert on:
the age of the oldest due job per queue (`spool_queue_oldest_due_age_seconds`)
and the workers that beat recently (`spool_workers_live`, and a bounded set of
`spool_worker_last_heartbeat_timestamp_seconds`). All store reads of one scrape
happen once, up front, in `_Reading.take`, whatever the number of families.
End-to-end latency (enqueue to finish) is a third worker histogram beside run
duration and queue wait.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from chalicelib import logs, worker_id
from chalicelib.api.metric_labels import OTHER, FirstSeen, QueueLabels, max_workers
from chalicelib.attempt_record import LIVE_SECONDS, live_seconds
from chalicelib.config import Settings
from chalicelib.middleware import Middleware
from chalicelib.models import (
    COUNTER_EVENTS,
    Completion,
    CounterKey,
    Job,
    JobState,
    WorkerBeat,
)
from chalicelib.redact import redact_url

if TYPE_CHECKING:
    from chalicelib.api.cache import ResultCache
    from chalicelib.limits import Hold
    from chalicelib.storage.base import JobStore
    from chalicelib.storage.queue_totals import QueueTotals

log = logging.getLogger("spool.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PUSH_JOB = "spool_worker"

# What each counter counts, as an alert reads it (docs/operations.md says the same): a
# redrive is no enqueue, and a redriven job that ends again counts again, so enqueued
# less the finished counts is not the jobs still to finish. "cancelled" said "before
# they ran", but a `retrying` job, whose attempts ran and failed, can be cancelled too.
_COUNTER_HELP = {
    "enqueued": "Jobs stored by an enqueue, once each (a repeated idempotency key or a "
    "redrive is not counted), system-wide.",
    "succeeded": "Jobs that finished successfully (a redriven job again), system-wide.",
    "failed": "Failed attempts (each retry or final failure; an attempt whose worker died "
    "counts when its lease lapses), system-wide.",
    "retried": "Failed attempts that were scheduled to run again, system-wide.",
    "dead": "Moves to the dead-letter store (a redriven job that dies again counts "
    "again), system-wide.",
    "cancelled": "Jobs cancelled while waiting (queued, or retrying after a failed "
    "attempt), system-wide.",
}
_WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# A handler's timeout may be 12 hours (handlers.MAX_TIMEOUT): with 900 s the last finite
# bound, every attempt past 15 minutes fell into +Inf alone and a quantile over them
# read 900, however long they ran.
_DURATION_BUCKETS = (*_WEBHOOK_BUCKETS, 3600, 4 * 3600, 43_200)
# A backlog of hours (workers down overnight, a rate limit far behind) is what this
# histogram is for: with 3600 s the last finite bound, a three-hour wait fell into +Inf
# alone and a quantile over it read one hour, however long the jobs waited.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 43_200, 86_400)
# Enqueue to finish includes every retry's backoff: hours are normal.
_END_TO_END_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400,
)  # fmt: skip
_FINAL = (JobState.SUCCEEDED, JobState.DEAD)
# Final outcomes a worker keeps for their write's answer (those whose write raised
# never get one): the oldest go first past this many.
MAX_PENDING_FINAL = 10_000


@dataclass(frozen=True)
class _Reading:
    """Everything one scrape needs from the store, read once."""

    now: datetime
    totals: QueueTotals  # counters and counts, the queues not named folded into _other
    oldest: dict[str, datetime]
    workers: list[WorkerBeat]
    webhooks: dict[str, int]

    @classmethod
    def take(cls, store: JobStore, live_seconds: float, rule: QueueLabels) -> _Reading:
        keep, busiest = rule.store_request()
        totals = store.queue_totals(keep, busiest)
        return cls(
            now=store.clock.now(),
            totals=totals,
            oldest=cls._oldest_due(store, totals),
            workers=store.live_workers(live_seconds),
            webhooks=store.webhook_counts(),
        )

    @staticmethod
    def _oldest_due(store: JobStore, totals: QueueTotals) -> dict[str, datetime]:
        """The oldest due job per queue, as far as the exposition shows it: every named
        queue's, and the oldest of the rest (which all fold into `_other`). A store that
        can answer just that (Redis: `oldest_due_named`, two commands) does, so a scrape
        does not read one entry per queue holding due jobs; the others answer every
        queue, and the labels fold them the same way."""
        named_due = getattr(store, "oldest_due_named", None)
        if named_due is None:
            return store.oldest_due()
        answer: dict[str, datetime] = named_due(sorted(totals.named))
        return answer


class _StoreCollector:
    """Reads counters and depth from the store (and this process's cache) per scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        reading = _Reading.take(
            self.metrics.store, self.metrics.live_seconds, self.metrics.queue_labels
        )
        label = self._labels(reading)
        counters, counts = reading.totals.counters, reading.totals.counts
        families = {
            event: CounterMetricFamily(
                f"spool_jobs_{event}", _COUNTER_HELP[event], labels=["queue", "type"]
            )
            for event in COUNTER_EVENTS
        }
        # Every (queue, type) seen gets every counter, 0 included, so rate() has a series.
        pairs = sorted({(k.queue, k.type) for k in counters})
        for event, family in families.items():
            for queue, type_ in pairs:
                family.add_metric([queue, type_], counters.get(CounterKey(queue, type_, event), 0))
        yield from families.values()

        depth = GaugeMetricFamily(
            "spool_jobs", "Jobs in the store by queue and state.", labels=["queue", "state"]
        )
        # Every queue label the reading names, as _oldest: a queue whose jobs were all
        # purged reads 0 in every state, not no series (a panel would say "No data").
        for queue in sorted(set(label.values())):
            for state in JobState:
                depth.add_metric([queue, state.value], counts.get((queue, state), 0))
        yield depth

        yield self._oldest(label, reading)
        yield from self._workers(reading)
        hooks = GaugeMetricFamily(
            "spool_webhook_deliveries",
            "Webhook deliveries waiting to be delivered (pending) and given up on (failed).",
            labels=["state"],
        )
        for hook_state in ("pending", "failed"):
            hooks.add_metric([hook_state], reading.webhooks.get(hook_state, 0))
        yield hooks

        hit_count, miss_count = self.metrics.cache_counts()
        hits = CounterMetricFamily("spool_cache_hits", "Status lookups answered by the cache.")
        misses = CounterMetricFamily("spool_cache_misses", "Status lookups the cache missed.")
        hits.add_metric([], hit_count)
        misses.add_metric([], miss_count)
        yield hits
        yield misses

    @staticmethod
    def _labels(reading: _Reading) -> dict[str, str]:
        """Every queue the reading names, under its label: the store named them (the
        busiest by jobs enqueued) and folded the rest; a queue with a due job that it
        did not name is `_other`'s too."""
        label = {queue: queue for queue in reading.totals.named}
        if reading.totals.other:
            label[OTHER] = OTHER
        for queue in reading.oldest:
            label.setdefault(queue, OTHER)
        return label

    def _oldest(self, label: Mapping[str, str], reading: _Reading) -> Metric:
        """Per queue label, how long its oldest due job has waited; 0 when none waits.

        Every known queue gets a series (0 included), so an alert on it never sees
        the series vanish; a folded label reports the oldest of its queues.
        """
        family = GaugeMetricFamily(
            "spool_queue_oldest_due_age_seconds",
            "Seconds since the oldest due, waiting (queued/retrying) job became due; "
            "0 when none waits.",
            labels=["queue"],
        )
        age = dict.fromkeys(label.values(), 0.0)
        for queue, due in reading.oldest.items():
            waited = max(0.0, (reading.now - due).total_seconds())
            age[label[queue]] = max(age[label[queue]], waited)
        for queue in sorted(age):
            family.add_metric([queue], age[queue])
        return family

    def _workers(self, reading: _Reading) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "spool_workers_live",
            f"Workers whose last heartbeat is at most {LIVE_SECONDS} seconds old.",
        )
        live.add_metric([], len(reading.workers))
        yield live
        beats = GaugeMetricFamily(
            "spool_worker_last_heartbeat_timestamp_seconds",
            "When each live worker last beat (Unix time); the most recent "
            "SPOOL_METRICS_MAX_WORKERS workers only.",
            labels=["worker"],
        )
        recent = sorted(reading.workers, key=lambda w: (-w.last_beat.timestamp(), w.worker))
        for beat in sorted(recent[: self.metrics.max_workers], key=lambda w: w.worker):
            beats.add_metric([beat.worker], beat.last_beat.timestamp())
        yield beats


_CACHE_FILES = "cache-*.counts"


def _write_whole(path: Path, data: bytes) -> None:
    """Written beside `path`, then renamed over it: another process reading it never
    sees half a file."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _cache_file(directory: Path) -> Path:
    """This process's file: cache-<pid>-<tag>.counts. By pid, so the supervisor, which
    knows its server processes by pid, can fold an exited one's last counts into
    _RETIRED (retire_cache_counts); and by the tag of this process start
    (worker_id.process_tag), because a pid is given again: a process given an exited
    one's pid, whose file was not folded (a fold that failed), wrote over that file,
    and the sum fell."""
    return directory / f"cache-{os.getpid()}-{worker_id.process_tag()}.counts"


def _cache_files_of(directory: Path, pid: int, suffix: str = "") -> list[Path]:
    """The files of every process start that had `pid` (one, unless a fold failed)."""
    return sorted(directory.glob(f"cache-{pid}-*.counts{suffix}"))


# The counts of server processes that are gone, folded into one file by the supervisor
# (retire_cache_counts): `<generation> <hits> <misses> [<file name>...]`, the names
# being files whose counts it holds and that may not be removed yet. Not matched by
# _CACHE_FILES.
_RETIRED = "retired.counts"
# Reads of the shared counts that a fold may overlap before one is taken as it is.
# Folds come one a restarted process, half a second apart at least (local/multiproc.py
# RESTART_PAUSE); a read takes a few milliseconds.
_READ_TRIES = 5


def _retired(directory: Path, strict: bool = False) -> tuple[str, int, int, int, list[str]]:
    """(the file's text, its generation, hits, misses, the names of the folded files).
    None yet is all zeros; an unreadable one too, unless `strict` (then OSError or
    ValueError: a fold must not start the total again from nothing)."""
    try:
        text = (directory / _RETIRED).read_text("ascii")
    except FileNotFoundError:
        return "", 0, 0, 0, []
    except OSError:
        if strict:
            raise
        return "", 0, 0, 0, []
    try:
        generation, hits, misses, *names = text.split()
        return text, int(generation), int(hits), int(misses), names
    except ValueError:  # never half written (written whole): not one of ours
        if strict:
            raise
        return "", 0, 0, 0, []


def shared_cache_counts(directory: Path) -> tuple[int, int]:
    """Every server process's cache hits and misses: the live processes' files plus the
    retired total, each count once though the supervisor folds a file meanwhile.

    The fold renames a new retired total (naming the file it took in) over the old
    one, removes the file, then renames the total again without the name. So: a file
    named in the total read is skipped (its counts are in it), and a read is taken only
    if the total did not change while the files were read (its generation only grows):
    otherwise a file read before the fold and a total read after it would count twice,
    or one removed before being read, with the total from before, not at all."""
    hits = misses = 0
    for _ in range(_READ_TRIES):
        before, _, hits, misses, names = _retired(directory)
        folded = set(names)
        for path in directory.glob(_CACHE_FILES):
            if path.name in folded:
                continue
            try:
                peer_hits, peer_misses = (int(n) for n in path.read_text("ascii").split())
            except (OSError, ValueError):  # gone, or caught half written: left out once
                continue
            hits += peer_hits
            misses += peer_misses
        if _retired(directory)[0] == before:
            break
    return hits, misses


def retire_cache_counts(directory: Path, pid: int) -> None:
    """Fold the counts of server process `pid`, which has exited (the supervisor reaped
    it), into the retired total and remove its file: the files stay as many as the
    live processes, plus one, and the sum every scrape reads is unchanged (a counter
    must never fall). Only the supervisor calls this, one fold at a time, before it
    starts another process, so every file of `pid` is an exited process's (an earlier
    one's too, if its fold failed). Raises OSError or ValueError (an unreadable
    total): the files are then left, and counted."""
    # Killed while writing: the unfinished file was never read; its counts since the
    # last whole write are lost with the process.
    for part in _cache_files_of(directory, pid, ".part"):
        part.unlink(missing_ok=True)
    paths: list[Path] = []
    hits = misses = 0
    for path in _cache_files_of(directory, pid):
        try:
            text = path.read_text("ascii")
        except FileNotFoundError:
            continue
        paths.append(path)
        try:
            file_hits, file_misses = (int(n) for n in text.split())
        except ValueError:  # never read by a scrape either
            continue
        hits += file_hits
        misses += file_misses
    if not paths:  # it exited before its first write
        return
    _, generation, total_hits, total_misses, names = _retired(directory, strict=True)
    # A file named by an earlier fold that could not remove it is still to be skipped.
    kept = [name for name in names if (directory / name).exists()]
    total_hits += hits
    total_misses += misses
    # First the total with its counts, naming its files (a scrape that reads both skips
    # them), then the files go, then the total names them no longer.
    folded = [path.name for path in paths]
    _write_retired(directory, generation + 1, total_hits, total_misses, [*kept, *folded])
    for path in paths:
        path.unlink(missing_ok=True)
    _write_retired(directory, generation + 2, total_hits, total_misses, kept)


def _write_retired(
    directory: Path, generation: int, hits: int, misses: int, names: list[str]
) -> None:
    text = " ".join(str(n) for n in (generation, hits, misses, *names))
    _write_whole(directory / _RETIRED, text.encode("ascii"))


class _WrittenElsewhere:
    """The worker families as another process last wrote them (Metrics.read_worker_families)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self.path.read_text("utf-8")
        except OSError:  # not written yet: the families are absent, as before a first job
            return
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:  # never half a file (renamed into place), but never a 500
            log.warning("cannot read the worker's metrics from %s: %s", self.path, exc)
            return
        yield from families


class _Timing(Middleware):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Final outcomes waiting for their write: (job id, lease token) -> the
        # end-to-end labels and seconds, observed only once the store applied them.
        self._final: dict[tuple[str, str], tuple[str, str, str, float]] = {}
        self._final_lock = threading.Lock()

    def before_attempt(self, job: Job) -> None:
        if job.started_at is not None:
            waited = max(0.0, (job.started_at - job.run_at).total_seconds())
            queue = self.metrics.timed_queues.label(job.queue, job.tenant)
            self.metrics.queue_wait.labels(queue, job.type).observe(waited)

    def after_claim(self, claimed: Sequence[Job], holds: Sequence[Hold]) -> None:
        full: set[str] = set()
        counted = {hold.key for hold in holds if hold.job_id}
        for hold in holds:
            if hold.job_id:
                self.metrics.holds.labels(hold.key, hold.kind).inc()
                continue
            full.add(hold.key)
            if hold.key not in counted:
                # The SQL, Redis and DynamoDB stores skip a full limit's jobs unread:
                # the claim that found it full counts once (it counted nothing before,
                # so the counter stayed absent while jobs waited behind the limit).
                counted.add(hold.key)
                self.metrics.holds.labels(hold.key, hold.kind).inc()
        for key in self.metrics.limit_keys | full:
            self.metrics.limit_full.labels(key).set(1 if key in full else 0)
        self.metrics.limit_keys |= full

    def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
        outcome = completion.state.value
        queue = self.metrics.timed_queues.label(job.queue, job.tenant)
        self.metrics.run_duration.labels(queue, job.type, outcome).observe(seconds)
        if completion.state in _FINAL:
            # Enqueue to finish: waiting, every attempt and every backoff between them.
            # Observed in after_flush, if the store takes it: an outcome refused (the
            # lease lapsed and another worker took the job, which ends it there) or
            # never written (an outage until the worker stopped; the job runs again)
            # is no final outcome, and counted here it was a second finished job.
            total = (self.metrics.store.clock.now() - job.created_at).total_seconds()
            with self._final_lock:
                if len(self._final) >= MAX_PENDING_FINAL:  # writes that raised never flush
                    self._final.pop(next(iter(self._final)))
                key = (completion.job_id, completion.lease_token)
                self._final[key] = (queue, job.type, outcome, max(0.0, total))

    def after_flush(self, completions: Sequence[Completion], applied: Sequence[bool]) -> None:
        for completion, ok in zip(completions, applied, strict=True):
            if completion.state not in _FINAL:
                continue
            with self._final_lock:
                final = self._final.pop((completion.job_id, completion.lease_token), None)
            if final is not None and ok:
                queue, type_, outcome, total = final
                self.metrics.end_to_end.labels(queue, type_, outcome).observe(total)


class Metrics:
    """One per process: the exposition registry and the push registry."""

    def __init__(
        self, store: JobStore, settings: Settings | None = None, queues: Iterable[str] = ()
    ) -> None:
        self.store = store
        # The runtime passes its settings; without them, the process environment's.
        settings = settings or Settings.from_env()
        # `queues`: the handlers' own, which keep their labels whatever clients send.
        self.queue_labels = QueueLabels.from_settings(settings, queues)
        self.timed_queues = FirstSeen(self.queue_labels)
        self.max_workers = max_workers(settings)
        self.live_seconds = live_seconds(settings)
        self.cache: ResultCache | None = None
        self.cache_peers: Path | None = None  # add_peer_cache_counts
        self._push_lock = threading.Lock()
        self._pushing: threading.Thread | None = None  # the last push's thread (push)
        self.registry = CollectorRegistry(auto_describe=False)
        # Only what a worker process alone knows goes to the Pushgateway; the
        # system-wide counts are scraped from any API process's /metrics.
        self.push_registry = CollectorRegistry(auto_describe=False)
        self.run_duration = Histogram(
            "spool_job_run_duration_seconds",
            "How long attempts ran, by outcome.",
            ["queue", "type", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=self.push_registry,
        )
        self.queue_wait = Histogram(
            "spool_job_queue_wait_seconds",
            "Time from when a job was due to when an attempt started.",
            ["queue", "type"],
            buckets=_WAIT_BUCKETS,
            registry=self.push_registry,
        )
        self.end_to_end = Histogram(
            "spool_job_end_to_end_seconds",
            "Time from enqueue to the final outcome (succeeded or dead), retries included.",
            ["queue", "type", "outcome"],
            buckets=_END_TO_END_BUCKETS,
            registry=self.push_registry,
        )
        self.registry.register(self.run_duration)
        self.registry.register(self.queue_wait)
        self.webhook_attempts = Histogram(
            "spool_webhook_attempt_seconds",
            "Webhook delivery attempts made by this process, by outcome "
            "(delivered, retrying, failed).",
            ["outcome"],
            buckets=_WEBHOOK_BUCKETS,
            registry=self.push_registry,
        )
        self.holds = Counter(
            "spool_job_holds",
            "Holds by a full limit in this process's claims (limit: queue:NAME or "
            "type:NAME; kind: concurrency or rate): one per due job passed over where the "
            "claim read them (a claim by id, the memory store), else one per claim that "
            "found the limit full (the other stores skip its jobs unread). A job held "
            "across several claims counts each time.",
            ["limit", "kind"],
            registry=self.push_registry,
        )
        self.limit_full = Gauge(
            "spool_limit_full",
            "1 while a limit had no room when this process last claimed (its due jobs "
            "wait), else 0.",
            ["limit"],
            registry=self.push_registry,
        )
        self.limit_keys: set[str] = set()
        self.registry.register(self.holds)
        self.registry.register(self.limit_full)
        self.registry.register(self.end_to_end)
        self.registry.register(self.webhook_attempts)
        # What only the process that runs the worker knows: everything pushed.
        self._worker_families = (
            self.run_duration, self.queue_wait, self.end_to_end,
            self.webhook_attempts, self.holds, self.limit_full,
        )  # fmt: skip
        self.registry.register(_StoreCollector(self))
        self.middleware: Middleware = _Timing(self)

    def _own_cache_counts(self) -> tuple[int, int]:
        cache = self.cache
        return (cache.hits, cache.misses) if cache is not None else (0, 0)

    def cache_counts(self) -> tuple[int, int]:
        """This process's cache hits and misses; under `--processes N`, every server
        process's, as last written to the shared folder (add_peer_cache_counts)."""
        if self.cache_peers is None:
            return self._own_cache_counts()
        # Every process sums the same files, its own included, not its own live counts
        # plus its peers' files: each file lags its process by up to a second, so two
        # processes answering in turn gave sums that went down and up again (the test
        # of this failed about one run in three). A count is seen a second late at most.
        return shared_cache_counts(self.cache_peers)

    def add_peer_cache_counts(self, directory: Path) -> None:
        """Report the cache counts the other server processes of `spool serve
        --processes N` write to `directory` (write_cache_counts) added to this one's:
        each process has its own cache, and a scrape reaches one of them."""
        self.cache_peers = directory

    def write_cache_counts(self, directory: Path) -> None:
        hits, misses = self._own_cache_counts()
        _write_whole(_cache_file(directory), f"{hits} {misses}".encode("ascii"))

    def write_worker_families(self, path: Path) -> None:
        """This process's worker families, whole, to `path`."""
        _write_whole(path, generate_latest(self.push_registry))

    def read_worker_families(self, path: Path) -> None:
        """Report the worker families that another process writes to `path`
        (write_worker_families) instead of this process's own: `spool serve
        --processes N` runs its worker in the supervisor, which serves no /metrics,
        so the server processes, which run none, report the supervisor's."""
        for family in self._worker_families:
            self.registry.unregister(family)
        self.registry.register(_WrittenElsewhere(path))

    def observe_webhook(self, outcome: str, seconds: float) -> None:
        """One webhook delivery attempt (chalicelib/webhooks/deliver.py calls this)."""
        self.webhook_attempts.labels(outcome).observe(seconds)

    def attach_cache(self, cache: ResultCache) -> None:
        self.cache = cache

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def push(self, url: str, grouping: dict[str, str] | None = None, timeout: float = 5.0) -> bool:
        """Push the worker timings within `timeout` seconds in all; a failed or slow push
        is logged, never fatal to the worker.

        push_to_gateway's own timeout bounds each socket read, not the push: a gateway
        answering a byte every few seconds held `spool worker`'s exit push (after
        SIGTERM) forever, and would hold a Lambda invocation to its timeout. So the push
        runs on a thread of its own that is waited for `timeout` seconds, then left
        behind (a daemon); while one is still stuck, later pushes are skipped.

        Credentials in the URL (http://user:password@gateway, a gateway behind basic
        auth) go in an Authorization header: left in the URL, urllib took
        "user:password@gateway" for the host and asked the resolver for it, so every
        push failed and the password went to DNS. Log lines show the URL masked."""
        target, credentials = gateway_credentials(url)
        url = redact_url(url)
        with self._push_lock:
            stuck = self._pushing is not None and self._pushing.is_alive()
            if stuck:
                log.warning("push to %s skipped: the previous push has not finished", url)
                return False
            outcome: list[BaseException | None] = []
            thread = logs.inherited_thread(
                self._push_now,
                args=(target, grouping, timeout, outcome, credentials),
                name="spool-push-request",
            )
            self._pushing = thread
            thread.start()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("push to %s failed: no answer within %.0f s", url, timeout)
            return False
        error = outcome[0] if outcome else None
        if error is not None:  # the gateway being down must not fail jobs
            log.warning("push to %s failed: %s", url, error)
            return False
        return True

    def _push_now(
        self,
        url: str,
        grouping: dict[str, str] | None,
        timeout: float,
        outcome: list[BaseException | None],
        credentials: tuple[str, str] | None = None,
    ) -> None:
        from prometheus_client import push_to_gateway
        from prometheus_client.exposition import basic_auth_handler, default_handler

        handler: Any = default_handler
        if credentials is not None:
            handler = functools.partial(
                basic_auth_handler, username=credentials[0], password=credentials[1]
            )
        try:
            push_to_gateway(
                url,
                job=PUSH_JOB,
                registry=self.push_registry,
                grouping_key=grouping or {"instance": instance_name()},
                timeout=timeout,
                handler=handler,
            )
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)


def gateway_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The Pushgateway URL without its user:password, and the pair (decoded); the URL
    as given when it holds none. Without a scheme it is read as http://, as
    prometheus_client reads it."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):  # urlsplit lowercases the scheme
            url = f"http://{url}"
            parts = urlsplit(url)
    except ValueError:  # push_to_gateway says what is wrong with it
        return url, None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), (unquote(user), unquote(password))


def instance_name(env: Any = None) -> str:
    """A stable name for this worker process: the Lambda log stream, else host:pid:tag
    (worker_id.host_process(): unique per process start, so two PID 1 containers on one
    host push to two groups, and a restart never takes over an old group)."""
    env = os.environ if env is None else env
    stream = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
    return str(stream) if stream else worker_id.host_process()
