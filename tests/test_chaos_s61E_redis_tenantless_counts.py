"""Redis: a job whose hash lost its tenant or queue field keeps its counts true
(stop 61, helper E).

Was (redis-server; the hash edited by hand, as tests/test_chaos_s60l_redis_buried_counts
does): the claim that met the job buried it dead in place, and the listings never
showed it, yet its tenant's counts (`spool jobs`' and the dashboard's state counts,
and waiting_count, which the tenant's backlog cap reads) kept it queued, or running,
for good: the scripts moved only the counts they could name without the tenant, and
the purge that deleted it later did the same. Now a script that meets such a hash
finds its tenant by the listing set that holds it (ct:<tenant>, searched only for a
damaged hash), and moves its counts and its waiting entries as for any job: counted
dead once buried, counted nowhere once purged. The same for a hash that lost its queue
(before: its queue's counts, /metrics' queue depth among them, and its tenant's kept
it): found by the waiting or running set of its tenant's queues that holds it, and
kept in the hash's counted_queue (the record stays unreadable) so the purge names the
same counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.models import JobState
from chalicelib.storage.redis_store import RedisStore
from tests.backends import open_backend
from tests.factories import new_job
from tests.test_chaos_s60b_unreadable_rows import write

LEASE = 60.0


@pytest.fixture
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Any]:
    with open_backend("redis", clock, tmp_path, request) as opened:
        assert isinstance(opened, RedisStore)
        yield opened


@pytest.mark.parametrize("when", ["due", "delayed", "running"])
def test_a_tenantless_job_is_counted_dead_under_its_tenant_then_nowhere(
    store: Any, clock: FakeClock, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = store.add([new_job(clock, tenant="t1", delay=30 if when == "delayed" else 0)])[0].job
    other = store.add([new_job(clock, tenant="t2", delay=3600)])[0].job
    if when == "running":
        assert [j.id for j in store.claim(1, LEASE)] == [job.id]
    write("redis", store, job.id, "tenant", None)
    clock.advance(LEASE + 1)
    with caplog.at_level(logging.WARNING, logger="spool.redis"):
        assert store.claim(5, LEASE) == []
    assert "lacks its tenant or queue" not in caplog.text  # its names were all found
    dead = {("default", JobState.DEAD): 1}
    assert store.state_counts("t1") == dead
    assert store.waiting_count("t1") == 0
    assert store.state_counts() == {**dead, ("default", JobState.QUEUED): 1}
    assert store.state_counts("t2") == {("default", JobState.QUEUED): 1}
    assert store.queue_totals([], 10).counts == {**dead, ("default", JobState.QUEUED): 1}
    clock.advance(1)
    assert store.purge(clock.now()) == 1
    assert store.state_counts("t1") == {}
    assert store.state_counts() == {("default", JobState.QUEUED): 1}
    assert store.queue_totals([], 10).counts == {("default", JobState.QUEUED): 1}
    assert store.get(other.id, "t2").state == JobState.QUEUED


def test_a_job_with_neither_tenant_nor_created_at_is_still_buried(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing left to find its tenant by: buried as before, the WARNING names the key."""
    job = store.add([new_job(clock, tenant="t1")])[0].job
    write("redis", store, job.id, "tenant", None)
    write("redis", store, job.id, "created_at", None)
    with caplog.at_level(logging.WARNING, logger="spool.redis"):
        assert store.claim(5, LEASE) == []
    assert "lacks its tenant or queue" in caplog.text
    assert store.client.hget(store._p + "j:" + job.id, "state") == b"dead"


@pytest.mark.parametrize("when", ["due", "delayed", "running"])
def test_a_queueless_job_is_counted_dead_under_its_queue_then_nowhere(
    store: Any, clock: FakeClock, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its queue is found by the waiting or running set that holds it (among its
    tenant's queues) and kept aside, so the purge names the same counts."""
    job = store.add([new_job(clock, tenant="t1", queue="q1", delay=30 if when == "delayed" else 0)])
    job_id = job[0].job.id
    store.add([new_job(clock, tenant="t1", queue="q2", delay=3600)])
    if when == "running":
        assert [j.id for j in store.claim(1, LEASE)] == [job_id]
    write("redis", store, job_id, "queue", None)
    clock.advance(LEASE + 1)
    with caplog.at_level(logging.WARNING, logger="spool.redis"):
        assert store.claim(5, LEASE) == []
    assert "lacks its tenant or queue" not in caplog.text
    with pytest.raises(JobUnreadable, match=job_id):  # read as before: its queue is gone
        store.get(job_id)
    waiting = {("q2", JobState.QUEUED): 1}
    assert store.state_counts("t1") == {("q1", JobState.DEAD): 1, **waiting}
    assert store.queue_totals(["q1", "q2"], 10).counts == {("q1", JobState.DEAD): 1, **waiting}
    clock.advance(1)
    assert store.purge(clock.now()) == 1
    assert store.state_counts("t1") == waiting
    assert store.state_counts() == waiting
    assert store.queue_totals(["q1", "q2"], 10).counts == waiting
