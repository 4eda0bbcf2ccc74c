"""A socket reader with a deadline, for `chalice local`'s request handler.

http.server reads a request from a file made of the socket with no timeout: a body
shorter than its Content-Length, a head sent a byte at a time or a keep-alive
connection left idle held one of `chalice local`'s threads (and its socket) until
the client went, where `spool serve` cuts such a client off (local/http_guard.py).
A socket timeout alone bounds each wait, not the request: a byte every few seconds
renews it. DeadlineReader bounds them all together: every read waits at most until
the deadline last set with `expect`, whatever arrived before, and past it raises
TimeoutError (with `expired` set) for the handler to answer 408 and end.

Writes are not read through here: between reads the socket's timeout is the send
timeout, so an answer the client does not take is given up too.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from typing import Any


class DeadlineReader(io.RawIOBase):
    """The raw stream under the handler's rfile (a BufferedReader on this)."""

    def __init__(
        self,
        sock: socket.socket,
        send_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._sock = sock
        self._send_timeout = send_timeout
        self._clock = clock
        self._deadline = clock()
        self._seconds = 0.0
        self.expired = False
        sock.settimeout(send_timeout)

    def expect(self, seconds: float) -> None:
        """Reads from now on must be done within `seconds`."""
        self._seconds = seconds
        self._deadline = self._clock() + seconds
        self.expired = False

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - self._clock()
        if left <= 0:
            raise self._expire()
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._expire() from None
        finally:
            if self._sock.fileno() != -1:
                self._sock.settimeout(self._send_timeout)

    def _expire(self) -> TimeoutError:
        self.expired = True
        return TimeoutError(f"nothing more arrived within {self._seconds:g} seconds")
