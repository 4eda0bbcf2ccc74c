"""Take turns between callers in the HTTP pool's queue of waiting requests.

waitress's pool threads take queued requests first come, first served. One caller
that sends 200 slow requests at once (a page of 1,000 jobs each) then makes every
other caller's request wait behind all of them: with 16 threads, a GET /jobs?limit=1
from another tenant waited 11 s (docs/benchmarks.md, "HTTP server"). FairQueue
keeps one FIFO per caller and hands out the next request round robin across them,
so a caller waits for at most one turn of each other caller's, however many those
have queued. One caller alone sees the same order as before.

The caller is the X-API-Key header as the request carries it, digested: the key is
not resolved to a tenant here (that costs a store read on the loop thread, and a
wrong key is a caller of its own), and no raw key is kept. Requests without a key
share one lane. It is a deque for waitress's ThreadedTaskDispatcher: `append`,
`popleft`, `len`; every call is made under the dispatcher's lock.
"""

from __future__ import annotations

import collections
import hashlib
import os
from typing import Any

# The lane of requests that carry no X-API-Key (digests are never empty).
ANONYMOUS = b""
# Per process, so a digest held in memory says nothing about the key outside it.
_SALT = os.urandom(16)


def lane_of(channel: Any) -> bytes:
    """Who sent the request a queued channel is to serve next: a digest of its
    X-API-Key header (waitress's header name), or ANONYMOUS."""
    requests = getattr(channel, "requests", None)
    if not requests:
        return ANONYMOUS
    headers = getattr(requests[0], "headers", None) or {}
    value = headers.get("X_API_KEY")
    if not value:
        return ANONYMOUS
    # waitress decoded the header's bytes as latin-1: this gives them back as sent.
    raw = str(value).encode("latin-1", "replace")
    return hashlib.blake2b(raw, digest_size=16, key=_SALT).digest()


class FairQueue:
    """A FIFO per lane, popped round robin: the lane served last goes to the back."""

    def __init__(self) -> None:
        self._lanes: collections.OrderedDict[bytes, collections.deque[Any]] = (
            collections.OrderedDict()
        )
        self._size = 0

    def append(self, task: Any) -> None:
        lane = lane_of(task)
        waiting = self._lanes.get(lane)
        if waiting is None:
            waiting = self._lanes[lane] = collections.deque()
        waiting.append(task)
        self._size += 1

    def popleft(self) -> Any:
        """The head of the first lane; that lane then waits behind the others.
        IndexError when empty, as a deque's."""
        if not self._lanes:
            raise IndexError("pop from an empty FairQueue")
        lane, waiting = next(iter(self._lanes.items()))
        task = waiting.popleft()
        self._size -= 1
        if waiting:
            self._lanes.move_to_end(lane)
        else:
            del self._lanes[lane]
        return task

    def lanes(self) -> int:
        """How many callers have requests waiting."""
        return len(self._lanes)

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0
