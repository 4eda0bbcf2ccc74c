"""Redis: a job the claim script makes dead in place (its hash damaged by hand) leaves
its counts true and is purged in time; CANCEL and REDRIVE refuse a hash damaged after
the store's own read, before they write.

Was (reproduced with redis-server, spool serve and spool worker): a queued job whose
attempts was edited into "x" was buried dead by the next claim, yet /metrics, the
dashboard and `spool db status` counted it queued for good (its count was never moved)
and `spool purge` never removed it (it was not in the finished index); the same for a
job buried by the promotion of what fell due (priority edited) and by the reap (its
max_attempts edited, its lease expired: counted running for good). A job whose queue
field was deleted was taken for a deleted hash by the promotion and the reap: it stayed
queued (or running) and counted, never run, never buried. And a hand edit landing
between the store's read and the CANCEL or REDRIVE script let the script half-apply
(the job cancelled or queued, then a 500 or a failed script).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.models import Completion, JobState
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


def key(s: Any, job_id: str) -> str:
    return str(s._p + "j:" + job_id)


def stored_state(s: Any, job_id: str) -> str | None:
    raw = s.client.hget(key(s, job_id), "state")
    return None if raw is None else str(raw.decode())


def settled(s: Any, clock: FakeClock, job_id: str) -> None:
    """The job is dead, counted dead only, and `spool purge` deletes it."""
    assert stored_state(s, job_id) == "dead"
    assert s.state_counts() == {("default", JobState.DEAD): 1}
    assert s.state_counts("default") == {("default", JobState.DEAD): 1}
    assert s.queue_totals([], 10).counts == {("default", JobState.DEAD): 1}
    clock.advance(1)
    assert s.purge(clock.now()) == 1
    assert not s.client.exists(key(s, job_id))
    assert s.state_counts() == {}
    assert s.queue_totals([], 10).counts == {}


def test_a_job_the_lease_buries_is_counted_dead_and_purged(store: Any, clock: FakeClock) -> None:
    job = store.add([new_job(clock)])[0].job
    write("redis", store, job.id, "attempts", "x")
    assert store.claim(5, LEASE) == []
    settled(store, clock, job.id)


def test_a_job_the_promotion_buries_is_counted_dead_and_purged(
    store: Any, clock: FakeClock
) -> None:
    job = store.add([new_job(clock, delay=30)])[0].job
    write("redis", store, job.id, "priority", "x")
    clock.advance(31)
    assert store.claim(5, LEASE) == []
    settled(store, clock, job.id)


def test_a_job_the_reap_buries_is_counted_dead_and_purged(store: Any, clock: FakeClock) -> None:
    job = store.add([new_job(clock)])[0].job
    assert [j.id for j in store.claim(1, LEASE)] == [job.id]
    write("redis", store, job.id, "max_attempts", "x")
    clock.advance(LEASE + 1)
    assert store.claim(5, LEASE) == []
    settled(store, clock, job.id)


@pytest.mark.parametrize("when", ["due", "delayed", "running"])
def test_a_job_without_its_queue_is_buried_and_purged(
    store: Any, clock: FakeClock, when: str
) -> None:
    """The job is buried (not taken for a deleted hash, left queued or running for
    good) and purged; the totals over every queue (st) are true. Since stop 61 its
    queue is found by its sets, so its queue's counts are true as well
    (tests/test_chaos_s61E_redis_tenantless_counts.py)."""
    job = store.add([new_job(clock, delay=30 if when == "delayed" else 0)])[0].job
    if when == "running":
        assert [j.id for j in store.claim(1, LEASE)] == [job.id]
    write("redis", store, job.id, "queue", None)
    clock.advance(LEASE + 1)
    assert store.claim(5, LEASE) == []
    assert stored_state(store, job.id) == "dead"
    states = {k.decode(): int(v) for k, v in store.client.hgetall(store._p + "st").items()}
    assert {k: v for k, v in states.items() if v} == {"dead": 1}
    clock.advance(1)
    assert store.purge(clock.now()) == 1
    assert not store.client.exists(key(store, job.id))


def test_a_job_without_its_tenant_is_buried_and_purged(
    store: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    job = store.add([new_job(clock)])[0].job
    """Its queue's totals (/metrics) are true; its tenant is found by its listing set
    since stop 61 (tests/test_chaos_s61E_redis_tenantless_counts.py), so its tenant's
    counts are too; only a hash without created_at as well keeps its WARNING."""
    store.queue_totals([], 10)  # the scrape's summaries, kept from here on
    write("redis", store, job.id, "tenant", None)
    with caplog.at_level(logging.WARNING, logger="spool.redis"):
        assert store.claim(5, LEASE) == []
    assert f"its hash {key(store, job.id)} lacks its tenant or queue" not in caplog.text
    assert stored_state(store, job.id) == "dead"
    assert store.queue_totals([], 10).counts == {("default", JobState.DEAD): 1}
    assert store.state_counts() == {("default", JobState.DEAD): 1}
    clock.advance(1)
    assert store.purge(clock.now()) == 1
    assert not store.client.exists(key(store, job.id))
    assert store.queue_totals([], 10).counts == {}


def edited_after_the_read(
    store: Any, monkeypatch: pytest.MonkeyPatch, job_id: str, field: str, value: str | None
) -> None:
    """A hand edit landing between the store's own read and its script."""
    read: Callable[..., None] = store._readable_before_write

    def then_edit(ids: Sequence[str], tenant: str | None, states: Any) -> None:
        read(ids, tenant, states)
        write("redis", store, job_id, field, value)

    monkeypatch.setattr(store, "_readable_before_write", then_edit)


@pytest.mark.parametrize(("field", "value"), [("created_at", None), ("run_at", "soon")])
def test_cancel_refuses_a_damaged_hash_in_its_script(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, field: str, value: str | None
) -> None:
    """CANCEL reads nothing before its script (another tenant's record must never be
    fetched: test_attack_s46_cross_tenant_reads), so the script itself refuses."""
    job = store.add([new_job(clock)])[0].job
    write("redis", store, job.id, field, value)
    with pytest.raises(JobUnreadable, match=f"job {job.id}'s stored record cannot be read"):
        store.cancel(job.id)
    assert stored_state(store, job.id) == "queued"
    assert store.state_counts() == {("default", JobState.QUEUED): 1}
    monkeypatch.undo()
    write("redis", store, job.id, "created_at", str(int(job.created_at.timestamp() * 1e6)))
    write("redis", store, job.id, "run_at", str(int(job.run_at.timestamp() * 1e6)))
    assert [j.id for j in store.claim(5, LEASE)] == [job.id]  # still due: no half-write


def dead_job(s: Any, clock: FakeClock) -> str:
    job = s.add([new_job(clock)])[0].job
    [claimed] = s.claim(1, LEASE, ids=[job.id])
    [done] = s.finish([Completion(job.id, claimed.lease_token, JobState.DEAD, None, "boom")])
    assert done
    return str(job.id)


@pytest.mark.parametrize(("field", "value"), [("created_at", None), ("priority", "high")])
def test_redrive_refuses_a_hash_damaged_after_its_read(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, field: str, value: str | None
) -> None:
    good, bad = dead_job(store, clock), dead_job(store, clock)
    edited_after_the_read(store, monkeypatch, bad, field, value)
    with pytest.raises(JobUnreadable, match=f"job {bad}'s stored record cannot be read"):
        store.redrive([good, bad])
    assert stored_state(store, good) == "dead"  # refused whole, before any write
    assert stored_state(store, bad) == "dead"
    assert store.state_counts() == {("default", JobState.DEAD): 2}
    monkeypatch.undo()
    assert [j.id for j in store.redrive([good])] == [good]
    clock.advance(1)
    assert [j.id for j in store.claim(5, LEASE)] == [good]
