"""One write transaction on the SQLite file, and what it says when the file cannot be written.

A write that fails because of the machine, not the request (the disk is full, the
file or its file system became read-only, the disk reports an I/O error, the file is
damaged, the file was deleted or replaced under the running process) is the
operator's to fix and succeeds again once they have: it is raised as
StoreUnavailable, a 503 with Retry-After over HTTP and a pause-and-retry in the
worker, with a message that says what to fix, instead of an unexpected error. The
store remembers the last such failure for a while, so /health reports a store that
cannot take jobs although reads still work. A read the file refuses (it cannot be
opened, the disk reports an I/O error, a page read is damaged, or it was deleted or
replaced) is the same StoreUnavailable, never an internal error (cannot_read).

The wait for the turn to write, this process's lock and then the gate between
processes, has one patience in all, the gate's: had the gate's started only once the
lock was had, threads queued behind a writer stalled in another process (SIGSTOP)
would each wait it in turn, the Nth for N times as long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sqlite3
import threading
import time
from collections.abc import Iterator

from chalicelib.errors import StoreUnavailable
from chalicelib.storage import sqlite_gate
from chalicelib.storage.sqlite_checkpoint import Checkpointer
from chalicelib.storage.sqlite_gate import GateTimeout, WriteGate

log = logging.getLogger("spool.storage")

SQLITE_CANTOPEN = 14
SQLITE_IOERR = 10
SQLITE_FULL = 13

# A damaged file is the machine's (or a bad copy's) doing, not the request's: like a
# full disk, the operator's to mend (from a backup, or `sqlite3 FILE .recover`), so a
# 503 that says so, and a worker that pauses, rather than a 500 and a worker that exits.
_DAMAGED = {
    11: "the SQLite database file is damaged (SQLITE_CORRUPT): restore it from a backup",
    26: "the file is not a SQLite database (SQLITE_NOTADB): restore it from a backup",
}
# SQLite's primary result codes (the low byte of an extended code) for a file this
# process cannot write now.
_CANNOT_WRITE = {
    13: "the disk holding the SQLite database is full: free space on it",  # SQLITE_FULL
    8: "the SQLite database cannot be written (its file or file system is read-only)",
    SQLITE_IOERR: "the disk holding the SQLite database reported an I/O error",
    **_DAMAGED,
}
# ... and for a file this process cannot read now (whatever it was asked).
_CANNOT_READ = {
    SQLITE_CANTOPEN: "the SQLite database file cannot be opened",
    SQLITE_IOERR: "the disk holding the SQLite database reported an I/O error",
    **_DAMAGED,
}
RETRY_AFTER = 30  # seconds: freeing space or remounting takes a person
REMEMBER_FAILURE = 10.0  # seconds /health reports a write that failed like that


def cannot_write(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable for a write the machine refused, or None for anything else."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or not isinstance(code, int):
        return None
    reason = _CANNOT_WRITE.get(code & 0xFF)
    if reason is None:
        return None
    if code & 0xFF == SQLITE_IOERR:
        reason += _file_size_limit()
    return StoreUnavailable(f"{reason}; nothing was written", retry_after=RETRY_AFTER)


def _no_room(exc: BaseException) -> bool:
    """Whether a failed COMMIT may have met a full disk or a file-size limit (an I/O
    error is how SQLite reports the limit's EFBIG): a checkpoint may make room."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)


def _file_size_limit() -> str:
    """What else an I/O error on a write may be: this process's own file-size limit.

    A write past RLIMIT_FSIZE (`ulimit -f`, a service manager's LimitFSIZE) fails with
    EFBIG, which SQLite reports as SQLITE_IOERR_WRITE, the code of a failing disk: the
    refusal named only the disk, and sent the operator to one that was fine."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return ""
    return f", or a file reached this process's file-size limit ({soft} bytes, ulimit -f)"


def cannot_read(exc: BaseException, watch: FileWatch | None) -> StoreUnavailable | None:
    """The StoreUnavailable for a read (or a connection) the file refused, or None for
    anything else, which is a bug and stays one.

    A file deleted or replaced under the process explains any SQLite error (a
    connection that found an empty file at the path says "no such table: jobs"), so
    the watch is asked first: only once the read has failed, so a read costs nothing
    more.
    """
    if not isinstance(exc, sqlite3.Error):
        return None
    gone = watch.unavailable() if watch is not None else None
    if gone is not None:
        return gone
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _CANNOT_READ.get(code & 0xFF) if isinstance(code, int) else None
    if reason is None:
        return None
    return StoreUnavailable(f"{reason} ({exc}): fix it and retry", retry_after=RETRY_AFTER)


def stayed_locked() -> StoreUnavailable:
    """Another writer kept the turn past the patience: retryable, not a bug."""
    return StoreUnavailable("the SQLite database stayed locked", retry_after=1)


class FileWatch:
    """Do the paths still name the files this process opened?

    A database file deleted (or replaced, e.g. a backup moved into its place) while the
    process runs keeps being written through the open descriptor: every
    job acknowledged after that goes to a file no other process opens and that is gone
    when this one stops. So is a `-wal` (or `-shm`) file deleted or replaced under it:
    SQLite goes on committing into the write-ahead log it still holds open, which no
    other process can read (they fail with "disk I/O error") and which is lost, with
    every commit not yet checkpointed, if this process is killed. One stat of each
    file per write transaction (about a microsecond each) refuses such writes instead.
    A copy written over the file in place (`cp backup spool.db`: the same inode) is not
    seen here; docs/operations.md says how to put a backup back.

    The companions are watched once they exist: the `-wal` is made by a connection's
    first read and is only truncated, never replaced, by checkpoints; SQLite deletes
    it (and the `-shm`) only when the last connection to the file closes, which cannot
    happen while this store holds connections to it. So only a different identity
    (device, inode), or none, of a companion seen before means it was taken away.
    """

    COMPANIONS = (("-wal", "write-ahead log"), ("-shm", "shared-memory index"))

    def __init__(self, path: str, beside: str | None = None) -> None:
        self.path = path
        # Where SQLite keeps the companions: beside the file it opened, which is the
        # file a symbolic link at `path` names (SQLiteStore.file), not beside the link.
        self.beside = beside or path
        self._identity = _identity(path)
        self._companions = {
            suffix: _identity(self.beside + suffix) for suffix, _ in self.COMPANIONS
        }

    def unavailable(self) -> StoreUnavailable | None:
        """What to say if a path no longer names its file, else None."""
        if self._identity is None:
            return None
        if _identity(self.path) != self._identity:
            said = (
                "was deleted or replaced while this process had it open: restart Spool so "
                "that it opens the file now at that path (nothing was written)"
            )
            return StoreUnavailable(
                f"the SQLite database file {self.path} {said}",
                retry_after=RETRY_AFTER,
                public=f"the SQLite database file {os.path.basename(self.path)} {said}",
            )
        for suffix, what in self.COMPANIONS:
            seen = self._companions[suffix]
            now = _identity(self.beside + suffix)
            if seen is None:
                if now is not None:  # made since the store opened: watched from now on
                    self._companions[suffix] = now
                continue
            if now != seen:
                said = (
                    "was deleted or replaced while this process had it open, so other "
                    "processes cannot read what it writes: restart Spool, stopping it "
                    "normally rather than with kill -9 (it still holds the jobs written "
                    "since the last checkpoint and copies them into the database file as "
                    "it stops); nothing was written"
                )
                name = os.path.basename(self.beside) + suffix
                return StoreUnavailable(
                    f"the SQLite {what} file {self.beside}{suffix} {said}",
                    retry_after=RETRY_AFTER,
                    public=f"the SQLite {what} file {name} {said}",
                )
        return None

    def check(self) -> None:
        gone = self.unavailable()
        if gone is not None:
            raise gone

    def verify(self, db: sqlite3.Connection) -> None:
        """Close db, just opened by path, unless the path still names the watched file.

        Asked before db's first statement: SQLite reads the `-wal` found beside
        whatever file it opened, so a connection to a replacement would take the old
        file's WAL for its own and copy it into the replacement when it closed. Raised
        as SQLite's own "cannot open", so whoever connects (the checkpoint thread
        too) treats it as the failed open it is. With the `-wal` taken away, a new
        connection's first read would make an empty one at the path (which the shared
        index does not match: "disk I/O error"), and each retry would hold it open."""
        gone = self.unavailable()
        if gone is None:
            return
        db.close()
        error = sqlite3.OperationalError(gone.message)
        error.sqlite_errorcode = SQLITE_CANTOPEN
        raise error


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# Below this much free space on the database's file system, /health says the store
# cannot take jobs, whether or not a write has failed yet: a process that had made no
# write in the last REMEMBER_FAILURE seconds answered 200 on a full disk (and under
# `--processes N`, 200 and 503 in turn, by which process answered).
MIN_FREE_BYTES = 1 << 20


def check_room(path: str) -> None:
    """Raise StoreUnavailable when the file system holding `path` is (nearly) full, or
    the file is one this process may not write."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return  # its folder gone: the file watch says so
    if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES:
        raise StoreUnavailable(_CANNOT_WRITE[13], retry_after=RETRY_AFTER)
    if os.path.exists(path) and not os.access(path, os.W_OK):  # chmod 0400, say
        raise StoreUnavailable(_CANNOT_WRITE[8], retry_after=RETRY_AFTER)


class WriteHealth:
    """The last write the machine refused, until a write succeeds or it grows old."""

    def __init__(self) -> None:
        self._failure: tuple[float, StoreUnavailable] | None = None

    def failed(self, error: StoreUnavailable) -> None:
        self._failure = (time.monotonic(), error)

    def succeeded(self) -> None:
        self._failure = None

    def check(self) -> None:
        failure = self._failure
        if failure is not None and time.monotonic() - failure[0] < REMEMBER_FAILURE:
            error = failure[1]
            raise StoreUnavailable(
                error.message, retry_after=error.retry_after, public=error.public
            )


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so no upgrade can deadlock."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.Lock,
        gate: WriteGate | None,
        checkpointer: Checkpointer | None,
        watch: FileWatch | None,
        health: WriteHealth,
        hurry: float | None = None,
    ) -> None:
        self.db = db
        self.lock = lock
        self.gate = gate
        self.checkpointer = checkpointer
        self.watch = watch
        self.health = health
        self.hurry = hurry  # a stopping process's patience (SQLiteStore.hurry)

    def __enter__(self) -> sqlite3.Connection:
        left = self._take_turn()
        try:
            self._begin(left)
        except BaseException as exc:
            self._let_go()
            if is_locked(exc):
                # Other writers held the file past busy_timeout: retryable, not a bug.
                raise stayed_locked() from exc
            self._raise_if_cannot_write(exc)
            raise
        if self.watch is not None:
            try:
                self.watch.check()
            except StoreUnavailable as exc:
                self._roll_back()
                self._let_go()
                self.health.failed(exc)
                raise
        return self.db

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        failed = exc
        try:
            if exc is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error as error:  # e.g. the WAL could not grow: disk full
                    failed = error
                    self._roll_back()
            else:
                self._roll_back()
        finally:
            self._let_go()
        if failed is None:
            self.health.succeeded()
            if self.checkpointer is not None:
                self.checkpointer.after_commit()
            return
        if self.checkpointer is not None and _no_room(failed):
            self.checkpointer.after_refused_commit()
        self._raise_if_cannot_write(failed)
        if exc is None:  # COMMIT failed for another reason
            raise failed
        # Otherwise the body's own exception goes on as it is.

    def _take_turn(self) -> float:
        """This process's lock, then the gate, within the gate's one PATIENCE (read at
        call time: tests shorten it), or the stopping process's shorter one; the
        seconds of it left, for BEGIN's own wait."""
        patience = sqlite_gate.PATIENCE
        if self.hurry is not None:
            patience = min(patience, self.hurry)
        return take_turn(self.lock, self.gate, patience)

    def _begin(self, left: float) -> None:
        begin_immediate(self.db, left)

    def _raise_if_cannot_write(self, exc: BaseException) -> None:
        """Raise the StoreUnavailable `exc` stands for, remembered for /health."""
        unavailable = cannot_write(exc)
        if unavailable is not None:
            self.health.failed(unavailable)
            raise unavailable from exc

    def _roll_back(self) -> None:
        if not self.db.in_transaction:  # SQLite rolled back itself (some I/O errors do)
            return
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("a SQLite rollback failed: %s", exc)

    def _let_go(self) -> None:
        let_go(self.lock, self.gate)


def begin_immediate(db: sqlite3.Connection, left: float) -> None:
    """BEGIN IMMEDIATE, its wait for a writer outside the gate (another program,
    SQLite's busy handler) bounded by what is `left` of the patience: a write
    that had waited its patience at the lock and gate then waited another whole
    busy_timeout here, ~20 s in all."""
    budget_ms = sqlite_gate.BUSY_TIMEOUT_MS
    shortened = left * 1000 < budget_ms - 50  # only after a real wait: it costs two pragmas
    if shortened:
        db.execute(f"PRAGMA busy_timeout={max(1, int(left * 1000))}")
    try:
        db.execute("BEGIN IMMEDIATE")
    finally:
        if shortened:
            db.execute(f"PRAGMA busy_timeout={budget_ms}")


def is_locked(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's busy handler giving up on another writer's lock."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def take_turn(lock: threading.Lock, gate: WriteGate | None, patience: float) -> float:
    """This process's lock, then the gate, both within one `patience`; the seconds of
    it left. StoreUnavailable (stayed_locked) when it runs out.

    Waiting for the lock counts: a writer stalled at the gate (or in its
    transaction) makes the threads behind it give up with it, not one patience
    after another, so no HTTP thread waits much past PATIENCE for its 503."""
    deadline = time.monotonic() + patience
    if not lock.acquire(timeout=patience):
        raise stayed_locked()
    try:
        if gate is not None:
            gate.acquire(patience=max(deadline - time.monotonic(), 0.0))
    except BaseException as exc:
        lock.release()
        if isinstance(exc, GateTimeout):
            raise stayed_locked() from exc
        raise
    return deadline - time.monotonic()


# /health's patience for the turn to write: well under a writer's (PATIENCE, 10 s), so
# a load balancer's probe is answered within about a second, and well over the
# milliseconds Spool's own writers hold the turn.
HEALTH_PATIENCE = 1.0


def held_by_another() -> StoreUnavailable:
    """/health's answer when the turn to write did not come within HEALTH_PATIENCE."""
    return StoreUnavailable(
        "the SQLite database stayed locked: another connection has held its write lock "
        f"for over {HEALTH_PATIENCE:g} s (a transaction left open, a writer stopped), so "
        f"enqueues wait {sqlite_gate.PATIENCE:g} s and fail until it is let go",
        retry_after=1,
    )


def probe_turn(db: sqlite3.Connection, lock: threading.Lock, gate: WriteGate | None) -> None:
    """Take the turn to write and let it go, writing nothing (BEGIN IMMEDIATE, then
    ROLLBACK), within HEALTH_PATIENCE: StoreUnavailable (held_by_another) when a
    writer in this process, another Spool process or another program (a `BEGIN
    IMMEDIATE` left open in a `sqlite3` shell) keeps it. /health answered 200 while
    every enqueue waited its 10 s for such a lock and then failed."""
    try:
        left = take_turn(lock, gate, HEALTH_PATIENCE)
    except StoreUnavailable as exc:
        raise held_by_another() from exc
    try:
        try:
            begin_immediate(db, left)  # left is at most HEALTH_PATIENCE: always shortened
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                raise held_by_another() from exc
            unavailable = cannot_write(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        db.execute("ROLLBACK")
    finally:
        let_go(lock, gate)


def let_go(lock: threading.Lock, gate: WriteGate | None) -> None:
    try:
        if gate is not None:
            gate.release()
    finally:
        lock.release()


@contextlib.contextmanager
def write_turn(lock: threading.Lock, gate: WriteGate | None, patience: float) -> Iterator[None]:
    """The turn to write with no transaction in it: what a checkpoint that starts the
    WAL again holds, so that Spool's writers wait their turn behind it at the gate
    rather than SQLite's busy handler waiting, in steps of milliseconds, for a gap
    between writers that lasts microseconds (sqlite_checkpoint.py)."""
    take_turn(lock, gate, patience)
    try:
        yield
    finally:
        let_go(lock, gate)
