"""Prometheus metrics: system-wide job counts from the store, per-process timings.

Job counters and queue depth are read from the store at scrape time by a
custom collector, so every process reports the same totals whoever did the
work. Run duration and queue wait are histograms fed by a worker Middleware:
they only exist where attempts run, which is why a worker can push them to a
Pushgateway at the end of each invocation (a Lambda cannot be scraped).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from chalicelib.models import COUNTER_EVENTS, Completion, CounterKey, Job, JobState
from chalicelib.worker import Middleware

if TYPE_CHECKING:
    from chalicelib.api.cache import ResultCache
    from chalicelib.storage.base import JobStore

log = logging.getLogger("spool.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PUSH_JOB = "spool_worker"

_COUNTER_HELP = {
    "enqueued": "Jobs accepted, system-wide.",
    "succeeded": "Jobs that finished successfully, system-wide.",
    "failed": "Failed attempts (each retry or final failure), system-wide.",
    "retried": "Failed attempts that were scheduled to run again, system-wide.",
    "dead": "Jobs moved to the dead-letter store, system-wide.",
    "cancelled": "Jobs cancelled before they ran, system-wide.",
}
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class _StoreCollector:
    """Reads counters and depth from the store (and this process's cache) per scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        store = self.metrics.store
        counters = store.counters()
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
        counts = store.counts()
        for queue in sorted({q for q, _ in counts}):
            for state in JobState:
                depth.add_metric([queue, state.value], counts.get((queue, state), 0))
        yield depth

        cache = self.metrics.cache
        hits = CounterMetricFamily("spool_cache_hits", "Status lookups answered by the cache.")
        misses = CounterMetricFamily("spool_cache_misses", "Status lookups the cache missed.")
        hits.add_metric([], cache.hits if cache is not None else 0)
        misses.add_metric([], cache.misses if cache is not None else 0)
        yield hits
        yield misses


class _Timing(Middleware):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def before_attempt(self, job: Job) -> None:
        if job.started_at is not None:
            waited = max(0.0, (job.started_at - job.run_at).total_seconds())
            self.metrics.queue_wait.labels(job.queue, job.type).observe(waited)

    def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
        outcome = completion.state.value
        self.metrics.run_duration.labels(job.queue, job.type, outcome).observe(seconds)


class Metrics:
    """One per process: the exposition registry and the push registry."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.cache: ResultCache | None = None
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
        self.registry.register(self.run_duration)
        self.registry.register(self.queue_wait)
        self.registry.register(_StoreCollector(self))
        self.middleware: Middleware = _Timing(self)

    def attach_cache(self, cache: ResultCache) -> None:
        self.cache = cache

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def push(self, url: str, grouping: dict[str, str] | None = None, timeout: float = 5.0) -> bool:
        """Push the worker timings; a failed push is logged, never fatal to the worker."""
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(
                url,
                job=PUSH_JOB,
                registry=self.push_registry,
                grouping_key=grouping or {"instance": instance_name()},
                timeout=timeout,
            )
        except Exception as exc:  # the gateway being down must not fail jobs
            log.warning("push to %s failed: %s", url, exc)
            return False
        return True


def instance_name(env: Any = None) -> str:
    """A stable name for this worker process: the Lambda log stream, else host:pid."""
    env = os.environ if env is None else env
    stream = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
    return str(stream) if stream else f"{socket.gethostname()}:{os.getpid()}"
