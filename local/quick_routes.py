"""Which of `spool serve`'s requests its loop thread answers itself.

local/inline_dispatch.py says why: the hand-over to a pool thread costs more
than a short request. A request qualifies when it is one of the hot, short
routes (enqueue, status, cancel, health), carries no long-poll (`?wait=`
holds its thread for seconds) and a body of at most QUICK_BODY_BYTES (a batch
of a few hundred jobs; a 10 MB batch would hold the loop for a tenth of a
second of parsing), and the store is embedded: a SQLite or memory store
answers in microseconds, where a network store's round trips are better
overlapped on the pool's threads than queued on one.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from local.inline_dispatch import QuickRequest

QUICK_BODY_BYTES = 64 * 1024
EMBEDDED_SCHEMES = ("sqlite", "memory")


def _quick(method: str, path: str, query: str, length: int) -> bool:
    # The app decodes the query (`%77ait=5` is a wait too), so look at it decoded.
    if length > QUICK_BODY_BYTES or "wait" in unquote_plus(query).lower():
        return False
    if method == "POST":
        return path == "/enqueue" or (path.startswith("/jobs/") and path.endswith("/cancel"))
    if method in ("GET", "HEAD"):
        return path.startswith("/status/") or path == "/health"
    return False


def quick_requests(store_url: str) -> QuickRequest | None:
    """The predicate for a server over this store, or None: every request on threads."""
    scheme = store_url.split(":", 1)[0].lower()
    return _quick if scheme in EMBEDDED_SCHEMES else None
