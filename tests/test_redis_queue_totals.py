"""Redis: a scrape's work does not grow with the queue names ever used.

queue_totals reads the ranking (a sorted set) and the named queues' fields, kept by
the same scripts that bump the counters; oldest_due reads the queues holding waiting
jobs by their oldest (qd; tests/test_redis_oldest_due.py), not every queue ever
used. The work is counted on a private server (nothing else talks to it), never
timed: the commands it ran, those the scripts called included (INFO commandstats),
and the bytes it sent back (INFO stats), which is what grew with every name ever
used (the scrape read two whole hashes, and walked every queue ever used for the
oldest due job).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import OTHER_QUEUE, Completion, JobState
from chalicelib.storage.queue_totals import fold
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job, token
from tests.redis_support import fresh_prefix, private_server, with_prefix

LEASE = 30.0


def work(store: RedisStore, call: Callable[[], Any]) -> tuple[int, int]:
    """(commands the server ran, bytes it sent to clients) during `call()`."""

    def reading() -> tuple[int, int]:
        commands = store.client.info("commandstats")
        calls = sum(int(v["calls"]) for k, v in commands.items() if k.startswith("cmdstat_"))
        return calls, int(store.client.info("stats")["total_net_output_bytes"])

    calls, sent = reading()
    call()
    calls_after, sent_after = reading()
    # Less the INFO commands themselves (the second pair): two calls, a few KB.
    return calls_after - calls - 2, sent_after - sent


def run_all(store: RedisStore, clock: FakeClock, queues: list[str]) -> None:
    """One job in each queue, run to success and purged: only counters are left."""
    for start in range(0, len(queues), 500):
        store.add([new_job(clock, queue=q) for q in queues[start : start + 500]])
    while claimed := store.claim(500, LEASE):
        store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    clock.advance(10)
    while store.purge(clock.now(), 1000):
        pass


def test_a_scrape_does_not_grow_with_made_up_queue_names(tmp_path: Path, clock: FakeClock) -> None:
    with private_server(tmp_path, appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "scrape"), clock)
        try:
            metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "3"}))
            run_all(store, clock, [f"busy-{i % 3}" for i in range(15)])
            store.add([new_job(clock, queue="busy-0", delay=3600)])  # one waiting job
            metrics.exposition()
            calls, sent = work(store, metrics.exposition)
            run_all(store, clock, [f"made-up-{i:04d}" for i in range(2000)])
            calls_after, sent_after = work(store, metrics.exposition)
            # The same named queues and one `_other`: not 2,000 names' fields or walks.
            assert calls_after <= calls + 2, (calls, calls_after)
            assert sent_after <= sent + 2000, (sent, sent_after)
            text = metrics.exposition().decode()
            assert f'spool_jobs_enqueued_total{{queue="{OTHER_QUEUE}",type="echo"}} 2000.0' in text
            assert 'spool_jobs_enqueued_total{queue="busy-0",type="echo"} 6.0' in text
            assert 'spool_jobs{queue="busy-0",state="queued"} 1.0' in text
        finally:
            store.close()


def queues_kept(store: RedisStore) -> set[str]:
    """The queues in qd (those holding waiting jobs, by their oldest)."""
    return {q.decode() for q in store.client.zrange(store._p + "qd", 0, -1)}


def test_oldest_due_names_every_queue_with_due_jobs_and_forgets_emptied_ones(
    clock: FakeClock,
) -> None:
    with fresh_prefix() as url:
        store = from_url(url, clock)
        try:
            store.add([new_job(clock, queue="a"), new_job(clock, queue="b")])
            [later] = store.add([new_job(clock, queue="c", delay=60)])
            assert set(store.oldest_due()) == {"a", "b"}
            [claimed] = store.claim(10, LEASE, queues=["a"])
            assert set(store.oldest_due()) == {"b"}
            # a's only job runs: a leaves the queues by oldest job; c waits, not yet due.
            assert queues_kept(store) == {"b", "c"}
            # A failed attempt waits again: its queue is back.
            retry_at = clock.now()
            store.finish(
                [
                    Completion(
                        claimed.id,
                        token(claimed),
                        JobState.RETRYING,
                        error="x",
                        retry_at=retry_at,
                    )
                ]
            )
            clock.advance(120)
            assert set(store.oldest_due()) == {"a", "b", "c"}
            store.cancel(later.job.id)
            assert set(store.oldest_due()) == {"a", "b"}
            assert queues_kept(store) == {"a", "b"}
        finally:
            store.close()


def test_a_keyspace_of_an_older_spool_gets_exact_summaries_once(clock: FakeClock) -> None:
    """A keyspace written before the summaries (no qv, ctot, qc, st, qd) is summed once,
    exactly, by the first scrape; the scripts keep them from then on."""
    with fresh_prefix() as url:
        writer = from_url(url, clock)
        try:
            writer.add([new_job(clock, queue=q) for q in ("big", "big", "big", "aaa", "zzz")])
            writer.add([new_job(clock, "fail", queue="zzz", delay=60)])
            claimed = writer.claim(2, LEASE, queues=["big"])
            writer.finish([Completion(claimed[0].id, token(claimed[0]), JobState.SUCCEEDED)])
            p = writer._p
            writer.client.delete(*(p + k for k in ("qv", "ctot", "qc", "st", "qd", "qt")))
        finally:
            writer.close()
        store = from_url(url, clock)
        try:
            totals = store.queue_totals([], 1)
            assert totals == fold(store.counters(), store.counts(), [], 1)
            assert totals.named == {"big"}
            assert store.queue_totals([], 2).named == {"big", "zzz"}
            assert set(store.oldest_due()) == {"big", "aaa", "zzz"}
            store.add([new_job(clock, queue="aaa") for _ in range(5)])
            totals = store.queue_totals(["zzz"], 1)
            assert totals == fold(store.counters(), store.counts(), ["zzz"], 1)
            assert totals.named == {"aaa", "zzz"}
            # Built once: a second store does not rebuild (or double) them.
            again = from_url(url, clock)
            try:
                assert again.queue_totals(["zzz"], 1) == totals
            finally:
                again.close()
        finally:
            store.close()
