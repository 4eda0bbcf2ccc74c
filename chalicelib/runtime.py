"""Wire settings, store, handlers and service together once per process.

app.py and the command line both start here, so the deployed path and the
local path are built the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chalicelib.clock import Clock
from chalicelib.config import Settings
from chalicelib.handlers import Registry, registry
from chalicelib.service import Service
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.worker import Middleware, Worker, WorkerConfig

if TYPE_CHECKING:
    from chalicelib.api.metrics import Metrics

BUILTIN_HANDLER_MODULES = (
    "chalicelib.builtin.demo",
    "chalicelib.builtin.email",
    "chalicelib.builtin.images",
    "chalicelib.builtin.http_request",
)
_metrics_lock = threading.Lock()


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    registry: Registry
    service: Service
    _metrics: Metrics | None = field(default=None, repr=False, compare=False)

    def metrics(self) -> Metrics:
        """The process's Prometheus metrics, built on first use (prometheus_client loads then)."""
        with _metrics_lock:
            if self._metrics is None:
                from chalicelib.api.metrics import Metrics

                self._metrics = Metrics(self.store)
            return self._metrics

    def worker(
        self, concurrency: int | None = None, middleware: tuple[Middleware, ...] = ()
    ) -> Worker:
        """A worker whose attempts also feed the run-duration and queue-wait histograms."""
        config = WorkerConfig(
            concurrency=concurrency or self.settings.concurrency,
            lease_seconds=self.settings.lease_seconds,
            queues=self.settings.queues,
        )
        middleware = (self.metrics().middleware, *middleware)
        return Worker(self.store, self.registry, config, middleware=middleware)

    def close(self) -> None:
        self.store.close()


def load_handlers(target: Registry, settings: Settings) -> Registry:
    target.load(BUILTIN_HANDLER_MODULES)
    target.load(settings.handlers)
    return target


def build_runtime(settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
    settings = settings or Settings.from_env()
    store = open_store(settings.store_url, clock)
    load_handlers(registry, settings)
    return Runtime(settings, store, registry, Service(store, registry))


_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime:
    """The process-wide runtime, built on first use (Lambda reuses it across invocations)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = build_runtime()
        return _current


def reset(runtime: Runtime | None = None) -> None:
    """Replace the process-wide runtime (tests, and the local server at start-up)."""
    global _current
    with _current_lock:
        if _current is not None and runtime is not _current:
            _current.close()
        _current = runtime
