"""`spool serve --processes N`: a server process stopped by SIGTERM keeps its last counts.

Reproduced with `spool serve --processes 2` on SQLite: 60 status reads answered 200
(30 before a SIGTERM to one server process, 30 after, while the supervisor replaced
it) raised spool_cache_hits_total + spool_cache_misses_total by 50. Each process
writes its counts to its file once a second, on a daemon thread, and the supervisor
folds an exited process's file as it was left: a graceful stop lost every lookup
of its last second, so the counter Prometheus reads never counted them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.test_serve_multiproc import (
    PROCESSES,
    SPREAD,
    cache_counts,
    children_of,
    echo_done,
    servers,
    serving,
    statuses,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/spool.db"


@pytest.mark.timeout(120)
def test_lookups_answered_just_before_a_sigterm_stay_counted(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        job = echo_done(served.url)
        kids = servers(served)
        answers = statuses(served.url, job)  # a miss in each process, then hits
        assert {status for status, _, _ in answers} == {200}
        # At once, before either process's once-a-second write can catch up.
        for victim in kids:
            os.kill(victim, signal.SIGTERM)

        def replaced() -> bool:
            now = children_of(served.proc.pid)
            return len(now) == PROCESSES and not set(kids) & set(now)

        assert wait_for(replaced, timeout=30)
        counted = (float(SPREAD - PROCESSES), float(PROCESSES))
        # Every answer stays counted: the stopped processes' counts, folded, and none
        # from the new ones yet (wait_for retries while their first writes come in).
        assert wait_for(lambda: cache_counts(served.url) == counted), cache_counts(served.url)
