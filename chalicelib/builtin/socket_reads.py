"""A socket reader whose every wait is re-armed from a deadline, for the built-ins
that talk to other servers (http_request, send_email).

Python's protocol clients (http.client, smtplib) read with the socket's timeout per
recv, so a peer sending a byte every second holds a call with a 2 s timeout for as
long as it likes; through this reader no recv outlasts what `wait` allows.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class ReadLimitExceeded(OSError):
    """The peer sent more than the reader was allowed to take (DeadlineReader.limit)."""


class DeadlineReader(io.RawIOBase):
    """Reads `sock`, each recv allowed `wait()` seconds (which raises when none are
    left); `ended` says the peer closed (a read found nothing more). After
    `limit(n)`, reading past n more bytes raises ReadLimitExceeded: a deadline bounds
    time, not memory, and a peer on loopback sends gigabytes within it."""

    def __init__(self, sock: socket.socket, wait: Callable[[], float]) -> None:
        super().__init__()
        self._sock = sock
        # Read through a socket file, as http.client's own reader does: it holds the
        # descriptor open when the connection closes the socket early (an HTTP/1.0 or
        # `Connection: close` answer is read after HTTPConnection.close()); reading
        # the bare socket then failed with EBADF whenever the body was not buffered yet.
        self._raw = sock.makefile("rb", buffering=0)
        self._wait = wait
        self.ended = False
        self._left: int | None = None
        self._what = ""

    def limit(self, size: int, what: str) -> None:
        """Allow `size` more bytes, named `what` in the error past them."""
        self._left, self._what = size, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._left is not None and self._left <= 0:
            raise ReadLimitExceeded(f"{self._what} is longer than the limit")
        self._sock.settimeout(self._wait())
        got = self._raw.readinto(buffer) or 0
        if self._left is not None:
            self._left -= got
        if not got and len(memoryview(buffer)):
            self.ended = True
        return got

    def close(self) -> None:
        self._raw.close()
        super().close()
