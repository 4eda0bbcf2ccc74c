"""What a refused SQLite store URL leaves behind: nothing.

Opening a store makes Spool's own companions beside the file before SQLite first
reads it: the wake-up sockets' folder (`<db>.wake`, notify.py) and, for a write, the
writer gate's lock files (`<db>.writer`, `<db>.waiting`, sqlite_gate.py). A URL
naming a text file or a directory was refused with a clear line, and the
companions stayed for the user to find and delete.

They are removed only when no store can be living at the path (it is a directory,
or a file whose first bytes are not SQLite's header) and only those this open made:
a refusal of a real store (a lock held too long, say) keeps them, since another
process may have made them in the same instant and be using them.
"""

from __future__ import annotations

import contextlib
import os

COMPANIONS = (".wake", ".writer", ".waiting")
SQLITE_HEADER = b"SQLite format 3\x00"


def present(path: str) -> set[str]:
    """The companions of the store at `path` that exist now."""
    return {path + suffix for suffix in COMPANIONS if os.path.lexists(path + suffix)}


def no_store_at(path: str) -> bool:
    """True when no SQLite store can be at `path`: a directory, or a file that is not
    empty and does not start with SQLite's header (an empty file is a new store)."""
    if os.path.isdir(path):
        return True
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:
        return False
    return head != b"" and head != SQLITE_HEADER


def remove_made(path: str, before: set[str]) -> None:
    """Remove the companions made since `before` was taken, when no store is at `path`.
    The wake folder goes only if empty (a socket in it is some process's)."""
    if not no_store_at(path):
        return
    for made in present(path) - before:
        with contextlib.suppress(OSError):  # gone already, or not empty: keep it
            if os.path.isdir(made) and not os.path.islink(made):
                os.rmdir(made)
            else:
                os.unlink(made)
