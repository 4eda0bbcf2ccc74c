"""GET /jobs and GET /dlq must not read hundreds of large jobs to answer 4 MiB.

Was: page_body planned each read of the store from the average size of the jobs read
so far. A tenant that enqueued 20 tiny jobs and then hundreds of large ones (a
160 KB payload of 40,000 empty objects each) made the read after the first 20 ask
for all the rest at once: over HTTP one `GET /jobs?limit=1000` of 300 such jobs
took a `spool serve` from 235 MB to 1,045 MB resident to answer 4 MB (54 jobs), and
a few at once would take any server down. Now a read holds at most MAX_STEP jobs,
as the dashboard's lists read READ_STEP (chalicelib/api/ui_routes.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chalicelib.api import pages
from chalicelib.api.pages import page_body
from chalicelib.clock import FakeClock
from chalicelib.models import JobPage, JobQuery, NewJob
from chalicelib.storage.memory import MemoryStore


def _store_with(sizes: list[int]) -> MemoryStore:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = MemoryStore(clock)
    for n, size in enumerate(sizes):
        store.add([NewJob(f"j_{n:032x}", "echo", {"x": "a" * size}, clock.now(), tenant="t")])
        clock.advance(1)
    return store


def test_small_jobs_then_large_ones_are_not_read_all_at_once() -> None:
    store = _store_with([10] * 20 + [20_000] * 500)
    held: list[int] = []

    def list_jobs(query: JobQuery) -> JobPage:
        page = store.list_jobs(query)
        held.append(len(page.jobs))
        return page

    body = json.loads(page_body(list_jobs, JobQuery("t", limit=1000), budget=200_000))
    # The page itself ends at the budget: the 20 small jobs and ~9 large ones.
    assert 20 < len(body["jobs"]) < 40
    # And no read of the store held more than a step's worth of jobs: before, the
    # second read held all 500 large ones (10 MB) to answer 200 kB.
    assert max(held) <= 50, held
    assert max(held) <= pages.MAX_STEP <= 50


def test_a_page_of_small_jobs_is_still_the_whole_limit() -> None:
    store = _store_with([10] * 1000)
    body = json.loads(page_body(store.list_jobs, JobQuery("t", limit=1000)))
    assert [job["id"] for job in body["jobs"]] == [f"j_{n:032x}" for n in range(1000)]
    assert body["next_cursor"] is None
