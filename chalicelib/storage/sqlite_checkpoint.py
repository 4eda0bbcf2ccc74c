"""WAL checkpoints on a thread of their own, outside the write gate.

SQLite checkpoints a WAL inside the COMMIT that grows it past `wal_autocheckpoint`
pages: 20-40 ms on this machine for 10,000 pages, during which the committing
connection still holds Spool's write gate (sqlite_gate.py), so every other writer
waited for it. A passive checkpoint needs no write lock, so here it runs beside the
writers instead: after each commit the store reads how many WAL frames are not yet
copied back (two counters in the `-shm` wal-index, whose layout is SQLite's
documented file format: https://www.sqlite.org/walformat.html), and past
CHECKPOINT_PAGES one daemon thread runs `PRAGMA wal_checkpoint(PASSIVE)` on a
connection of its own. SQLite's autocheckpoint stays on at a higher mark
(SAFETY_NET_PAGES), so the WAL stays bounded even if that read ever misleads.

A commit the disk refused (full, or an I/O error such as a file-size limit) sets off
a checkpoint too, whatever the backlog, and so does every commit after it until one
checkpoint has copied the whole WAL back. On a disk with less room than the mark's
40 MB the WAL otherwise filled it, and since only a commit that succeeded could set
off a checkpoint, none ever ran again: every write was refused for good, even after
room was made (the WAL took that too), though a checkpoint would have let SQLite
write the WAL again from its start in the room it already had.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable

from chalicelib import logs

CHECKPOINT_PAGES = 10_000  # as before: each checkpoint costs fsyncs and rewrites hot pages
SAFETY_NET_PAGES = 40_000  # PRAGMA wal_autocheckpoint: only if ours never runs
# WalIndexHdr.mxFrame (frames in the WAL) and WalCkptInfo.nBackfill (frames copied
# back), native byte order, in the first 100 bytes of the -shm file.
MX_FRAME_AT = 16
BACKFILL_AT = 96
HEAD = 100
# The -shm file is unlinked when the last connection closes, then made anew: look
# for that every this many reads rather than on each commit.
RELINK_EVERY = 256
WARN_EVERY = 60.0  # seconds between warnings of checkpoints that keep failing

log = logging.getLogger("spool.storage")
# A checkpoint belongs where the write that set it off does (chalicelib/logs.py).
_Thread = logs.inherited_thread  # by this name, so a test can refuse it without touching others


class Checkpointer:
    def __init__(self, db_path: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self.shm_path = db_path + "-shm"
        self._connect = connect
        self._db: sqlite3.Connection | None = None
        self._running = threading.Lock()
        self._fd = -1  # the -shm file, read for the backlog
        self._reads = 0
        self._owner = os.getpid()
        self._failures = 0  # checkpoints failed in a row
        self._warned_at = 0.0
        self._pressed = False  # a commit was refused for room: checkpoint until whole

    def after_commit(self) -> None:
        """Called by a writer once it has let go of the gate. Never raises: the write
        has committed, and its caller must hear so."""
        if self._pressed or self.backlog() >= CHECKPOINT_PAGES:
            self._start()

    def after_refused_commit(self) -> None:
        """Called by a writer whose commit the disk refused, once it has let go of the
        gate: copy the WAL back so SQLite can write it again from its start. Never
        raises: the caller raises the refusal."""
        self._pressed = True
        self._start()

    def _start(self) -> None:
        """A checkpoint on its thread, unless one is already running."""
        if self._running.acquire(blocking=False):
            try:
                _Thread(target=self._run, name="spool-checkpoint", daemon=True).start()
            except RuntimeError as exc:  # no thread to be had (interpreter exit, limits)
                self._running.release()
                log.warning("WAL checkpoint not started: %s", exc)

    def backlog(self) -> int:
        """WAL frames not yet copied into the database file (0 when unknown)."""
        self._adopt()
        fd = self._shm()
        if fd < 0:
            return 0
        try:
            head = os.pread(fd, HEAD, 0)
        except OSError:
            return 0
        if len(head) < HEAD:
            return 0
        (frames,) = struct.unpack_from("=I", head, MX_FRAME_AT)
        (copied,) = struct.unpack_from("=I", head, BACKFILL_AT)
        return max(int(frames) - int(copied), 0)

    def run_now(self) -> None:
        """One passive checkpoint on the calling thread (waits for a running one)."""
        self._adopt()
        with self._running:
            self._checkpoint()

    def close(self) -> None:
        self._adopt()
        with self._running:  # a checkpoint in flight finishes first
            if self._db is not None:
                self._db.close()
                self._db = None
        self._close_shm()

    # -- inside ------------------------------------------------------------
    def _adopt(self) -> None:
        """In a forked child: the parent's checkpoint thread did not come along, but its
        lock may have, held; and its connection must not be used here. Start afresh
        (the -shm descriptor came along as the child's own copy: close it)."""
        if self._owner != os.getpid():
            self._owner = os.getpid()
            self._running = threading.Lock()
            self._db = None
            self._close_shm()

    def _run(self) -> None:
        try:
            self._checkpoint()
        finally:
            self._running.release()

    def _checkpoint(self) -> None:
        try:
            if self._db is None:
                self._db = self._connect()  # closes what it opened if it fails
            rows = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next commit past the mark tries again
            self._failed(exc)
        else:
            self._failures = 0
            # (busy, frames in the WAL, frames copied back): whole when all were copied.
            if rows and rows[0][0] == 0 and rows[0][1] == rows[0][2]:
                self._pressed = False

    def _failed(self, exc: sqlite3.Error) -> None:
        """Warn of the first failure in a row, then at most every WARN_EVERY seconds:
        a backlog past the mark retries after every commit, hundreds a second."""
        self._failures += 1
        now = time.monotonic()
        if self._failures == 1 or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("WAL checkpoint failed: %s (%d in a row)", exc, self._failures)

    def _shm(self) -> int:
        self._reads += 1
        if self._fd >= 0 and self._reads % RELINK_EVERY == 0 and _unlinked(self._fd):
            self._close_shm()
        if self._fd < 0:
            # Not made yet, or no WAL (a read-only file): nothing to do, -1 stays.
            with contextlib.suppress(OSError):
                self._fd = os.open(self.shm_path, os.O_RDONLY)
        return self._fd

    def _close_shm(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True
