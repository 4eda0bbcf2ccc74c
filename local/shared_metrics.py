"""`spool serve --processes N`: metrics that one process counts, for every scrape.

N processes share one port, so a scrape reaches one of them. Two kinds of series
were that process's alone:
- the worker's histograms and limit metrics (the families a worker pushes): the
  emulated worker runs once, in the supervisor, which serves no /metrics, so no
  scrape showed them. The supervisor writes them to a file every WRITE_INTERVAL
  seconds (SharedMetrics), and each server process reports the file in place of
  its own (Metrics.read_worker_families).
- the result cache's hit and miss counters: each process has its own cache, so a
  counter went up and down from one scrape to the next, and Prometheus took every
  drop for a reset. Each server process writes its counts to a file of its own every
  WRITE_INTERVAL seconds (CacheCounts), and a scrape sums the files
  (Metrics.add_peer_cache_counts): a sum that only grows, a restarted process's last
  counts included, which the supervisor folds into one retired total
  (SharedMetrics.retire).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from chalicelib import logs, worker_id
from chalicelib.runtime import Runtime

log = logging.getLogger("spool.serve")

WRITE_INTERVAL = 1.0  # seconds: well under any scrape interval
PREFIX = "spool-serve-metrics-"
# The supervisor holds an exclusive flock on this file for as long as it runs; the
# kernel lets go of it when the process ends, however it ends. It holds the owner's
# host:pid:tag (chalicelib/worker_id.py), for a person to read.
OWNER = "owner.lock"


def sweep_orphans() -> None:
    """Remove the directories of supervisors that are gone without cleaning up (kill -9):
    one is left per such stop, and nothing else would ever remove it.

    Gone is an owner lock this sweep can take. The owner's pid does not tell: it was
    checked here, and two containers sharing a temporary volume each have pids of
    their own, so one removed the other's live directory; and a pid given again to
    another process kept a dead supervisor's directory for ever."""
    import fcntl

    for directory in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = os.open(directory / OWNER, os.O_RDONLY)
        except OSError:  # not ours, or being made this moment: leave it
            continue
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its supervisor runs (or no locks here: cannot tell)
            continue
        else:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(owner)


def _own(directory: Path) -> int:
    """Lock `directory`'s OWNER file for this process's life (the descriptor returned):
    made and locked under another name, then renamed, so a sweep never finds it
    unlocked. Where the file system has no locks, a sweep cannot take one either, and
    leaves the directory (its supervisor removes it at a clean stop)."""
    import fcntl

    part = directory / (OWNER + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, worker_id.host_process().encode())
        os.replace(part, directory / OWNER)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedMetrics:
    """A context: the supervisor's private directory (the server processes' files go
    there too), and the thread that writes the worker's families into it."""

    def __init__(self, rt: Runtime, worker: bool, interval: float = WRITE_INTERVAL) -> None:
        self.rt = rt
        self.worker = worker
        self.interval = interval
        sweep_orphans()
        self.directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        self._owner = _own(self.directory)
        self.path = self.directory / "worker.prom"
        self._stop = threading.Event()
        self._thread = logs.outside_thread(self._run, name="spool-worker-metrics")

    def write(self) -> None:
        try:
            self.rt.metrics().write_worker_families(self.path)
        except OSError as exc:  # a full disk: the scrape shows the last write, the jobs run
            log.warning("cannot write the worker's metrics to %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def retire(self, pid: int) -> None:
        """Server process `pid` has exited: fold its cache counts into the retired total
        (chalicelib/api/metrics.py retire_cache_counts), so a supervisor that restarts
        processes for weeks keeps one file a live process, not one a process ever run,
        for every scrape to read."""
        from chalicelib.api.metrics import retire_cache_counts

        try:
            retire_cache_counts(self.directory, pid)
        except (OSError, ValueError) as exc:  # its file stays, and is counted
            log.warning("cannot fold the cache counts of pid %d: %s", pid, exc)

    def server_args(self) -> list[str]:
        """What every server process is started with."""
        args = ["--shared-metrics", str(self.directory)]
        return [*args, "--worker-metrics", str(self.path)] if self.worker else args

    def __enter__(self) -> SharedMetrics:
        if self.worker:
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
        if self._thread.is_alive():
            self._thread.join()
        shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._owner)  # last: a sweep meanwhile finds it still owned


class CacheCounts:
    """A server process's cache counts, written to its own file in the shared
    directory every WRITE_INTERVAL seconds, on a daemon thread (it ends with the
    process), and once more as the process stops (`finish`).

    Without that last write a process stopped gracefully (SIGTERM from the supervisor
    or an operator) took the counts of its last second with it: the supervisor folds
    the file as the process left it, and 10 of 60 lookups answered in the second
    before a SIGTERM never reached the sum. A SIGKILL still loses up to a second."""

    def __init__(self, rt: Runtime, directory: Path, interval: float = WRITE_INTERVAL) -> None:
        self.rt = rt
        self.directory = directory
        self.interval = interval
        # One writer at a time: both go through the same `.part` file.
        self._lock = threading.Lock()
        self._finished = False

    def start(self) -> None:
        metrics = self.rt.metrics()
        metrics.add_peer_cache_counts(self.directory)
        logs.outside_thread(self._run, name="spool-cache-counts").start()

    def _write(self) -> None:
        try:
            self.rt.metrics().write_cache_counts(self.directory)
        except OSError as exc:  # the directory went: the scrape shows this process alone
            log.warning("cannot write the cache counts to %s: %s", self.directory, exc)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._finished:
                    return
                self._write()
            time.sleep(self.interval)

    def finish(self) -> None:
        """The last write, once this process answers no more requests."""
        with self._lock:
            self._finished = True
            self._write()


def share_metrics(rt: Runtime, directory: str, worker_file: str | None) -> CacheCounts:
    """A server process of `--processes N`: report the supervisor's worker families
    (when it runs the worker) and the other processes' cache counts. The caller calls
    `finish()` on the answer as the process stops."""
    if worker_file is not None:
        rt.metrics().read_worker_families(Path(worker_file))
    counts = CacheCounts(rt, Path(directory))
    counts.start()
    return counts
