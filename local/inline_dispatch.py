"""Run quick requests on the server's loop thread instead of handing them over.

waitress reads a request on its loop thread and hands it to a pool thread,
which wakes, takes the GIL from the loop, runs the app and hands the answer
back. For a request that costs ~200 us of Python, those hand-overs cost more
than the request: under load `perf` finds half of `spool serve`'s CPU in the
kernel's futex and scheduler paths, and strace counts ~47 futex calls per
cached GET /status. Answering such a request on the loop thread that read it
needs no hand-over at all: in one process, cached status reads went from
~1,400 to ~4,300 a second and single enqueues from ~750 to ~1,950 on the same
machine (docs/benchmarks.md, "HTTP server").

The price is that while the loop thread runs a request it reads nothing else.
So only requests the caller's `quick` predicate picks run inline (short ones
on an embedded store: no long-polls, no big bodies); everything else goes to
the pool as before. And a quick request can still block (SQLite's writer held
by another process, a stopped peer): a watchdog thread that finds one inline
request running longer than `stall_after` seconds takes the loop over, hands
what is waiting to the pool, and gives the loop back when that request ends.
One thread at a time runs the loop (`loop_lock`), so waitress's
single-threaded loop stays single-threaded.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.task import ThreadedTaskDispatcher

from chalicelib import logs
from local.fair_queue import FairQueue, TenantOf, reserve_for

log = logging.getLogger("spool.http")

# (method, path, query, body length) -> run on the loop thread?
QuickRequest = Callable[[str, str, str, int], bool]

# An inline request running longer than this lets the watchdog take the loop.
STALL_AFTER = 0.05
# How often the watchdog looks while requests are being served inline.
WATCH_INTERVAL = 0.02
# With no inline request for this long it sleeps until the next one (an idle
# server then costs nothing), waking this often only to see a stop.
IDLE_AFTER = 1.0
IDLE_WAKE = 1.0


class TaskDispatcher(ThreadedTaskDispatcher):
    """waitress's thread pool, whose threads serve requests beside the emulated
    worker's invocation, not in it: their lines (waitress's own too) carry no id.

    Its queue takes turns between callers (local/fair_queue.py) instead of first
    come, first served, and keeps a reserve of threads no one caller may hold, so
    another's request starts without waiting for one of a flood's to end.
    waitress's own add_task and shutdown use it unchanged, under the same lock
    (a shutdown's cancel reaches capped requests too: `popleft` ignores the cap);
    handler_thread is waitress's loop, taking only what is below the cap."""

    def __init__(self, tenant_of: TenantOf | None = None, reserve: int | None = None) -> None:
        super().__init__()
        self.queue: Any = FairQueue(tenant_of=tenant_of)
        self.reserve = reserve  # SPOOL_HTTP_RESERVE_THREADS; None: reserve_for's own
        # Times a pool thread went to wait for work: a thread that found only
        # capped requests waits like an idle one, and this shows it (no spinning).
        self.waits = 0

    def set_thread_count(self, count: int) -> None:
        with self.lock:
            if count > 0:
                self.queue.cap = count - reserve_for(count, self.reserve)
        super().set_thread_count(count)

    def handler_thread(self, thread_no: int) -> None:
        """waitress's handler_thread, but waiting while no lane below the cap has a
        request (not merely while the queue is empty), and counting what it runs
        as its lane's until it ends, when a waiting thread is woken to look again."""
        logs.not_in_invocation()
        while True:
            with self.lock:
                while not self.queue.ready() and self.stop_count == 0:
                    self.active_count -= 1
                    self.waits += 1
                    self.queue_cv.wait()
                    self.active_count += 1
                if self.stop_count > 0:
                    self.active_count -= 1
                    self.stop_count -= 1
                    self.threads.discard(thread_no)
                    self.thread_exit_cv.notify()
                    break
                lane, task = self.queue.take()
            try:
                task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)
            finally:
                with self.lock:
                    self.queue.done(lane)
                    if self.queue.ready():
                        # This thread may be told to stop before it looks again.
                        self.queue_cv.notify()


class InlineTaskDispatcher(TaskDispatcher):
    """waitress's thread pool (TaskDispatcher), plus a queue of channels the loop
    owner serves itself."""

    def __init__(
        self,
        quick: QuickRequest,
        stall_after: float = STALL_AFTER,
        tenant_of: TenantOf | None = None,
        reserve: int | None = None,
    ) -> None:
        super().__init__(tenant_of, reserve)
        self.quick = quick
        self.stall_after = stall_after
        self.pending: collections.deque[Any] = collections.deque()
        self.loop_lock = threading.Lock()
        self.loop_owner: int | None = None  # thread ident running the loop now
        self.rescuing = False  # the watchdog holds the loop: everything to the pool
        self.inline_since = 0.0  # monotonic start of the inline request, 0 when none
        self.inline_thread: int | None = None  # the thread inside service() inline
        self.rescues = 0  # times the watchdog took the loop over
        self.started = 0  # inline requests begun: the watchdog's sign of activity
        self.watching = True  # False while the watchdog sleeps through idleness
        self.wake = threading.Event()

    # -- waitress's side ------------------------------------------------------

    def add_task(self, task: Any) -> None:
        """Called by a channel with a complete request, on whichever thread read it
        (the loop owner) or finished the one before it (a pool thread)."""
        if not self.rescuing and threading.get_ident() == self.loop_owner and self._is_quick(task):
            self.pending.append(task)
            return
        super().add_task(task)

    def _is_quick(self, channel: Any) -> bool:
        requests = getattr(channel, "requests", None)
        if not requests:
            return False
        request = requests[0]
        if request.error is not None:
            return True  # an error answer: the parser already wrote its body
        try:
            # A chunked body's length is known only once read (waitress sets the header).
            length = request.headers.get("CONTENT_LENGTH") or request.content_length or 0
            return self.quick(
                str(request.command or ""),
                str(request.path or ""),
                str(request.query or ""),
                int(length),
            )
        except Exception:  # a predicate's bug must not stop the loop
            log.exception("inline request check failed; serving on a thread")
            return False

    def serving_inline(self) -> bool:
        """True on the thread serving a request inline: its trigger would wake the
        loop this very thread runs, which polls again once the request is done.

        Such a thread never waits for the loop either: waitress makes a writer past
        16 MiB of unsent answer wait for the loop to drain it, which GuardedChannel
        skips here (local/http_guard.py); a client that never read held the loop
        thread for as long as it stayed connected, and through a stop."""
        return self.inline_thread is not None and threading.get_ident() == self.inline_thread

    # -- the loop owner's side ------------------------------------------------

    def own_loop(self) -> None:
        self.loop_lock.acquire()
        self.loop_owner = threading.get_ident()

    def release_loop(self) -> None:
        self.loop_owner = None
        self.loop_lock.release()

    def run_pending(self) -> None:
        """Serve the requests queued by this loop turn.

        Called with the loop owned; the loop is let go while each request runs,
        so the watchdog can take it if the request stalls (a pipelined request
        queued meanwhile goes to the pool)."""
        for _ in range(len(self.pending)):
            try:
                channel = self.pending.popleft()
            except IndexError:  # the watchdog moved the rest to the pool
                return
            self.inline_thread = threading.get_ident()
            self.inline_since = time.monotonic()
            self.started += 1
            if not self.watching:  # after idleness only: one wake, not one per request
                self.watching = True
                self.wake.set()
            self.release_loop()
            try:
                channel.service()
            except Exception:  # as waitress's pool threads do; a signal's exception goes on
                log.exception("Exception when servicing %r", channel)
            finally:
                self.inline_since = 0.0
                self.inline_thread = None
                self.own_loop()

    def drain_to_pool(self) -> None:
        """Hand the requests queued for the loop to the pool (into its fair queue:
        the base class's add_task, not ours, which would queue them here again)."""
        while True:
            try:
                channel = self.pending.popleft()
            except IndexError:
                return
            ThreadedTaskDispatcher.add_task(self, channel)

    # -- the watchdog ---------------------------------------------------------

    def watch(
        self,
        stopping: Callable[[], bool],
        loop_map: dict[int, Any],
        stop_accepting: Callable[[], None],
    ) -> None:
        """Take the loop over while an inline request is stalled (a thread's body).

        A stop does not end a rescue: the loop keeps turning until the stalled request
        ends (answers still go out, a client that leaves is seen), with the listening
        socket closed (`stop_accepting`), as Server._finish_running does."""
        seen, quiet_since = self.started, time.monotonic()
        while not stopping():
            time.sleep(WATCH_INTERVAL)
            if self.started != seen or self.inline_since:
                seen, quiet_since = self.started, time.monotonic()
            elif time.monotonic() - quiet_since > IDLE_AFTER:
                self._sleep_until_busy(seen, stopping)
                seen, quiet_since = self.started, time.monotonic()
                continue
            since = self.inline_since
            if not since or time.monotonic() - since < self.stall_after:
                continue
            if not self.loop_lock.acquire(blocking=False):
                continue  # the owner got it back first
            try:
                self.loop_owner = threading.get_ident()
                self.rescuing = True
                self.rescues += 1
                self.drain_to_pool()
                log.debug("an inline request stalled; serving on threads meanwhile")
                accepting = True
                while self.inline_since == since:
                    if accepting and stopping():
                        stop_accepting()
                        accepting = False
                    with contextlib.suppress(OSError):
                        wasyncore.loop(timeout=WATCH_INTERVAL, map=loop_map, use_poll=True, count=1)
            finally:
                self.rescuing = False
                self.release_loop()

    def _sleep_until_busy(self, seen: int, stopping: Callable[[], bool]) -> None:
        """Wait for the next inline request. run_pending moves `started` before it
        reads `watching`, so either that request finds watching False and wakes
        us, or we find `started` moved here and do not sleep."""
        self.wake.clear()
        self.watching = False
        while self.started == seen and not stopping():
            if self.wake.wait(IDLE_WAKE):
                break
        self.watching = True
