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
write the WAL again from its start in the room it already had. Such a checkpoint
also truncates the WAL (TRUNCATE, below), giving its room back to the disk.

A passive checkpoint copies frames back but cannot make SQLite write the WAL again
from its start: that happens only when a writer begins and finds every frame copied
and no reader on a snapshot in the WAL. Beside writers that never stop, with readers
that overlap (HTTP reads, workers), it never held: the WAL grew past the mark for as
long as the load lasted (59.7 MB beside 7.2 MB of data on a 64 MB disk, a chaos run).
So once the WAL is RESTART_MARKS marks long, the checkpoint thread takes the turn to
write (the gate, sqlite_txn.write_turn), so no frame is added meanwhile, and runs
`PRAGMA wal_checkpoint(RESTART)`: it copies what the passive one left and waits, at
most RESTART_WAIT_MS, for the readers still on older snapshots to finish, so the next
writer starts the WAL again. Writers wait at the gate for that long at most. A reader
that holds its snapshot longer (a `sqlite3` shell left inside BEGIN) defeats it, as it
defeats SQLite's own checkpoints; then the next try waits until the WAL has grown
another RETRY_MARKS of a mark, rather than holding the writers after every commit.

The marks assume a disk with room for them: CHECKPOINT_PAGES is 40 MB of WAL. On a
smaller one (a 16 MB volume, a chaos run) the WAL filled the disk before its first
checkpoint, holding 1,370 small jobs, and then no checkpoint could run either (copying
back needs room in the database file), so every write was refused until an operator
made room. So the mark is also at most a ROOM_SHARE-th of the room the WAL may use
(the disk's free space plus the WAL file's own size, looked at every ROOM_EVERY
commits): the WAL is copied back and started again long before it fills the disk.

The checkpoint's thread must get the CPU first, though, and on a loaded machine it
came late while the writers went on appending: a test's WAL passed three marks. So a
writer whose commit leaves the WAL HOLD_MARKS past the restart mark waits (at most
the restart's own patience) for the checkpoint in progress before it goes on.
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
from contextlib import AbstractContextManager

from chalicelib import logs
from chalicelib.errors import StoreUnavailable
from chalicelib.worker_id import this_process

CHECKPOINT_PAGES = 10_000  # as before: each checkpoint costs fsyncs and rewrites hot pages
SAFETY_NET_PAGES = 40_000  # PRAGMA wal_autocheckpoint: only if ours never runs
RESTART_MARKS = 2  # a WAL this many CHECKPOINT_PAGES long is started again (RESTART)
RETRY_MARKS = 0.25  # after a restart a reader defeated: grow this much more first
RESTART_WAIT_MS = 200  # a restart's wait for readers, and so the writers' for it
TURN_PATIENCE = 1.0  # seconds a restart waits for its turn among the writers
HOLD_MARKS = 0.5  # past the restart mark by this much, a writer waits for the checkpoint
ROOM_SHARE = 8  # the mark is at most this fraction of the room the WAL may use
ROOM_EVERY = 16  # commits between looks at the disk's room
MIN_MARK = 64  # frames: below this the disk is full anyway (check_room's 1 MiB)
FRAME_HEAD = 24  # bytes of a WAL frame's own header, before its page
# WalIndexHdr.szPage (the page size; 1 means 65536), WalIndexHdr.mxFrame (frames in
# the WAL) and WalCkptInfo.nBackfill (frames copied back), native byte order, in the
# first 100 bytes of the -shm file.
SZ_PAGE_AT = 14
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


# The turn to write, with no transaction, given a patience (sqlite_txn.write_turn).
Turn = Callable[[float], AbstractContextManager[None]]


class Checkpointer:
    def __init__(
        self,
        db_path: str,
        connect: Callable[[], sqlite3.Connection],
        turn: Turn | None = None,
    ) -> None:
        self.shm_path = db_path + "-shm"
        self.wal_path = db_path + "-wal"
        self._folder = os.path.dirname(os.path.abspath(db_path))
        self._room_mark = 1 << 62  # frames, a share of the room the WAL may use: unknown yet
        self._commits = 0
        self._connect = connect
        self._turn = turn  # None: passive checkpoints only
        self._db: sqlite3.Connection | None = None
        self._running = threading.Lock()
        self._fd = -1  # the -shm file, read for the backlog
        self._reads = 0
        self._owner = this_process()
        self._failures = 0  # checkpoints failed in a row
        self._warned_at = 0.0
        self._pressed = False  # a commit was refused for room: checkpoint until whole
        self._retry_at = 0  # WAL frames a restart waits for after one a reader defeated
        self._restart_warned_at: float | None = None

    def after_commit(self) -> None:
        """Called by a writer once it has let go of the gate. Never raises: the write
        has committed, and its caller must hear so."""
        frames, copied = self._counters()
        self._commits += 1
        if self._commits % ROOM_EVERY == 1:
            self._look_at_room()
        if (
            self._pressed
            or frames - copied >= self._mark()
            or (self._turn is not None and frames >= self._restart_mark())
        ):
            self._start()
        if self._turn is not None and frames >= self._hold_mark():
            self._wait_for_checkpoint()

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
        frames, copied = self._counters()
        return max(frames - copied, 0)

    def _counters(self) -> tuple[int, int]:
        """(frames in the WAL since it last began again, frames copied back); (0, 0)
        when unknown."""
        self._adopt()
        fd = self._shm()
        if fd < 0:
            return 0, 0
        try:
            head = os.pread(fd, HEAD, 0)
        except OSError:
            return 0, 0
        if len(head) < HEAD:
            return 0, 0
        (frames,) = struct.unpack_from("=I", head, MX_FRAME_AT)
        (copied,) = struct.unpack_from("=I", head, BACKFILL_AT)
        return int(frames), int(copied)

    def _mark(self) -> int:
        """The backlog that sets off a checkpoint: CHECKPOINT_PAGES (read at call time:
        tests lower it), or less on a disk with less room."""
        return min(CHECKPOINT_PAGES, self._room_mark)

    def _look_at_room(self) -> None:
        """The room mark: a ROOM_SHARE-th of the disk's free space plus the WAL file's
        size (SQLite writes the WAL again from its start once it is started again), in
        frames of this file's page size. Unknown room leaves the mark as it was."""
        try:
            disk = os.statvfs(self._folder)
            wal = os.stat(self.wal_path).st_size
        except OSError:
            return
        room = disk.f_bavail * disk.f_frsize + wal
        self._room_mark = max(room // (self._page_size() + FRAME_HEAD) // ROOM_SHARE, MIN_MARK)

    def _page_size(self) -> int:
        """The database's page size, from the wal-index header (4096 when unknown)."""
        fd = self._shm()
        try:
            head = os.pread(fd, HEAD, 0) if fd >= 0 else b""
        except OSError:
            head = b""
        if len(head) < HEAD:
            return 4096
        (size,) = struct.unpack_from("=H", head, SZ_PAGE_AT)
        return 65536 if size == 1 else int(size) or 4096

    def _restart_mark(self) -> int:
        """WAL frames past which the WAL is started again."""
        return max(RESTART_MARKS * self._mark(), self._retry_at)

    def _hold_mark(self) -> int:
        """WAL frames past which a writer waits for the checkpoint in progress."""
        return self._restart_mark() + max(int(HOLD_MARKS * self._mark()), 1)

    def _wait_for_checkpoint(self) -> None:
        """Until the running checkpoint ends, or the restart's patience is spent: the
        writer's thread then yields the CPU to it instead of adding more frames."""
        patience = TURN_PATIENCE + RESTART_WAIT_MS / 1000
        if self._running.acquire(timeout=patience):
            self._running.release()

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
        if self._owner != this_process():
            self._owner = this_process()
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
            busy, frames, copied = _result(self._db, "PASSIVE")
            if frames < RESTART_MARKS * self._mark():  # the WAL began again since
                self._retry_at = 0
            if self._turn is not None and (self._pressed or frames >= self._restart_mark()):
                busy, frames, copied = self._restart(self._db)
        except sqlite3.Error as exc:  # the next commit past the mark tries again
            self._failed(exc)
        else:
            self._failures = 0
            # Whole when every frame in the WAL was copied back.
            if busy == 0 and frames == copied:
                self._pressed = False

    def _restart(self, db: sqlite3.Connection) -> tuple[int, int, int]:
        """Copy the rest back, with the writers held at the gate, and see the WAL
        started again (RESTART), or emptied (TRUNCATE) after a refused commit, to give
        its room back; or, when readers or the turn take too long, the WAL's counts
        as they are, and the next try put off until it has grown RETRY_MARKS more."""
        mode = "TRUNCATE" if self._pressed else "RESTART"
        assert self._turn is not None
        try:
            with self._turn(TURN_PATIENCE):
                db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")  # read at call time
                busy, frames, copied = _result(db, mode)
        except StoreUnavailable:  # other writers kept the turn: try again later
            busy, frames, copied = 1, *self._counters()
        if busy == 0:
            self._retry_at = 0
        else:
            self._retry_at = max(frames, 0) + max(int(RETRY_MARKS * self._mark()), 1)
            # frames is -1 when the copy itself failed (a full disk): no reader to blame.
            size = f"{frames} frames" if frames >= 0 else "the copy back failed"
            self._warn(
                f"the WAL could not be started again ({mode}, {size}): a reader held "
                "its snapshot or writers the turn too long, or the disk refused the copy"
            )
        return busy, frames, copied

    def _failed(self, exc: sqlite3.Error) -> None:
        """Warn of the first failure in a row, then at most every WARN_EVERY seconds:
        a backlog past the mark retries after every commit, hundreds a second."""
        self._failures += 1
        now = time.monotonic()
        if self._failures == 1 or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("WAL checkpoint failed: %s (%d in a row)", exc, self._failures)

    def _warn(self, message: str) -> None:
        """At most every WARN_EVERY seconds."""
        now = time.monotonic()
        last = self._restart_warned_at
        if last is None or now - last >= WARN_EVERY:
            self._restart_warned_at = now
            log.warning("%s", message)

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


def _result(db: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
    """`PRAGMA wal_checkpoint(mode)`: (1 if it could not finish, frames in the WAL,
    frames copied back); -1s for a file not in WAL mode."""
    row = db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    if row is None:
        return 1, 0, 0
    busy, frames, copied = row
    return int(busy), int(frames), int(copied)


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True
