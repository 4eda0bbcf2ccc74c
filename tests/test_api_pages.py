"""GET /jobs and GET /dlq pages end early before they grow too large
(chalicelib/api/pages.py): a tenant asking for 1000 jobs of 256 KiB each must not make
the server build half a gigabyte, and the cursor still leads through every job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.api import pages
from chalicelib.api.pages import page_body
from chalicelib.clock import FakeClock
from chalicelib.models import JobPage, JobQuery, NewJob
from chalicelib.runtime import Runtime
from chalicelib.storage.memory import MemoryStore
from tests.apikit import Api, installed, settings_for


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


def _store_with(sizes: list[int]) -> MemoryStore:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = MemoryStore(clock)
    for n, size in enumerate(sizes):
        payload = {"x": "a" * size}
        store.add([NewJob(_id(n), "echo", payload, clock.now(), tenant="t")])
        clock.advance(1)
    return store


def _id(n: int) -> str:
    return f"j_{n:032x}"


def _read_all(store: MemoryStore, limit: int, budget: int) -> tuple[list[list[str]], list[int]]:
    """Every page up to the end, and the limit of each read of the store."""
    asked: list[int] = []

    def list_jobs(query: JobQuery) -> JobPage:
        asked.append(query.limit)
        return store.list_jobs(query)

    pages_seen: list[list[str]] = []
    cursor: str | None = None
    while True:
        body = json.loads(page_body(list_jobs, JobQuery("t", limit=limit, cursor=cursor), budget))
        pages_seen.append([job["id"] for job in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages_seen, asked


def test_a_page_ends_at_the_budget_and_the_cursor_goes_on_from_its_last_job() -> None:
    store = _store_with([1000] * 30)
    seen, _ = _read_all(store, limit=1000, budget=10_000)
    assert all(1 <= len(page) <= 10 for page in seen)  # ~1.3 kB a job, 10 kB a page
    flat = [job_id for page in seen for job_id in page]
    assert flat == [_id(n) for n in range(30)]  # each job once, in order


def test_one_job_larger_than_the_budget_is_still_answered_alone() -> None:
    store = _store_with([50, 20_000, 50])
    seen, _ = _read_all(store, limit=100, budget=5_000)
    assert seen == [[_id(0)], [_id(1)], [_id(2)]]


def test_small_jobs_fill_the_limit_in_steps_and_large_ones_are_read_in_small_steps() -> None:
    # Small jobs: the first read, then steps of MAX_STEP (no read holds more, as the
    # jobs after these could be large: tests/test_attack_s47_pages_memory.py).
    _, asked = _read_all(_store_with([10] * 300), limit=300, budget=pages.PAGE_BYTES)
    steps, rest = divmod(300 - pages.FIRST_STEP, pages.MAX_STEP)
    assert asked == [pages.FIRST_STEP] + [pages.MAX_STEP] * steps + ([rest] if rest else [])
    # Large jobs (~4 kB): after the first read, a read asks for what would fit the
    # rest of the budget (~30 more of 200 kB), not for the whole limit.
    _, asked = _read_all(_store_with([4000] * 100), limit=1000, budget=200_000)
    assert asked[0] == pages.FIRST_STEP and 25 <= asked[1] <= 30, asked


def test_the_page_size_is_bounded_over_http(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "PAGE_BYTES", 3000)
    ids = [api.enqueue({"type": "echo", "payload": {"x": "a" * 900}}) for _ in range(12)]
    seen: list[str] = []
    cursor = ""
    for _ in range(20):
        reply = api.get(f"/jobs?limit=1000{cursor}")
        assert reply.status == 200
        assert len(reply.body) <= 3000 + 1200  # the budget, and at most one job past it
        seen += [job["id"] for job in reply.json["jobs"]]
        if reply.json["next_cursor"] is None:
            break
        cursor = f"&cursor={reply.json['next_cursor']}"
    assert seen == ids


def test_a_page_within_the_budget_is_the_whole_limit(api: Api) -> None:
    ids = [api.enqueue({"type": "echo", "payload": {"n": n}}) for n in range(30)]
    reply = api.get("/jobs?limit=25")
    assert [job["id"] for job in reply.json["jobs"]] == ids[:25]
    rest = api.get(f"/jobs?limit=25&cursor={reply.json['next_cursor']}").json
    assert [job["id"] for job in rest["jobs"]] == ids[25:] and rest["next_cursor"] is None


def test_the_budget_counts_the_body_as_lambda_carries_it() -> None:
    """Lambda hands the body to API Gateway inside a JSON document: a payload of
    quotes doubles there, and a page of them measured by its own length alone went
    past Lambda's 6 MB (a 502)."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = MemoryStore(clock)
    for n in range(20):
        store.add([NewJob(_id(n), "echo", {"q": '"' * 1000}, clock.now(), tenant="t")])
        clock.advance(1)
    body = page_body(store.list_jobs, JobQuery("t", limit=1000), budget=10_000)
    carried = len(json.dumps(body))  # what Lambda measures
    assert carried <= 10_000 + 4_500  # the budget, and at most one job (~4.4 kB) past it
    assert len(json.loads(body)["jobs"]) == 2
