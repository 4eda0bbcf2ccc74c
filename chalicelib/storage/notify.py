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
import select
import socket
import threading


class LocalNotifier:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            seen = self._generation
            self._cond.wait_for(lambda: self._generation != seen, timeout=max(0.0, timeout))
            return self._generation != seen

    def close(self) -> None:
        self.notify()


class SocketDirNotifier:
    """Cross-process wake-ups through Unix datagram sockets in one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
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

    def wait(self, timeout: float) -> bool:
        sock = self._ensure_socket()
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
        woke = bool(ready)
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
