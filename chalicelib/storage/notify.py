"""Wake-ups for idle workers, so they need no fixed-interval polling.

LocalNotifier serves one process (memory store, tests). SocketDirNotifier
serves every process sharing a SQLite file: each waiting worker binds a Unix
datagram socket in a directory beside the database, and whoever adds work
sends one byte to each socket there. A lost datagram only delays a job until
the worker's fallback timeout, so no correctness rests on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Iterator

from chalicelib.fdwait import readable
from chalicelib.storage.files import PRIVATE_DIR, private_dirs

log = logging.getLogger("spool.notify")

# A Unix socket's path fits in sun_path: 108 bytes on Linux, 104 on macOS and the BSDs,
# the last a NUL. A SQLite file in a deep folder gives a longer one (<db>.wake/<pid>-
# <hex>.sock): bind and sendto refused it ("AF_UNIX path too long"), which ended
# `spool serve`'s built-in worker at its start and silenced every wake-up.
SUN_PATH = 108 if sys.platform.startswith("linux") else 104
# The longest name a waiter's socket takes in the folder (a 7-digit pid).
LONGEST_NAME = len("1234567-0123abcd.sock")
# On Linux a folder is reached through a descriptor of it: /proc/self/fd/N/name, short
# whatever the folder's own path.
PROC_FD = "/proc/self/fd"


def fits(path: str) -> bool:
    """Whether `path` can be a Unix socket's address."""
    return len(os.fsencode(path)) < SUN_PATH


class LocalNotifier:
    """In-process wake-ups that are never lost between two waits.

    Each waiting thread remembers the last notification it saw, so a
    notification sent while that thread was busy (between two `wait` calls)
    makes its next `wait` return at once. The first `wait` in a thread
    subscribes it: only later notifications count. The lock is reentrant so
    a signal handler that calls `interrupt` cannot deadlock the thread it
    interrupted.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._generation = 0
        self._seen = threading.local()

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def interrupt(self) -> None:
        """Wake this process's waiters (used by Worker.stop)."""
        self.notify()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            seen: int | None = getattr(self._seen, "generation", None)
            if seen is None:
                seen = self._generation
            start = seen
            self._cond.wait_for(lambda: self._generation != start, timeout=max(0.0, timeout))
            self._seen.generation = self._generation
            return self._generation != seen

    def close(self) -> None:
        self.notify()


class SocketDirNotifier:
    """Cross-process wake-ups through Unix datagram sockets in one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        private_dirs(directory)  # only this user's processes may wake (or list) workers
        self._sock: socket.socket | None = None
        self._path: str | None = None  # the socket's file, to remove at close
        self._address: str | None = None  # what reaches it (a short alias, if need be)
        self._dir_fd = -1  # kept open while a short alias names the folder
        self._pair: socket.socket | None = None  # interrupts, when no address fits
        self._direct = fits(os.path.join(directory, "x" * LONGEST_NAME))
        self._lock = threading.Lock()
        self._listing: list[str] = []
        self._listing_mtime = -1.0

    def _peers(self) -> list[str]:
        # Re-list the directory only when it changed: a stat is far cheaper than listdir.
        try:
            mtime = os.stat(self.directory).st_mtime
        except FileNotFoundError:
            return []
        if mtime != self._listing_mtime:
            self._listing = [
                os.path.join(self.directory, n)
                for n in os.listdir(self.directory)
                if n.endswith(".sock")
            ]
            self._listing_mtime = mtime
        return self._listing

    @contextlib.contextmanager
    def _folder(self) -> Iterator[str | None]:
        """A short name of the folder while in the block, opened anew each time (the
        folder may have been replaced); None when it has none (no /proc): wake-ups
        cannot reach it."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            yield None
            return
        try:
            alias = f"{PROC_FD}/{fd}"
            yield alias if os.path.isdir(alias) else None
        finally:
            os.close(fd)

    def notify(self) -> None:
        peers = self._peers()
        if not peers:
            return
        if self._direct:
            self._send(peers, None)
            return
        with self._folder() as folder:
            if folder is not None:
                self._send(peers, folder)

    def _send(self, peers: list[str], folder: str | None) -> None:
        """One byte to each peer, at its path or under `folder`'s short name."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            out.setblocking(False)
            for path in peers:
                try:
                    if folder is None:
                        out.sendto(b"!", path)
                    else:
                        out.sendto(b"!", os.path.join(folder, os.path.basename(path)))
                except (ConnectionRefusedError, FileNotFoundError):
                    # A worker that died without cleaning up: its socket is stale.
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                except (BlockingIOError, OSError):
                    pass  # the peer's buffer is full: it has wake-ups pending anyway

    def _ensure_socket(self) -> socket.socket:
        with self._lock:
            if self._sock is None:
                name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
                path = os.path.join(self.directory, name)
                address = path if self._direct else self._alias(name)
                if address is None:
                    self._sock, self._pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                    return self._sock
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(address)
                sock.setblocking(False)
                self._sock, self._path, self._address = sock, path, address
            return self._sock

    def _alias(self, name: str) -> str | None:
        """`name` in the folder through a descriptor kept open (Linux), else None: then
        this waiter wakes on its timeout alone, and says so once."""
        with contextlib.suppress(OSError):
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            alias = f"{PROC_FD}/{self._dir_fd}"
            if os.path.isdir(alias):
                return f"{alias}/{name}"
            os.close(self._dir_fd)
            self._dir_fd = -1
        log.warning(
            "the wake-up folder %s is too deep for a Unix socket's address (%d bytes at "
            "most): new jobs wait for the workers' next poll (about a second); a shorter "
            "path for the SQLite file avoids it",
            self.directory,
            SUN_PATH - 1,
        )
        return None

    def interrupt(self) -> None:
        """Wake only this process's waiter (used by Worker.stop; signal-safe: no lock)."""
        sock, address, pair = self._sock, self._address, self._pair
        with contextlib.suppress(OSError):
            if pair is not None:
                pair.send(b"!")
            elif sock is not None and address is not None:
                sock.sendto(b"!", address)

    def wait(self, timeout: float) -> bool:
        sock = self._ensure_socket()
        woke = bool(readable([sock.fileno()], timeout))  # any number: see chalicelib/fdwait.py
        if woke:
            with contextlib.suppress(BlockingIOError, OSError):
                while sock.recv(64):
                    pass
        elif self._unreachable():
            self._bind_again()
        return woke

    def _unreachable(self) -> bool:
        """Whether this waiter's socket file is gone from the folder (removed by hand, or
        by a cleaner of old files): no wake-up reaches it again, and it woke only on its
        fallback timeout, until restarted, without a word. One stat, on a wait that
        ended with no wake-up only."""
        path = self._path
        return path is not None and not os.path.lexists(path)

    def _bind_again(self) -> None:
        """Make the folder again and bind a new socket in it, now: a wake-up sent before
        the next wait reaches it. Not its
        parents: the database's own folder gone is the store's to report (an empty
        folder where it was would say otherwise); the waiter keeps its fallback
        timeout meanwhile, and looks again after the next one."""
        try:
            os.mkdir(self.directory, PRIVATE_DIR)
        except FileExistsError:
            pass  # another process made it again first
        except OSError:
            return
        log.warning(
            "the wake-up folder %s, or this worker's socket in it, was removed while Spool "
            "ran; made it again (only this user's processes may wake workers)",
            self.directory,
        )
        self.close()
        try:
            self._ensure_socket()
        except OSError as exc:  # a file where the folder was: wait must not raise
            log.warning("no wake-ups in %s (%s): waits end on their timeout", self.directory, exc)
            with self._lock:
                self._sock, self._pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                with contextlib.suppress(OSError):
                    if self._path:
                        os.unlink(self._path)
                self._sock = None
                self._path = self._address = None
            if self._pair is not None:
                self._pair.close()
                self._pair = None
            if self._dir_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._dir_fd)
                self._dir_fd = -1
