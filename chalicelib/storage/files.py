"""Files and folders only their owner may read: the SQLite store holds payloads
(headers, tokens, addresses), so nobody else on the machine should see it.

Modes are set with chmod after creation, so they do not depend on the umask
(mkdir and open only ever remove bits from the mode they are given). Folders
that already exist are left alone: a parent the user chose (their home, /tmp,
a shared volume) keeps its mode; only folders Spool creates are 0700. SQLite
creates the -wal and -shm files with the mode of the database file, so a 0600
database gives 0600 companions.
"""

from __future__ import annotations

import os

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dirs(folder: str) -> None:
    """Create `folder` and any missing parents, each 0700; existing ones are untouched."""
    missing: list[str] = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            continue  # another process made it a moment ago (and set its mode)
        os.chmod(path, PRIVATE_DIR)


def private_file(path: str) -> bool:
    """Create an empty 0600 file at `path` unless it exists; True when created here.

    An empty file is a valid new SQLite database, so SQLite takes it from here
    (and gives its -wal and -shm files the same mode).
    """
    private_dirs(os.path.dirname(os.path.abspath(path)))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True
