"""What a running `spool worker` reports: a scrape port and a Pushgateway push.

A worker is scraped like any process (`--metrics-port`): its /metrics carries
the same system-wide families as the API's (read from the store per scrape)
plus the histograms only it can fill (run duration, queue wait, end-to-end).
The port has no authentication, by design: Prometheus inside a private
network scrapes it, it shows queue names only after folding
(chalicelib/api/metric_labels.py), and it binds 127.0.0.1 unless told
otherwise (`--metrics-host 0.0.0.0` in the containers, where the pod or
container network is the boundary).

Every worker beats in the store itself (Worker._beat, every
SPOOL_HEARTBEAT_SECONDS from its dispatcher loop, so a stuck dispatcher stops
beating), so whichever process is scraped reports how many workers are live
and when each last beat.

Where nothing can scrape the worker, SPOOL_PUSHGATEWAY_URL gets its timings
every SPOOL_PUSH_INTERVAL seconds and once more as it exits, so the last
attempts before a SIGTERM are not lost. A failed push is logged, never fatal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from chalicelib import logs
from chalicelib.redact import redact_url

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from local.metrics_http import MetricsServer


log = logging.getLogger("spool.metrics")

PUSH_INTERVAL = "SPOOL_PUSH_INTERVAL"
DEFAULT_PUSH_INTERVAL = 15.0


class Pusher:
    """Push every `interval` seconds from a thread, and once more on stop()."""

    def __init__(self, push: Callable[[], bool], interval: float) -> None:
        self.push = push
        self.interval = interval
        self._stop = threading.Event()
        self._thread = logs.outside_thread(self._loop, name="spool-push")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def stop(self) -> bool:
        """Stop the loop, then push what the last attempts added (the exit push)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 10)
        return self.push()


def warn_scraped_and_pushed(url: str, scraped: str) -> None:
    """One line at start where a process both serves its timings and pushes them:
    Prometheus then holds each attempt twice (the scraped series and the pushed
    group), and every sum over the histograms doubles. Allowed (a move from one to
    the other runs both for a while), but never silently."""
    log.warning(
        "this process's job timings are served on %s and pushed to %s: a Prometheus "
        "that scrapes both has them twice, and sums over the histograms count each "
        "attempt twice; unset SPOOL_PUSHGATEWAY_URL where the process is scraped "
        "(docs/operations.md)",
        scraped,
        redact_url(url),  # a gateway behind basic auth: its password masked here
    )


def push_interval(rt: Runtime) -> float:
    return rt.settings.number(PUSH_INTERVAL, DEFAULT_PUSH_INTERVAL, minimum=0.5, maximum=86400.0)


class WorkerMetrics:
    """The worker's reporting for as long as it runs: `with WorkerMetrics(...)`.

    Built (and its settings checked, its port bound) before the worker starts, so a
    busy port or a bad interval stops `spool worker` at once with a clear message.
    """

    def __init__(self, rt: Runtime, host: str, port: int | None) -> None:
        self.server: MetricsServer | None = None
        self.pusher: Pusher | None = None
        url = rt.settings.pushgateway_url
        if port is None and not url:
            return  # nothing reads this worker's metrics: do not build them
        from chalicelib.api.metrics import CONTENT_TYPE

        metrics = rt.metrics()
        if port is not None:
            from local.metrics_http import MetricsServer  # only with a port: http.server

            self.server = MetricsServer(host, port, metrics.exposition, CONTENT_TYPE)
        self.pusher = Pusher(lambda: metrics.push(url), push_interval(rt)) if url else None
        if self.server is not None and url:
            warn_scraped_and_pushed(url, "the metrics port")

    @property
    def wanted(self) -> bool:
        """Whether anything reads this worker's metrics (a port or a Pushgateway)."""
        return self.server is not None or self.pusher is not None

    def __enter__(self) -> WorkerMetrics:
        if self.server is not None:
            self.server.start()
        if self.pusher is not None:
            self.pusher.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.pusher is not None:
            self.pusher.stop()
        if self.server is not None:
            self.server.stop()
