"""Wake-ups for idle workers, so they need no fixed-interval polling.

LocalNotifier serves one process (memory store, tests). SocketDirNotifier
serves every process sharing a SQLite file: each waiting worker binds a Unix
datagram socket in a directory beside the database, and whoever adds work
sends one byte to each socket there. A lost datagram only delays a job until
the worker's fallback timeout, so no correctness rests on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading

from chalicelib.fdwait import readable
from chalicelib.storage.files import private_dirs


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
        self._path: str | None = None
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

    def notify(self) -> None:
        peers = self._peers()
        if not peers:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            out.setblocking(False)
            for path in peers:
                try:
                    out.sendto(b"!", path)
                except (ConnectionRefusedError, FileNotFoundError):
                    # A worker that died without cleaning up: its socket is stale.
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                except (BlockingIOError, OSError):
                    pass  # the peer's buffer is full: it has wake-ups pending anyway

    def _ensure_socket(self) -> socket.socket:
        with self._lock:
            if self._sock is None:
                path = os.path.join(self.directory, f"{os.getpid()}-{secrets.token_hex(4)}.sock")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(path)
                sock.setblocking(False)
                self._sock, self._path = sock, path
            return self._sock

    def interrupt(self) -> None:
        """Wake only this process's waiter (used by Worker.stop; signal-safe: no lock)."""
        sock, path = self._sock, self._path
        if sock is None or path is None:
            return
        with contextlib.suppress(OSError):
            sock.sendto(b"!", path)

    def wait(self, timeout: float) -> bool:
        sock = self._ensure_socket()
        woke = bool(readable([sock.fileno()], timeout))  # any number: see chalicelib/fdwait.py
        if woke:
            with contextlib.suppress(BlockingIOError, OSError):
                while sock.recv(64):
                    pass
        return woke

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                with contextlib.suppress(OSError):
                    if self._path:
                        os.unlink(self._path)
                self._sock = None
                self._path = None
