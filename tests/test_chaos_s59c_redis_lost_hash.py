"""A job's hash gone while its index entries stay (s59 chaos run).

An allkeys-* maxmemory-policy evicts single keys, not whole jobs (and an operator's
DEL does the same): on a private redis-server with allkeys-lru at its limit, 261
keys were evicted, job hashes among them. The claim script then met a due entry
whose hash was gone and raised ("attempt to perform arithmetic on a nil value")
after its reap and promotion had written: every later claim raised the same, so
no job of the store ran again. The reap (a lease in L) and the promotion (a delayed
job in S) did the same. Now each drops the orphaned entry and goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job
from tests.redis_support import admin, private_server, with_prefix

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisStore]:
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        opened = from_url(with_prefix(server.url, "lost"))
        try:
            yield opened
        finally:
            opened.close()


def _lose(store: RedisStore, job_id: str) -> None:
    """Delete the job's hash only, as eviction does."""
    store.client.delete(store._p + "j:" + job_id)


def test_a_due_job_whose_hash_is_gone_does_not_stop_claims(store: RedisStore) -> None:
    clock = FakeClock(store.clock.now())
    jobs = [new_job(clock) for _ in range(3)]
    store.add(jobs)
    _lose(store, jobs[0].id)
    claimed = store.claim(10, 30)
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs[1:])
    assert store.claim(10, 30) == []
    assert store.claim(10, 30, queues=[jobs[0].queue]) == []


def test_a_due_job_lost_is_dropped_from_its_queues_list_too(store: RedisStore) -> None:
    clock = FakeClock(store.clock.now())
    lost, kept = new_job(clock), new_job(clock)
    store.add([lost, kept])
    _lose(store, lost.id)
    claimed = store.claim(10, 30, queues=[kept.queue])
    assert [j.id for j in claimed] == [kept.id]


def test_a_delayed_job_whose_hash_is_gone_does_not_stop_claims(store: RedisStore) -> None:
    clock = FakeClock(store.clock.now())
    later = new_job(clock, delay=0.05)
    now = new_job(clock)
    store.add([later, now])
    _lose(store, later.id)
    due_at = store.clock.now().timestamp() + 1.0
    claimed: list[str] = []
    while store.clock.now().timestamp() < due_at:  # the delayed one falls due meanwhile
        claimed += [j.id for j in store.claim(10, 30)]
    assert claimed == [now.id]


def test_a_running_job_whose_hash_is_gone_does_not_stop_the_reap(store: RedisStore) -> None:
    clock = FakeClock(store.clock.now())
    lost, other = new_job(clock), new_job(clock)
    store.add([lost, other])
    held = store.claim(10, 0.05)
    assert len(held) == 2
    _lose(store, lost.id)
    end = store.clock.now().timestamp() + 5.0
    again: list[str] = []
    while not again and store.clock.now().timestamp() < end:  # until the lease lapses
        again = [j.id for j in store.claim(10, 30)]
    assert again == [other.id]
    admin_ = admin(store.settings.url)
    try:
        assert admin_.zscore(store._p + "L", lost.id) is None
    finally:
        admin_.close()


def test_a_finished_job_whose_hash_is_gone_does_not_stop_purge(store: RedisStore) -> None:
    """`spool purge` is what the docs say to run on a full Redis: it raised on a
    finished job whose hash had been evicted, every time, and freed nothing."""
    from datetime import timedelta

    from chalicelib.models import Completion, JobState
    from tests.factories import token

    clock = FakeClock(store.clock.now())
    jobs = [new_job(clock) for _ in range(3)]
    store.add(jobs)
    claimed = store.claim(10, 30)
    done = [Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed]
    assert store.finish(done) == [True] * 3
    _lose(store, jobs[0].id)
    later = store.clock.now() + timedelta(days=1)
    store.purge(later)
    assert all(store.get(j.id) is None for j in jobs)
    assert store.purge(later) == 0  # nothing left behind to meet again


def test_a_webhook_delivery_whose_hash_is_gone_is_dropped(store: RedisStore) -> None:
    """A pending delivery's hash evicted while dp still listed it: the webhook claim
    made a new hash of three fields for it (HINCRBY, HSET) and handed that back."""
    from chalicelib.models import Completion, JobState
    from tests.factories import token

    clock = FakeClock(store.clock.now())
    jobs = [new_job(clock, callback_url="https://hooks.example.com/done") for _ in range(2)]
    store.add(jobs)
    claimed = store.claim(10, 30)
    store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    pending = store.client.zrange(store._p + "dp", 0, -1)
    assert len(pending) == 2
    store.client.delete(store._p + "d:" + pending[0].decode())
    deliveries = store.claim_webhooks(10, 30)
    assert [d.id for d in deliveries] == [pending[1].decode()]
    assert not store.client.exists(store._p + "d:" + pending[0].decode())
    assert store.client.zrange(store._p + "dp", 0, -1) == [pending[1]]
    assert store.webhook_counts().get("pending") == 1
