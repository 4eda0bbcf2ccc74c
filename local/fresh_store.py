"""A start that fails leaves no SQLite store behind, unless the store was there before.

`spool serve` on a port already taken (or a --host not of this machine), and
`spool worker` whose --metrics-port was taken, refused to start only after the
store had been opened: a fresh `.spool/spool.db` (with its `.writer`, `.waiting`
and `.wake` companions and the folders made for it) was left in the folder, and
`spool top` there showed an empty store instead of saying there is none. The
checks of settings are made before the store is opened where they can be
(cli._check_before_creating_the_store); a bind, a store probe and the edge's
own settings need the runtime, so for those this module removes what the
failed start created instead.

Only what this process created, and nobody else uses, goes:

- The command creates the database file itself (O_EXCL, before the store opens
  it): a file that is there by then, made by another start in the same instant,
  is that start's, never touched. (It trusted the earlier look: two `spool serve`
  on one port, the refused one removed the store the other was serving.)
- At removal, under an exclusive lock on the file: it is still the file made
  here (same device and inode), no other connection has it open (leaving WAL
  mode needs the file to itself: SQLite refuses while another process holds
  it), and it holds no job. Then it is unlinked while the lock is held. Anything
  else keeps it. The one window left: a process that opens the path in the
  microseconds the lock is held waits on it, then holds a file no longer at the
  path (closing that would need every opener of the file to take part).
- Once the command has really started (`started()`: the server answers, the
  worker runs jobs) nothing is removed whatever happens later.

Folders go only when they were made for this store and are empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from chalicelib.storage.files import private_file

# What a SQLiteStore makes beside its file: SQLite's journals, the writer gate's
# lock files (storage/sqlite_gate.py) and the wake-up sockets' folder (notify.py).
COMPANIONS = ("-wal", "-shm", "-journal", ".writer", ".waiting")
WAKE_FOLDER = ".wake"

Identity = tuple[int, int]


class FreshStore:
    """The SQLite file a command creates (None: it exists, or is no file)."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path is not None else None
        self.folders = _missing_folders(self.path) if self.path is not None else []
        self.identity: Identity | None = None
        if self.path is not None and _create(self.path):
            self.identity = _identity(self.path)
        else:  # no file store, or one another process made since the command looked
            self.path = None
        self.kept = self.path is None

    def made_note(self) -> str | None:
        """For `spool worker`: the store it made, said once as it starts, or None.

        A worker started in another folder than `spool serve --no-worker` or `chalice
        local` (the README's second terminal) made that folder's `.spool/spool.db`,
        printed the same relative URL as the server's banner, and waited there for
        ever while the server's jobs stayed queued. The enqueuing side hears that no
        worker is live; this is the worker's own terminal being told. It is a note, not
        a refusal: `chalice local` makes its store at its first request, so a worker
        started first (the README's order) makes the right one."""
        if self.path is None:
            return None
        return (
            f"spool: note: there was no store at {self.path}, so this worker made a new, "
            "empty one (a `spool serve --no-worker` or `chalice local` in this folder that "
            "has stored nothing yet will use it too). One in another folder has its own "
            "store: start the worker in that folder, or give it that store's SPOOL_STORE_URL."
        )

    def started(self) -> None:
        """The command is under way: from here its store is kept, whatever follows."""
        self.kept = True

    def remove(self) -> None:
        """Remove the store this start created, its companions and the empty folders made
        for it; nothing if the command had started, or the store is another's too."""
        if self.kept or self.path is None:
            return
        with _alone(self.path, self.identity) as alone:
            if not alone:
                return
            for suffix in ("", *COMPANIONS):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
        shutil.rmtree(self.path + WAKE_FOLDER, ignore_errors=True)
        for folder in self.folders:  # innermost first
            try:
                os.rmdir(folder)
            except OSError:  # not empty (something else lives there now), or gone
                break


def _create(path: str) -> bool:
    """Make the empty database file (and its folders) as the store would; True when made
    here. A folder that cannot be written is the store's to report, as it did before."""
    try:
        return private_file(path)
    except OSError:
        return False


def _identity(path: str) -> Identity | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


@contextlib.contextmanager
def _alone(path: str, identity: Identity | None) -> Iterator[bool]:
    """True, with the file locked exclusively until the block ends, when `path` is still
    the file made here, no other connection has it open and it holds no job."""
    if identity is None or _identity(path) != identity:
        yield False
        return
    try:  # timeout 0: a lock another process holds is an answer, not a wait
        db = sqlite3.connect(f"{Path(path).as_uri()}?mode=rw", uri=True, timeout=0)
    except sqlite3.Error:
        yield False
        return
    db.isolation_level = None  # BEGIN below is ours
    try:
        try:
            (mode,) = db.execute("PRAGMA journal_mode=DELETE").fetchone()
            db.execute("BEGIN EXCLUSIVE")
            jobs = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
            held = jobs is not None and db.execute("SELECT 1 FROM jobs LIMIT 1").fetchone()
        except sqlite3.Error:  # "database is locked": another connection has it open
            yield False
            return
        yield str(mode).lower() == "delete" and not held and _identity(path) == identity
    finally:
        db.close()


def _missing_folders(path: str) -> list[str]:
    """The folders above `path` that do not exist yet, innermost first."""
    missing: list[str] = []
    current = os.path.dirname(path)
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing


# The guard of the command running in this process (one command per process).
_current: FreshStore | None = None


def guard(path: str | None) -> FreshStore:
    """Watch the store at `path` (a SQLite file not yet there, or None) for this command:
    the file is created here, now, so that whether it is this command's is certain."""
    global _current
    _current = FreshStore(path)
    return _current


def started() -> None:
    """Mark the running command's store as kept (see FreshStore.started)."""
    if _current is not None:
        _current.started()


def made_note() -> str | None:
    """The running command's FreshStore.made_note."""
    return _current.made_note() if _current is not None else None
