"""Wait for descriptors to become readable, whatever their number.

select.select() only takes descriptors below FD_SETSIZE (1024) and raises ValueError
for any other. `spool serve` raises its open-file limit to fit thousands of client
connections, so with a thousand clients connected, every socket it opens next (a
Postgres pool connection, the LISTEN connection, a SQLite wake-up socket) is numbered
past 1023: the pool's check took those for dead connections (503 while the database
was fine) and the wake-up waits raised. poll() has no such bound; Windows has no
poll(), and its select() takes any socket.
"""

from __future__ import annotations

import math
import select
from collections.abc import Sequence


def readable(fds: Sequence[int], timeout: float) -> list[int]:
    """The descriptors of `fds` that are readable (or hung up, or in error: a read
    would not block) within `timeout` seconds; [] when none is."""
    seconds = max(0.0, timeout)
    if not hasattr(select, "poll"):  # Windows
        ready, _, _ = select.select(list(fds), [], [], seconds)
        return list(ready)
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    # Milliseconds, rounded up: rounded down, a wait of under 1 ms would not wait at all.
    return [fd for fd, _ in poller.poll(math.ceil(seconds * 1000))]
