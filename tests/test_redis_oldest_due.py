"""Redis: the oldest due job per queue, read without a walk over the queues.

Queue names are the client's to choose, so a tenant can hold due jobs in any number
of queues. The scrape's read (oldest_due_named) and a tenant's oldest_due read the
queues-by-oldest-waiting-job sorted sets (qd, qdt:<tenant>) the scripts keep, so
their work is flat however many queues hold due jobs: counted as the commands a
private server ran (INFO commandstats, scripts' own calls included), never timed.
The sets are checked against the jobs themselves through every transition that
moves a job into or out of waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import Completion, Job, JobQuery, JobState
from chalicelib.storage.base import MINUTES_KEPT, from_micros
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job, token
from tests.redis_support import fresh_prefix, private_server, with_prefix

LEASE = 30.0
WAITING = (JobState.QUEUED, JobState.RETRYING)


def commands(store: RedisStore, call: Callable[[], Any]) -> int:
    """The commands the server ran during `call()`, scripts' own calls included."""

    def total() -> int:
        stats = store.client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))

    before = total()
    call()
    return total() - before - 1  # less the first INFO


@pytest.fixture
def store(clock: FakeClock) -> Iterator[RedisStore]:
    with fresh_prefix() as url:
        s = from_url(url, clock)
        try:
            yield s
        finally:
            s.close()


def test_a_scrape_does_not_walk_the_queues_holding_due_jobs(
    tmp_path: Path, clock: FakeClock
) -> None:
    with private_server(tmp_path, appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "due"), clock)
        try:
            metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "3"}))
            store.add([new_job(clock, queue=f"busy-{i % 3}") for i in range(9)])
            metrics.exposition()
            before = commands(store, metrics.exposition)
            clock.advance(1)
            made_up = [f"made-up-{i:04d}" for i in range(2000)]
            for start in range(0, len(made_up), 500):
                store.add([new_job(clock, tenant="t2", queue=q) for q in made_up[start:][:500]])
            clock.advance(1)
            after = commands(store, metrics.exposition)
            # Before: one ZRANGE per queue holding waiting jobs, 2,000 more.
            assert after <= before + 2, (before, after)
            text = metrics.exposition().decode()
            # The made-up queues fold into _other, aged by the oldest of them.
            assert 'spool_queue_oldest_due_age_seconds{queue="_other"} 1.0' in text
            assert 'spool_queue_oldest_due_age_seconds{queue="busy-0"} 2.0' in text
        finally:
            store.close()


def test_a_tenants_oldest_due_does_not_walk_other_tenants_queues(
    tmp_path: Path, clock: FakeClock
) -> None:
    with private_server(tmp_path, appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "due"), clock)
        try:
            [mine] = store.add([new_job(clock, tenant="acme", queue="mail")])
            store.oldest_due(tenant="acme")
            before = commands(store, lambda: store.oldest_due(tenant="acme"))
            made_up = [f"made-up-{i:04d}" for i in range(2000)]
            for start in range(0, len(made_up), 500):
                store.add([new_job(clock, tenant="t2", queue=q) for q in made_up[start:][:500]])
            after = commands(store, lambda: store.oldest_due(tenant="acme"))
            assert after <= before, (before, after)
            assert store.oldest_due(tenant="acme") == {"mail": mine.job.run_at}
            # Every queue's is read in pages (DUE_PAGE): all 2,000, not the one not due.
            store.add([new_job(clock, tenant="t2", queue="later", delay=60)])
            assert set(store.oldest_due(tenant="t2")) == set(made_up)
            assert set(store.oldest_due()) == {"mail", *made_up}
        finally:
            store.close()


def test_oldest_due_named_is_the_named_queues_and_the_oldest_other(
    store: RedisStore, clock: FakeClock
) -> None:
    [a] = store.add([new_job(clock, queue="a")])
    clock.advance(1)
    [b] = store.add([new_job(clock, queue="b")])
    clock.advance(1)
    store.add([new_job(clock, queue="c"), new_job(clock, queue="d", delay=60)])
    clock.advance(1)
    assert store.oldest_due_named(["b", "d"]) == {"b": b.job.run_at, "a": a.job.run_at}
    assert store.oldest_due_named(["a", "b"]) == {
        "a": a.job.run_at,
        "b": b.job.run_at,
        "c": clock.now() - timedelta(seconds=1),
    }
    assert store.oldest_due_named([]) == {"a": a.job.run_at}
    assert store.oldest_due_named(["nothing"]) == {"a": a.job.run_at}
    store.cancel(a.job.id)
    assert store.oldest_due_named([]) == {"b": b.job.run_at}


def expected(jobs: list[Job], now: datetime, tenant: str | None) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for job in jobs:
        mine = tenant in (None, job.tenant)
        if (
            job.state in WAITING
            and job.run_at <= now
            and mine
            and job.run_at < out.get(job.queue, job.run_at + timedelta(seconds=1))
        ):
            out[job.queue] = job.run_at
    return out


def every_job(store: RedisStore) -> list[Job]:
    jobs: list[Job] = []
    cursor = None
    while True:
        page = store.list_jobs(JobQuery(limit=500, cursor=cursor))
        jobs.extend(page.jobs)
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def check(store: RedisStore, now: datetime) -> None:
    """qd and qdt: hold each (tenant's) queue's oldest waiting run_at, due or not."""
    jobs = every_job(store)
    assert store.oldest_due() == expected(jobs, now, None)
    for tenant in ("t1", "t2", "t3"):
        assert store.oldest_due(tenant=tenant) == expected(jobs, now, tenant)
        assert store.oldest_due(["q0", "q3"], tenant=tenant) == {
            q: at for q, at in expected(jobs, now, tenant).items() if q in ("q0", "q3")
        }
    waiting: dict[str, int] = {}
    for job in jobs:
        if job.state in WAITING:
            at = int(job.run_at.timestamp() * 1_000_000)
            waiting[job.queue] = min(waiting.get(job.queue, at), at)
    kept = store.client.zrange(store._p + "qd", 0, -1, withscores=True)
    assert {q.decode(): int(s) for q, s in kept} == waiting
    due = expected(jobs, now, None)
    named = ["q1", "q4"]
    answer = store.oldest_due_named(named)
    assert {q: at for q, at in answer.items() if q in named} == {
        q: at for q, at in due.items() if q in named
    }
    others = {q: at for q, at in due.items() if q not in named}
    rest = {q: at for q, at in answer.items() if q not in named}
    assert len(rest) == min(1, len(others))
    if others:
        assert list(rest.values()) == [min(others.values())]


def test_the_queues_by_oldest_job_follow_every_transition(
    store: RedisStore, clock: FakeClock
) -> None:
    rng = random.Random(43)
    leased: list[Job] = []
    for _ in range(300):
        step = rng.choice(["add", "add", "claim", "finish", "finish", "cancel", "redrive",
                           "reap", "purge", "discard", "time"])  # fmt: skip
        if step == "add":
            store.add(
                [
                    new_job(
                        clock,
                        tenant=rng.choice(["t1", "t2", "t3"]),
                        queue=f"q{rng.randrange(6)}",
                        delay=rng.choice([0, 0, -5, 5, 30]),
                        max_attempts=2,
                    )
                    for _ in range(rng.randrange(1, 6))
                ]
            )
        elif step == "claim":
            queues = rng.choice([None, [f"q{rng.randrange(6)}"]])
            leased += store.claim(rng.randrange(1, 4), LEASE, queues=queues)
        elif step == "finish" and leased:
            job = leased.pop(rng.randrange(len(leased)))
            state = rng.choice([JobState.SUCCEEDED, JobState.RETRYING, JobState.DEAD])
            later = clock.now() + timedelta(seconds=rng.choice([0, 10]))
            retry_at = later if state is JobState.RETRYING else None
            store.finish([Completion(job.id, token(job), state, error="x", retry_at=retry_at)])
        elif step == "cancel":
            waiting = [j for j in every_job(store) if j.state in WAITING]
            if waiting:
                store.cancel(rng.choice(waiting).id)
        elif step == "redrive":
            dead = [j.id for j in every_job(store) if j.state is JobState.DEAD]
            store.redrive(dead[: rng.randrange(1, 3)])
        elif step == "reap":
            clock.advance(LEASE + 1)  # every lease expires; the next claim reaps them
            store.claim(0, LEASE)
            leased.clear()
        elif step == "purge":
            store.purge(clock.now() + timedelta(seconds=1), rng.randrange(1, 10))
        elif step == "discard":
            dead = [j.id for j in every_job(store) if j.state is JobState.DEAD]
            store.discard(dead[:1])
        else:
            clock.advance(rng.choice([1, 7, 20]))
        check(store, clock.now())


def test_a_keyspace_without_the_queues_by_oldest_job_gets_them_once(clock: FakeClock) -> None:
    """A keyspace an older Spool wrote (qt '1': the sums, and a set wq, no qd or qdt:)
    gets qd and qdt: from the waiting sets at the first read; the sums are kept."""
    with fresh_prefix() as url:
        writer = from_url(url, clock)
        try:
            [a] = writer.add([new_job(clock, tenant="t1", queue="a")])
            clock.advance(1)
            writer.add([new_job(clock, tenant="t2", queue="a"), new_job(clock, queue="b")])
            writer.add([new_job(clock, tenant="t1", queue="c", delay=60)])
            writer.oldest_due()
            totals = writer.queue_totals([], 5)
            p = writer._p
            writer.client.delete(p + "qd", p + "qdt:t2", p + "qdt:default")
            # What a process of that release leaves: t1's entries, one of them stale.
            writer.client.zadd(p + "qdt:t1", {"gone": 1, "a": 5})
            writer.client.set(p + "qt", "1")
            writer.client.sadd(p + "wq", "a", "b", "c")
        finally:
            writer.close()
        store = from_url(url, clock)
        try:
            assert store.oldest_due() == {"a": a.job.run_at, "b": clock.now()}
            assert store.oldest_due(tenant="t1") == {"a": a.job.run_at}
            assert store.oldest_due(tenant="t2") == {"a": clock.now()}
            assert store.queue_totals([], 5) == totals
            assert store.client.exists(p + "wq") == 0
            kept = store.client.zrange(p + "qdt:t1", 0, -1, withscores=True)
            assert [(q, from_micros(int(s))) for q, s in kept] == [
                (b"a", a.job.run_at),
                (b"c", clock.now() + timedelta(seconds=60)),
            ]
        finally:
            store.close()


def test_one_batch_may_use_more_queues_than_lua_unpacks(
    store: RedisStore, clock: FakeClock
) -> None:
    """A batch of SPOOL_MAX_BATCH (up to 10,000) jobs, each in a queue of its own: the
    script's set of queues used went to one SADD of them all, past Lua's unpack limit
    (8,000), and failed after the jobs were written: a half-written batch."""
    names = [f"q-{i:05d}" for i in range(9000)]
    results = store.add([new_job(clock, queue=q) for q in names])
    assert len(results) == 9000
    assert store.client.scard(store._p + "queues") == 9000
    assert set(store.oldest_due()) == set(names)


def test_a_tenants_chart_does_not_read_other_tenants_queues(
    tmp_path: Path, clock: FakeClock
) -> None:
    """throughput(tenant) (the overview's chart) reads the tenant's own tallies: a tenant
    whose jobs end in 2,000 queues within the hour does not grow another's read."""
    with private_server(tmp_path, appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "chart"), clock)
        try:

            def run(tenant: str, queues: list[str]) -> None:
                for start in range(0, len(queues), 500):
                    store.add(
                        [new_job(clock, tenant=tenant, queue=q) for q in queues[start:][:500]]
                    )
                while claimed := store.claim(500, LEASE):
                    done = [Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed]
                    store.finish(done)

            def sent() -> int:
                return int(store.client.info("stats")["total_net_output_bytes"])

            since = clock.now() - timedelta(minutes=59)
            run("acme", ["mail", "mail", "images"])
            store.throughput(since, "acme")
            before = sent()
            mine = store.throughput(since, "acme")
            small = sent() - before
            run("t2", [f"made-up-{i:04d}" for i in range(2000)])
            before = sent()
            assert store.throughput(since, "acme") == mine
            large = sent() - before
            assert large <= small + 200, (small, large)  # before: 2,000 fields more
            assert [(t.queue, t.succeeded) for t in mine] == [("images", 1), ("mail", 2)]
            assert len(store.throughput(since, "t2")) == 2000
            assert len(store.throughput(since)) == 2002
        finally:
            store.close()


def test_a_tenants_tallies_go_with_their_minute_and_older_minutes_still_read(
    store: RedisStore, clock: FakeClock
) -> None:
    """The purge that drops a stale minute drops its per-tenant tallies; a minute kept
    before those existed (no tn: set) is read from the shared tallies, filtered."""
    since = clock.now() - timedelta(minutes=1)
    store.add([new_job(clock, tenant="acme", queue="mail"), new_job(clock, queue="x")])
    for job in store.claim(10, LEASE):
        store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
    [minute] = store.client.zrange(store._p + "tpm", 0, -1)
    p, m = store._p, minute.decode()
    assert store.client.exists(p + "tn:" + m, p + "tt:" + m + ":acme") == 2
    mine = store.throughput(since, "acme")
    assert [(t.queue, t.succeeded) for t in mine] == [("mail", 1)]
    store.client.delete(p + "tn:" + m, p + "tt:" + m + ":acme", p + "tt:" + m + ":default")
    assert store.throughput(since, "acme") == mine
    clock.advance((MINUTES_KEPT + timedelta(minutes=2)).total_seconds())
    store.add([new_job(clock, tenant="acme", queue="mail")])
    for job in store.claim(10, LEASE):
        store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
    [later] = [x for x in store.client.zrange(p + "tpm", 0, -1) if x != minute]
    store.purge(clock.now(), 10)
    assert store.client.zrange(p + "tpm", 0, -1) == [later]
    keys = {k.decode() for k in store.client.scan_iter(match=p + "t[tn]:*")}
    assert keys == {p + "tn:" + later.decode(), p + "tt:" + later.decode() + ":acme"}
