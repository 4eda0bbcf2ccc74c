"""Take turns between callers in the HTTP pool's queue of waiting requests.

waitress's pool threads take queued requests first come, first served. One caller
that sends 200 slow requests at once (a page of 1,000 jobs each) then makes every
other caller's request wait behind all of them: with 16 threads, a GET /jobs?limit=1
from another tenant waited 11 s (docs/benchmarks.md, "HTTP server"). FairQueue
keeps one FIFO per caller and hands out the next request round robin across them,
so a caller waits for at most one turn of each other caller's, however many those
have queued. One caller alone sees the same order as before.

The caller is the tenant the request's X-API-Key names (`tenant_of`: under `spool
serve`, the key list already in memory, SPOOL_API_KEYS or the SSM parameter as last
read; never a store or network read on the loop thread), so a tenant's keys share
one lane: with a lane per key, a tenant holding two keys had two turns to another
tenant's one, and twice the cap. A key no tenant owns (a wrong one, or any key
while no key list has been read yet) is a caller of its own, by a digest of the
header as carried, a list of one key repeated (`k, k`, which the app reads as
k) taken as that key; no raw key is kept. Requests without a key share one lane. It
is a deque for waitress's ThreadedTaskDispatcher: `append`, `popleft`, `len`;
every call is made under the dispatcher's lock.

Turns alone still let a flood hold every thread: another caller's request then
waits for one of the flood's slow requests to end (0.3 to 1.1 s behind 200 pages
of 1,000 jobs on 16 threads). So a lane may also run at most `cap` requests at
once (`threads - reserve_for(threads)`; SPOOL_HTTP_RESERVE_THREADS sets the
reserve): the pool's handler takes only from lanes
below it (`take`, `ready`), and a lane's finished request (`done`) makes it
eligible again. `popleft`, `len` and `bool` ignore the cap: they are what a
shutdown's cancel uses, and it must reach every waiting request.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.config import Settings

# The lane of requests that carry no X-API-Key (the others' are never empty).
ANONYMOUS = b""
# Per process, so a digest held in memory says nothing about the key outside it.
_SALT = os.urandom(16)
# A lane names a tenant (b"t:acme") or, for a key no tenant owns, the key's digest.
_TENANT, _KEY = b"t:", b"k:"
RESERVE_THREADS = "SPOOL_HTTP_RESERVE_THREADS"

# The tenant owning an X-API-Key value, or None (wrong key, or no key list in memory).
TenantOf = Callable[[str], "str | None"]


def lane_of(channel: Any, tenant_of: TenantOf | None = None) -> bytes:
    """Who sent the request a queued channel is to serve next: the tenant its
    X-API-Key header (waitress's header name) names, else a digest of that header
    as carried, or ANONYMOUS."""
    requests = getattr(channel, "requests", None)
    if not requests:
        return ANONYMOUS
    headers = getattr(requests[0], "headers", None) or {}
    value = headers.get("X_API_KEY")
    if not value:
        return ANONYMOUS
    text = str(value)
    if "," in text:
        # The app reads `k, k` (the header sent twice: waitress joins the lines with
        # ", ") and `k,k` as the one key k (app.py _keys): one lane for every such
        # spelling, or a caller spelling its key N ways got N turns and N caps.
        keys = {part.strip() for part in text.split(",")}
        keys.discard("")
        if not keys:
            return ANONYMOUS
        text = ",".join(sorted(keys))
    if tenant_of is not None and "," not in text:
        tenant = tenant_of(text)
        if tenant is not None:
            return _TENANT + tenant.encode("utf-8", "replace")
    # waitress decoded the header's bytes as latin-1: this gives them back as sent.
    raw = text.encode("latin-1", "replace")
    return _KEY + hashlib.blake2b(raw, digest_size=16, key=_SALT).digest()


def key_tenants(settings: Settings) -> TenantOf:
    """`spool serve`'s tenant_of: the tenant a key names in the key list this process
    holds now (SPOOL_API_KEYS, or the SSM parameter as last read), never reading SSM
    on the loop thread; None for a wrong key or before the list was first read.
    Answers are kept per key digest for the list they came from (a rotation starts
    over), at most MEMO_KEYS of them: one match costs a SHA-256 and a compare per key."""
    from chalicelib.api import key_source

    memo: dict[bytes, str | None] = {}
    seen: list[object] = [None]

    def tenant_of(key: str) -> str | None:
        keys = key_source.source().cached_keyring(settings)
        if keys is None:
            return None
        if keys is not seen[0] or len(memo) >= MEMO_KEYS:
            memo.clear()
            seen[0] = keys
        digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16, key=_SALT)
        mark = digest.digest()
        if mark not in memo:
            memo[mark] = keys.match(key)
        return memo[mark]

    return tenant_of


MEMO_KEYS = 4096


def reserve_for(threads: int, reserve: int | None = None) -> int:
    """Threads no one lane may hold, so another caller's request starts at once.

    `reserve` (SPOOL_HTTP_RESERVE_THREADS) when set; else one of a small pool (up to
    4: one is already a quarter of it), two of a larger one (16 by default: two
    other callers start at once, a lone flood keeps 14). None of a single thread,
    which must serve everything. A reserve that leaves a caller no thread is a
    ValueError naming the setting."""
    if threads <= 1:
        return 0
    if reserve is None:
        return 1 if threads <= 4 else 2
    if reserve >= threads:
        raise ValueError(
            f"{RESERVE_THREADS} is {reserve}, which leaves none of the {threads} threads "
            f"to a caller: make it at most {threads - 1}, or raise --threads"
        )
    return reserve


class FairQueue:
    """A FIFO per lane, popped round robin: the lane served last goes to the back."""

    def __init__(self, cap: int | None = None, tenant_of: TenantOf | None = None) -> None:
        self._lanes: collections.OrderedDict[bytes, collections.deque[Any]] = (
            collections.OrderedDict()
        )
        self._size = 0
        # At most this many running per lane (None: no cap); lane -> running now.
        self.cap = cap
        self._running: dict[bytes, int] = {}
        self.tenant_of = tenant_of

    def append(self, task: Any) -> None:
        lane = lane_of(task, self.tenant_of)
        waiting = self._lanes.get(lane)
        if waiting is None:
            waiting = self._lanes[lane] = collections.deque()
        waiting.append(task)
        self._size += 1

    def popleft(self) -> Any:
        """The head of the first lane, cap or not; that lane then waits behind the
        others. IndexError when empty, as a deque's."""
        if not self._lanes:
            raise IndexError("pop from an empty FairQueue")
        return self._pop(next(iter(self._lanes)))

    def _eligible(self) -> bytes | None:
        """The first lane in turn that is below the cap, or None."""
        for lane in self._lanes:
            if self.cap is None or self._running.get(lane, 0) < self.cap:
                return lane
        return None

    def ready(self) -> bool:
        """Whether `take` has a request to give: a waiting one in a lane below the cap."""
        return self._eligible() is not None

    def take(self) -> tuple[bytes, Any]:
        """The next request a pool thread is to run, with its lane, counted as
        running until `done(lane)`. IndexError when none is ready."""
        lane = self._eligible()
        if lane is None:
            raise IndexError("no lane below the cap has a request waiting")
        task = self._pop(lane)
        self._running[lane] = self._running.get(lane, 0) + 1
        return lane, task

    def done(self, lane: bytes) -> None:
        """A request `take` gave has ended: its lane may run another."""
        left = self._running.get(lane, 0) - 1
        if left > 0:
            self._running[lane] = left
        else:
            self._running.pop(lane, None)

    def running(self, lane: bytes) -> int:
        """How many of a lane's requests pool threads are running now."""
        return self._running.get(lane, 0)

    def _pop(self, lane: bytes) -> Any:
        waiting = self._lanes[lane]
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
