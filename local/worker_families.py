"""`spool serve --processes N`: the supervisor's worker metrics, for its server processes.

The emulated worker runs once, in the supervisor, and records its histograms and
limit metrics there (chalicelib/api/metrics.py, the families a worker pushes); the
supervisor serves no /metrics, so a scrape, which reaches one of the server
processes, found none of them. Here the supervisor writes those families to a file
every WRITE_INTERVAL seconds, and each server process reports the file's contents in
place of its own (Metrics.read_worker_families), so every scrape shows the worker's
timings, at most that old.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from chalicelib.runtime import Runtime

log = logging.getLogger("spool.serve")

WRITE_INTERVAL = 1.0  # seconds: well under any scrape interval


class WorkerFamilies:
    """A context: a private directory holding the file, and the thread that writes it."""

    def __init__(self, rt: Runtime, interval: float = WRITE_INTERVAL) -> None:
        self.rt = rt
        self.interval = interval
        self._dir = Path(tempfile.mkdtemp(prefix="spool-serve-metrics-"))
        self.path = self._dir / "worker.prom"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-worker-metrics", daemon=True)

    def write(self) -> None:
        try:
            self.rt.metrics().write_worker_families(self.path)
        except OSError as exc:  # a full disk: the scrape shows the last write, the jobs run
            log.warning("cannot write the worker's metrics to %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def __enter__(self) -> WorkerFamilies:
        self.write()  # before any server process answers: the families are there, empty
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)
