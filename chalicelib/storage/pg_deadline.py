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

A process that is stopping (a `spool worker` told SIGTERM or Ctrl-C) `hurry`s its
store's calls: each, those in flight too, gets a short deadline, and at it the
server is first asked to cancel the statement (Postgres rolls its transaction
back and the connection stays usable: nothing half-written), then, if the server
does not even take that, the socket is cut as above. Before, a claim waiting on an
admin's `LOCK TABLE jobs` held the stop for the whole statement_timeout, and the
read that asks whether the claim had committed for another one: 57 s.
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

    __slots__ = ("cancelled", "conn", "cut", "deadline", "expendable", "hurried", "owner", "sent")

    def __init__(
        self,
        conn: object,
        deadline: float,
        owner: object = None,
        hurried: bool = False,
        expendable: bool = False,
    ) -> None:
        self.conn = conn
        self.deadline = deadline
        self.owner = owner  # the store whose call this is (hurry shortens its own only)
        # A read or a claim: nothing a stopping process still needs, so hurry cancels
        # it at once rather than after its seconds.
        self.expendable = expendable
        # A call of a stopping process: at its deadline the server is asked to cancel
        # it before the socket is cut.
        self.hurried = hurried
        self.cut = False
        # Set once the server is asked to cancel the call (a hurried one's deadline);
        # `sent` is set once that request is sent (or failed).
        self.cancelled = False
        self.sent: threading.Event | None = None

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
        if self.sent is not None:
            # Nor a cancel: the connection goes back only once the request is sent, so
            # it reaches this call's session while it is idle, where Postgres ignores
            # it, never the next call's statement.
            self.sent.wait(CANCEL_GRACE + TICK)


_lock = threading.Lock()
_watches: dict[int, Watch] = {}
_thread: threading.Thread | None = None


def watch(
    conn: object,
    seconds: float,
    owner: object = None,
    hurried: bool = False,
    expendable: bool = False,
) -> Watch:
    """Run the body with `conn`'s socket shut down if it is still inside after `seconds`
    (hurried: the server asked to cancel it first, see hurry).

    `watch.cut` tells the caller afterwards that the error it met was this cut, so it
    does not retry a call that already took the whole deadline."""
    return Watch(conn, time.monotonic() + seconds, owner, hurried, expendable)


# Seconds the server has to take a cancel request before the socket is cut as well.
CANCEL_GRACE = 2.0


def hurry(owner: object, seconds: float) -> None:
    """Give every call of `owner` in flight at most `seconds` more (an expendable one,
    a read or a claim, none): at that deadline the server is asked to cancel it, and
    CANCEL_GRACE later, if it is still inside, its socket is cut. The caller gives its
    later calls the same short deadline (PostgresStore.hurry), so a stop waits for no
    store call longer than that."""
    now = time.monotonic()
    with _lock:
        for entry in _watches.values():
            if entry.owner is owner and not entry.hurried:
                entry.hurried = True
                entry.deadline = min(entry.deadline, now if entry.expendable else now + seconds)


# The watcher's pause: an Event's wait, not time.sleep, which a test may replace
# process-wide (a watcher calling the replacement spun, and filled its record).
_never = threading.Event()


def _watch_loop() -> None:
    while True:
        _never.wait(TICK)
        cancels: list[Watch] = []
        with _lock:
            now = time.monotonic()
            for entry in _watches.values():
                if entry.cut or entry.deadline > now:
                    continue
                if entry.hurried and not entry.cancelled:
                    entry.cancelled = True
                    entry.sent = threading.Event()
                    entry.deadline = now + CANCEL_GRACE
                    cancels.append(entry)
                else:
                    entry.cut = True
                    _shut_down(entry.conn)
        for entry in cancels:  # outside the lock: a cancel opens a connection to the server
            logs.outside_thread(_cancel, args=(entry,), name="spool-pg-cancel").start()


def _cancel(entry: Watch) -> None:
    """Ask the server to cancel the connection's statement; the cut follows if it
    does not (a frozen server takes no cancel either)."""
    try:
        with suppress(Exception):
            entry.conn.cancel_safe(timeout=CANCEL_GRACE)  # type: ignore[attr-defined]
    finally:
        assert entry.sent is not None
        entry.sent.set()


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
