"""SQLite: a scrape's work does not grow with every queue name ever used, and a file
made before the summaries gets them, exactly, when it is opened.

The work is counted as SQLite virtual machine steps (a progress handler called
every step) on the scraping thread's connection: not a time, so the assertion
holds on any machine, and it counts every row the statements touch whether or
not Python receives it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chalicelib.api.metrics import Metrics
from chalicelib.clock import FakeClock
from chalicelib.config import Settings
from chalicelib.models import OTHER_QUEUE, Completion, CounterKey, JobState
from chalicelib.storage.queue_totals import fold
from chalicelib.storage.sqlite import SQLiteStore
from chalicelib.ui import views
from tests.factories import new_job, token
from tests.sqlite_stop39 import old_count_triggers

LEASE = 30.0


def run_all(store: SQLiteStore, clock: FakeClock, queues: list[str]) -> None:
    """One job in each queue, run to success and purged, two hours ago: only counters
    are left (and minute tallies older than the overview's hour)."""
    for start in range(0, len(queues), 500):
        store.add([new_job(clock, queue=q) for q in queues[start : start + 500]])
    while claimed := store.claim(500, LEASE):
        store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    clock.advance(10)
    while store.purge(clock.now(), 1000):
        pass
    clock.advance(2 * 3600)  # and out of the overview's last hour


def steps(store: SQLiteStore, call: object) -> int:
    """SQLite VM steps `call()` takes on this thread's connection (the store's reads)."""
    db = store._db()
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    db.set_progress_handler(tick, 1)
    try:
        call()  # type: ignore[operator]
    finally:
        db.set_progress_handler(None, 1)
    return counted[0]


def test_scrape_and_overview_work_does_not_grow_with_made_up_queue_names(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    try:
        run_all(store, clock, [f"busy-{i}" for i in range(20)] * 3)
        # Ten of the twenty busy queues named, before and after: the same labels.
        metrics = Metrics(store, Settings(extra={"SPOOL_METRICS_MAX_QUEUES": "10"}))
        scrape_before = steps(store, metrics.exposition)
        overview_before = steps(store, lambda: views.overview(store, None, 60.0))
        run_all(store, clock, [f"made-up-{i:05d}" for i in range(3000)])
        scrape_after = steps(store, metrics.exposition)
        overview_after = steps(store, lambda: views.overview(store, None, 60.0))
        # 3,000 more names, 150 times the 20 busy ones: the work stays about the same
        # (it read every counter row before: some 40 times as many steps).
        assert scrape_after < 1.5 * scrape_before, (scrape_before, scrape_after)
        assert overview_after < 1.5 * overview_before, (overview_before, overview_after)
        text = metrics.exposition().decode()  # 3,000 made-up, 10 busy ones of 3 jobs
        assert f'spool_jobs_enqueued_total{{queue="{OTHER_QUEUE}",type="echo"}} 3030.0' in text
    finally:
        store.close()


def test_a_file_made_before_the_summaries_gets_them_on_open(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = str(tmp_path / "spool.db")
    store = SQLiteStore(path, clock)
    store.add([new_job(clock, queue=q) for q in ("a", "a", "b", "c")])
    store.add([new_job(clock, "fail", queue="c")])
    claimed = store.claim(10, LEASE, queues=["b"])
    store.finish([Completion(j.id, token(j), JobState.SUCCEEDED) for j in claimed])
    store.close()
    # As an older Spool left it: no summaries, and a count row kept at zero.
    db = sqlite3.connect(path, isolation_level=None)
    old_count_triggers(path, emptied=False)
    for trigger in ("counters_summed_insert", "counters_summed_update"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE queue_volume")
    db.execute("DROP TABLE counter_totals")
    db.execute(
        "INSERT INTO job_counts (tenant, queue, state, n) VALUES ('default', 'gone', 'dead', 0)"
    )
    db.close()

    store = SQLiteStore(path, clock)
    try:
        totals = store.queue_totals([], 1)
        assert totals == fold(store.counters(), store.counts(), [], 1)
        assert totals.named == {"a"}
        assert totals.counters[CounterKey(OTHER_QUEUE, "echo", "enqueued")] == 2
        assert totals.counters[CounterKey(OTHER_QUEUE, "fail", "enqueued")] == 1
        rows = store._db().execute("SELECT COUNT(*) FROM job_counts WHERE n = 0").fetchone()
        assert rows[0] == 0
        store.add([new_job(clock, queue="c") for _ in range(3)])  # the triggers are back
        assert store.queue_totals([], 1).named == {"c"}
    finally:
        store.close()
