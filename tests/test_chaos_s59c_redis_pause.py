"""Reads under CLIENT PAUSE WRITE right after the server lost its scripts (s59 chaos run).

`spool serve` on a private redis-server that was restarted (its script cache empty),
then `CLIENT PAUSE 12000 WRITE` (what FAILOVER and maintenance do): GET /status/<id>
and GET /jobs waited their whole 5 s timeout and answered 503, though Redis serves
reads during a write pause and both scripts are flagged no-writes. redis-py's
Script met NOSCRIPT and sent SCRIPT LOAD, which the pause holds (it may
replicate). The store now sends the script with EVAL instead, which is not held.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import JobQuery
from chalicelib.storage.redis_store import from_url
from tests.factories import new_job
from tests.redis_support import admin, private_server, with_prefix

pytestmark = pytest.mark.timeout(60)


def test_reads_after_a_script_flush_are_served_during_a_write_pause(tmp_path: Path) -> None:
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "pause") + "&timeout=1")
        control = admin(server.url)
        try:
            clock = FakeClock(store.clock.now())
            job = new_job(clock)
            store.add([job])
            control.script_flush()  # as a restart or a failover leaves it
            control.client_pause(5000, all=False)  # WRITE: reads go on
            try:
                got = store.get(job.id, job.tenant)
                assert got is not None and got.id == job.id
                assert store.attempts(job.id, job.tenant) == []
                page = store.list_jobs(JobQuery(tenant=job.tenant))
                assert [j.id for j in page.jobs] == [job.id]
            finally:
                control.client_unpause()
            assert len(store.claim(10, 30)) == 1  # writes load their scripts as before
        finally:
            control.close()
            store.close()
