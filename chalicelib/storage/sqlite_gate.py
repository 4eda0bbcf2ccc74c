"""The turn to write a SQLite file, handed between processes in microseconds.

SQLite lets one connection write at a time. A connection that finds the file locked
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... up to 100 ms between
tries and never learns when the lock came free. A worker that writes in quick
succession (claims, then batches of completions, each handed between its own
threads by a futex) leaves gaps of microseconds, so an API process's single enqueue
could sleep through dozens of them: 35-80 ms at p99 behind a draining worker
(bench/fair_bench.py), 94 ms with two `spool serve` processes.

So every Spool process takes this gate before BEGIN IMMEDIATE: an exclusive flock on
a companion file (`<db>.writer`), tried at once and then every few tens of
microseconds. A waiter also holds a shared flock on a second companion
(`<db>.waiting`); a process about to write that finds someone else waiting lets
them all go first (up to COURTESY) instead of taking the gate straight back: a
draining worker arrives at the gate again microseconds after each write, and an API
process's one-job add that waited through the worker's claim would otherwise race
it for the next turn, and lose it whenever its wake-up came late (a descheduled
process on a busy machine). SQLite's own
lock and busy timeout stay underneath, for writers that are not Spool (the sqlite3
shell, an older Spool) and for the WAL switch.

flock locks belong to an open file description: the descriptors are opened per
process (after a fork the child opens its own), and the kernel drops them when a
process dies, so a crashed writer never leaves the gate shut. The files removed
while Spool runs (by hand, a cleaner of old files) are made again by the next
process to open them; each running process looks once a second whether the files
at the paths are still those it holds, and opens them again if not, so the
processes do not split into groups that each take a gate of their own. A writer stopped
while holding it (SIGSTOP) shuts it until it resumes; waiters give up after the
same 10 s as SQLite's busy timeout.
"""

from __future__ import annotations

import logging
import os
import time

try:
    import fcntl
except ImportError:  # Windows: SQLite's own lock alone, as before the gate
    fcntl = None  # type: ignore[assignment]

from chalicelib.storage.files import PRIVATE_FILE
from chalicelib.worker_id import this_process

PATIENCE = 10.0  # seconds: SQLite's busy_timeout, so both give up alike
BUSY_TIMEOUT_MS = int(PATIENCE * 1000)  # every connection's busy_timeout (sqlite.PRAGMAS)
# How often a waiter tries again: a tight loop at first, then at most this long
# between tries. time.sleep adds the kernel's timer slack (~50 us) to each.
FIRST_STEP = 20e-6
LONGEST_STEP = 200e-6
# A process arriving while others wait steps aside until none is left waiting, for
# at most this long (a waiter stopped or descheduled must not stall every writer),
# instead of taking the gate it may have just released. Checked every DEFER_STEP.
COURTESY = 2e-3
DEFER_STEP = 20e-6
# How often a process looks whether its gate files are still the ones at the paths.
LOOK_EVERY = 1.0


log = logging.getLogger("spool.storage")


class GateTimeout(Exception):
    """Another process kept the gate for PATIENCE seconds."""


class WriteGate:
    """One per store; callers already hold the store's in-process write lock."""

    def __init__(self, db_path: str) -> None:
        self.paths = (db_path + ".writer", db_path + ".waiting")
        self._owner: tuple[int, str] | None = None  # the process the descriptors are for
        self._gate = -1
        self._waiting = -1
        self._next_look = 0.0  # time.monotonic() of the next look at the files (_replaced)

    def acquire(self, patience: float | None = None) -> None:
        if fcntl is None or not self._open():
            return
        try:
            if self._others_waiting():
                self._defer()
            elif self._try():
                return
            self._wait(PATIENCE if patience is None else patience)
        except OSError as exc:
            # flock refused outright (ENOLCK: a file system without locks). SQLite's
            # own lock still keeps writers apart, as before the gate existed.
            log.warning("no write gate for %s (%s); SQLite's lock alone", self.paths[0], exc)
            self._disable()

    def release(self) -> None:
        if self._gate >= 0 and self._owner == this_process():
            try:
                fcntl.flock(self._gate, fcntl.LOCK_UN)
            except OSError:  # closing the descriptor lets go of it all the same
                self._disable()

    def close(self) -> None:
        if self._owner == this_process():
            for fd in (self._gate, self._waiting):
                if fd >= 0:
                    os.close(fd)
        self._owner, self._gate, self._waiting = None, -1, -1

    # -- inside ------------------------------------------------------------
    def _disable(self) -> None:
        """Close the descriptors and keep them closed for this process."""
        self.close()
        self._owner = this_process()

    def _open(self) -> bool:
        if self._owner == this_process():
            if self._gate < 0 or not self._due_a_look() or not self._replaced():
                return self._gate >= 0
            self.close()  # opened again below: the files the other processes take now
        # A new process (or a forked child, which must not share its parent's open
        # file descriptions: flock would then count them as one owner).
        self._owner = this_process()
        try:
            self._gate = os.open(self.paths[0], os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
            self._waiting = os.open(self.paths[1], os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError:
            # A read-only folder: such a file cannot be written through SQLite either,
            # so there is no turn to take; SQLite reports what it can.
            self._disable()
            return False
        return True

    def _due_a_look(self) -> bool:
        """At most one look at the files a LOOK_EVERY: the stats cost a few percent of
        a one-job write, and a process started after a removal is met within it."""
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + LOOK_EVERY
        return True

    def _replaced(self) -> bool:
        """Whether a file at the paths is not the one this process holds (removed by
        hand or by a cleaner, or replaced): a process started since opens the new one,
        and each group then took a gate of its own, two writers at once meeting in
        SQLite's busy handler again."""
        for path, fd in zip(self.paths, (self._gate, self._waiting), strict=True):
            try:
                there = os.stat(path)
            except OSError:
                return True
            held = os.fstat(fd)
            if (there.st_ino, there.st_dev) != (held.st_ino, held.st_dev):
                return True
        return False

    def _try(self) -> bool:
        return _exclusive_now(self._gate)

    def _others_waiting(self) -> bool:
        """Someone holds a shared lock on the waiting file (this process holds none)."""
        if not _exclusive_now(self._waiting):
            return True
        fcntl.flock(self._waiting, fcntl.LOCK_UN)
        return False

    def _defer(self) -> None:
        """Let those already waiting go first: return once none is left waiting, or
        after COURTESY. Not marked as waiting meanwhile, so two processes arriving
        together never defer to each other; they race in _wait as before."""
        until = time.monotonic() + COURTESY  # read at call time: tests change it
        while self._others_waiting() and time.monotonic() < until:
            time.sleep(DEFER_STEP)

    def _wait(self, patience: float) -> None:
        deadline = time.monotonic() + patience
        fcntl.flock(self._waiting, fcntl.LOCK_SH)  # shared: never blocks
        try:
            step = FIRST_STEP
            while not self._try():
                if time.monotonic() >= deadline:
                    raise GateTimeout(f"another process held {self.paths[0]} for {patience} s")
                time.sleep(step)
                step = min(step * 2, LONGEST_STEP)
        finally:
            fcntl.flock(self._waiting, fcntl.LOCK_UN)


def _exclusive_now(fd: int) -> bool:
    """An exclusive flock on fd if nobody else holds one; never waits."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
