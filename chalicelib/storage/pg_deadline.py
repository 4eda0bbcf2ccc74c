"""Cut a Postgres call that gets no answer in time.

The server's `statement_timeout` ends a statement that runs or waits for a lock too
long, but only a server that still answers can send that error. A server that is
up but frozen (stopped, swapping, a pooler whose backend stalled) keeps the socket
open and its kernel acknowledges every byte, so neither keepalives nor
`tcp_user_timeout` ever fire, and libpq waits on the socket for as long as it
stays open: a worker's claim hung for good, saying nothing, and SIGTERM could not
stop it. Here one thread per process shuts such a socket down once the call's
deadline has passed; libpq then sees the connection end, psycopg raises, the
store answers "unavailable" and the pool drops the connection.

The thread, started by the first call, looks once a second (a deadline is met to
within that second). A call's own cost is a lock and a dict entry: it never wakes
the thread, so the hot path pays no hand-over of the GIL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import suppress

from chalicelib import logs

TICK = 1.0  # seconds between the watcher's looks


class Watch:
    """One call in flight: its deadline, and whether the watcher cut it.

    The context manager itself (a class, not a generator: about 1 us a call against
    3.5 for @contextmanager, on every Postgres call)."""

    __slots__ = ("conn", "cut", "deadline")

    def __init__(self, conn: object, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.cut = False

    def __enter__(self) -> Watch:
        global _thread
        key = id(self)
        with _lock:
            _watches[key] = self
            if _thread is None or not _thread.is_alive():
                # The process's, not the invocation of its first call (chalicelib/logs.py).
                _thread = logs.outside_thread(_watch_loop, name="spool-pg-deadline")
                _thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:  # after this no cut can reach a connection handed back to the pool
            del _watches[id(self)]


_lock = threading.Lock()
_watches: dict[int, Watch] = {}
_thread: threading.Thread | None = None


def watch(conn: object, seconds: float) -> Watch:
    """Run the body with `conn`'s socket shut down if it is still inside after `seconds`.

    `watch.cut` tells the caller afterwards that the error it met was this cut, so it
    does not retry a call that already took the whole deadline."""
    return Watch(conn, time.monotonic() + seconds)


# The watcher's pause: an Event's wait, not time.sleep, which a test may replace
# process-wide (a watcher calling the replacement spun, and filled its record).
_never = threading.Event()


def _watch_loop() -> None:
    while True:
        _never.wait(TICK)
        with _lock:
            now = time.monotonic()
            for entry in _watches.values():
                if not entry.cut and entry.deadline <= now:
                    entry.cut = True
                    _shut_down(entry.conn)


def _shut_down(conn: object) -> None:
    """Shut the connection's socket down for both directions: the thread waiting on it
    wakes at once to an ended connection. A duplicate descriptor is shut and closed,
    never the connection's own, which stays libpq's to close."""
    pgconn = getattr(conn, "pgconn", None)
    with suppress(Exception):  # already closed, or no socket: nothing waits on it
        fd = pgconn.socket  # type: ignore[union-attr]
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()
