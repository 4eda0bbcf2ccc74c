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

Only what this process created goes: the database file must not have existed
when the command began (a pre-existing store is never touched), and once the
command has really started (`started()`: the server answers, the worker runs
jobs) nothing is removed whatever happens later, as jobs may be stored there.
Folders go only when they were made for this store and are empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil

# What a SQLiteStore makes beside its file: SQLite's journals, the writer gate's
# lock files (storage/sqlite_gate.py) and the wake-up sockets' folder (notify.py).
COMPANIONS = ("-wal", "-shm", "-journal", ".writer", ".waiting")
WAKE_FOLDER = ".wake"


class FreshStore:
    """The SQLite file a command is about to create (None: it exists, or is no file)."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path is not None else None
        self.folders = _missing_folders(self.path) if self.path is not None else []
        self.kept = self.path is None

    def started(self) -> None:
        """The command is under way: from here its store is kept, whatever follows."""
        self.kept = True

    def remove(self) -> None:
        """Remove the store this start created, its companions and the empty folders made
        for it; nothing if the command had started or the file existed before."""
        if self.kept or self.path is None:
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
    """Watch the store at `path` (a SQLite file not yet there, or None) for this command."""
    global _current
    _current = FreshStore(path)
    return _current


def started() -> None:
    """Mark the running command's store as kept (see FreshStore.started)."""
    if _current is not None:
        _current.started()
