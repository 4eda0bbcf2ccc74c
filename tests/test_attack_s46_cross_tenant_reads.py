"""Another tenant's job is never read beyond its owner: the store compares the tenant
before it fetches the record's payload, result or attempt history.

Found from outside (stop 46): with tenant B's finished job holding a 250 KB payload
(and so a 250 KB result), tenant A's `GET /status/{B's id}` answered the same 404 as
an unknown id but took longer, 1,500 alternating requests each over one keep-alive
connection to `spool serve`: on SQLite a median of 528 us against 404 us for an
unknown id, on Redis 1,277 us against 826 us (Postgres, which compares the tenant in
its query: 839 us against 837 us). The 404's time told whether a job id was another
tenant's. SQLite fetched the whole row (payload and result: overflow pages) and
Redis sent every field of the record over the socket before either compared the
tenant; `?attempts=true` and the dashboard's job page read the attempt history the
same way, and SQLite's cancel read the whole row too.

Timing is not asserted here. What made it is: on SQLite a record whose payload or
history cannot even be fetched (bytes that are not UTF-8: sqlite3 refuses to hand
them over, and the store reads them again as bytes, stop 60) shows whether the row
is fetched for another tenant (the store meets the damage); on Redis, everything the
server answers is recorded, and none of another tenant's payload or history may be
among it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobNotFound, JobUnreadable
from chalicelib.handlers import Registry
from chalicelib.models import Attempt, Completion, Job, JobPage, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.service import Service
from chalicelib.storage import sqlite as sqlite_store
from chalicelib.storage.base import JobStore
from tests.apikit import Api
from tests.backends import open_backend
from tests.factories import new_job, token
from tests.redis_support import script_commands

T = TypeVar("T")
MARK = "owner-only-0d9f3a"  # in the payload, the result and the attempt's error
OWNER, OTHER = "acme", "other"


def _finished_job(store: JobStore, clock: FakeClock, copies: int = 500) -> str:
    """A job of OWNER's that ran once (so it has an error and an attempt recorded)."""
    job = store.add([new_job(clock, tenant=OWNER, payload={"secret": MARK * copies})])[0].job
    (claimed,) = store.claim(1, 30.0, ids=[job.id])
    attempt = Attempt(
        number=1,
        started_at=clock.now(),
        finished_at=clock.now(),
        worker="host:1",
        outcome="failed",
        error=f"boom {MARK}",
    )
    retry = Completion(
        job.id, token(claimed), JobState.RETRYING, error=MARK, retry_at=clock.now(), attempt=attempt
    )
    assert store.finish([retry]) == [True]
    return job.id


def _queued_job(store: JobStore, clock: FakeClock) -> str:
    return store.add([new_job(clock, tenant=OWNER, payload={"secret": MARK})])[0].job.id


def _not_utf8(store: Any, job_id: str, column: str) -> None:
    """Make a column of the job's SQLite row bytes sqlite3 cannot hand over as text."""
    with store._write() as db:
        db.execute(f"UPDATE jobs SET {column} = CAST(X'ff00fe' AS TEXT) WHERE id = ?", (job_id,))


def _damage_met(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each time the SQLite store met bytes that are not UTF-8 in a fetched row (its
    read then made again with the bytes as they are): a row was fetched."""
    met: list[bool] = []
    original = sqlite_store._not_utf8

    def recording(exc: BaseException | None) -> bool:
        found = original(exc)
        if found:
            met.append(True)
        return found

    monkeypatch.setattr(sqlite_store, "_not_utf8", recording)
    return met


@pytest.mark.parametrize("column", ["payload", "result", "attempt_log"])
def test_sqlite_reads_of_another_tenants_job_never_fetch_its_row(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    column: str,
) -> None:
    with open_backend("sqlite", clock, tmp_path, request) as store:
        done = _finished_job(store, clock)
        _not_utf8(store, done, column)
        met = _damage_met(monkeypatch)
        with contextlib.suppress(JobUnreadable):  # the owner's read meets the damage
            store.get(done, OWNER) if column != "attempt_log" else store.attempts(done, OWNER)
        assert met
        met.clear()
        assert store.get(done, OTHER) is None
        assert store.attempts(done, OTHER) is None
        assert store.webhooks(done, OTHER) == []
        with pytest.raises(JobNotFound):
            store.cancel(done, OTHER)
        assert not met


def test_sqlite_cancel_of_another_tenants_waiting_job_never_fetches_its_row(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open_backend("sqlite", clock, tmp_path, request) as store:
        waiting = _queued_job(store, clock)
        _not_utf8(store, waiting, "payload")
        met = _damage_met(monkeypatch)
        with pytest.raises(JobNotFound):
            store.cancel(waiting, OTHER)
        assert not met
        with contextlib.suppress(JobUnreadable):
            store.cancel(waiting, OWNER)
        assert met


@contextmanager
def _answers(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every reply the Redis server sends the store while the block runs."""
    seen: list[object] = []
    original: Callable[..., Any] = store._run

    def recording(fn: Callable[[], T], read: bool = False) -> T:
        answer: T = original(fn, read)
        seen.append(answer)
        return answer

    with monkeypatch.context() as patch:
        patch.setattr(store, "_run", recording)
        yield seen


# Payloads each side of GET_INLINE_BYTES: the script hands a small job's fields back
# itself, and leaves a large one's to a plain read once it has compared the tenant.
@pytest.mark.parametrize("copies", [1, 2000])
def test_redis_reads_of_another_tenants_job_receive_none_of_it(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    copies: int,
) -> None:
    with open_backend("redis", clock, tmp_path, request) as store:
        done = _finished_job(store, clock, copies)
        waiting = _queued_job(store, clock)
        with _answers(store, monkeypatch) as seen:  # the owner's reads do bring it
            owned = store.get(done, OWNER)
            assert owned is not None and owned.payload == {"secret": MARK * copies}
            assert MARK in str(store.attempts(done, OWNER))
        assert MARK.encode() in repr(seen).encode()
        with _answers(store, monkeypatch) as seen:
            assert store.get(done, OTHER) is None
            assert store.attempts(done, OTHER) is None
            assert store.webhooks(done, OTHER) == []
            with pytest.raises(JobNotFound):
                store.cancel(waiting, OTHER)
            with pytest.raises(JobNotFound):
                store.cancel(done, OTHER)
            assert store.get("j_" + "0" * 32, OTHER) is None
        assert seen, "the reads went through the store's calls"
        assert MARK not in repr(seen)
        assert store.get(done, None) is not None  # the worker's reads (no tenant) unchanged


def test_redis_list_reads_only_the_jobs_it_lists_whole(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """GET /jobs and /dlq with a filter: found from outside on Redis, tenant B's 120 jobs
    of 250 KB payloads and results and `GET /jobs?state=dead` (none dead) held one
    EVALSHA for 77 ms (SLOWLOG), all of Redis with it, for every tenant and worker: the
    LIST script read each scanned job's whole record to compare four short fields.
    Up to 5,000 (LIST_SCAN_BUDGET) are scanned per call."""
    with open_backend("redis", clock, tmp_path, request) as store:
        store.add(
            [new_job(clock, tenant=OWNER, queue="other", payload={"n": i}) for i in range(30)]
        )
        wanted = [store.add([new_job(clock, tenant=OWNER, queue="wanted")])[0].job.id]
        wanted.append(store.add([new_job(clock, tenant=OWNER, queue="wanted")])[0].job.id)
        pages: list[JobPage] = []
        reads = script_commands(
            store,
            lambda: pages.append(store.list_jobs(JobQuery(OWNER, queue="wanted", limit=10))),
        )
        assert sorted(j.id for j in pages[0].jobs) == sorted(wanted)
        whole = [c for c in reads if c.startswith("HMGET") and " payload " in f"{c} "]
        assert whole, reads  # the listed jobs themselves are read whole
        assert all(any(job_id in c for job_id in wanted) for c in whole), whole


# -- the dashboard's lists read no payload or result ---------------------------------------


def test_the_dashboards_lists_fetch_no_payload_on_sqlite(api: Api, rt: Runtime) -> None:
    """Found from outside: tenant B's 200 finished jobs of 250 KB payloads (so 250 KB
    results) made `GET /ui/api/jobs?limit=200`, 72 KB of rows without payloads, take
    175 ms on SQLite against 3.5 ms for 200 small jobs (and 0.22 s on Redis, inside
    its scripts): the listing read and decoded 100 MB it never showed. Here a job's
    payload is bytes sqlite3 cannot hand over: a listing that fetches it fails."""
    kept = api.enqueue({"type": "echo", "payload": {"n": 1}})
    damaged = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    worker = rt.worker(1)
    try:
        worker.drain()
    finally:
        worker.close()
    _not_utf8(rt.store, damaged, "payload")
    listed = api.get("/ui/api/jobs?limit=200")
    assert listed.status == 200, listed.body
    assert [row["id"] for row in listed.json["jobs"]] == [damaged, kept]
    dead = api.get("/ui/api/jobs?state=dead")
    assert [row["id"] for row in dead.json["jobs"]] == [damaged]
    purged = api.post("/ui/api/dead/purge", {"all": True})
    assert purged.status == 200, purged.body
    assert purged.json["ids"] == [damaged]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "redis"])
def test_a_list_without_bodies_is_the_same_list(
    backend: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """JobQuery(bodies=False) lists the same jobs in the same pages; a store that
    leaves the payload and result out answers {} and None for them."""
    with open_backend(backend, clock, tmp_path, request) as store:
        for i in range(5):
            store.add([new_job(clock, tenant=OWNER, payload={"secret": MARK, "i": i})])
            clock.advance(1)
        _finished_job(store, clock, 1)
        for newest_first in (False, True):
            whole = store.list_jobs(JobQuery(OWNER, limit=4, newest_first=newest_first))
            lean = store.list_jobs(
                JobQuery(OWNER, limit=4, newest_first=newest_first, bodies=False)
            )
            assert lean.next_cursor == whole.next_cursor
            assert len(lean.jobs) == len(whole.jobs) == 4
            for slim, full in zip(lean.jobs, whole.jobs, strict=True):
                bodies = {"payload", "result"}
                assert slim.model_dump(exclude=bodies) == full.model_dump(exclude=bodies)
                if backend != "memory":
                    assert (slim.payload, slim.result) == ({}, None)


def test_redis_lists_without_bodies_read_no_payload(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with open_backend("redis", clock, tmp_path, request) as store:
        ids = [store.add([new_job(clock, tenant=OWNER)])[0].job.id for _ in range(3)]
        pages: list[JobPage] = []
        reads = script_commands(
            store, lambda: pages.append(store.list_jobs(JobQuery(OWNER, bodies=False)))
        )
        assert sorted(j.id for j in pages[0].jobs) == sorted(ids)
        assert reads and not [c for c in reads if " payload " in f"{c} "], reads


def test_redis_redrive_all_lists_dead_jobs_without_their_payloads(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, handlers: Registry
) -> None:
    """POST /dlq/redrive lists the tenant's dead jobs to learn their ids and when they
    died, REDRIVE_STEP at a time, and the redrive then reads what it moves: the listing
    read each one's payload too. Here every dead job died after the bound, so none is
    moved and none should be read whole."""
    with open_backend("redis", clock, tmp_path, request) as store:
        bound = clock.now()
        clock.advance(1)
        for _ in range(3):
            job = store.add([new_job(clock, tenant=OWNER, payload={"secret": MARK})])[0].job
            (claimed,) = store.claim(1, 30.0, ids=[job.id])
            assert store.finish([Completion(job.id, token(claimed), JobState.DEAD, error="x")])
        service = Service(store, handlers)
        moved: list[Job] = []
        reads = script_commands(
            store, lambda: moved.extend(service.redrive_all(OWNER, died_before=bound))
        )
        assert moved == []
        assert reads and not [c for c in reads if " payload " in f"{c} "], reads


@contextmanager
def _aws_answers(store: Any) -> Iterator[list[tuple[str, object]]]:
    """Every answer moto's DynamoDB and S3 give the store while the block runs, parsed
    as botocore hands them to it: (operation, answer)."""
    seen: list[tuple[str, object]] = []

    def record(http_response: object, parsed: object, model: Any, **_: object) -> None:
        seen.append((model.name, parsed))

    clients = [store.ddb, store.blobs.client]
    for client in clients:
        client.meta.events.register("after-call", record, unique_id="cross-tenant-answers")
    try:
        yield seen
    finally:
        for client in clients:
            client.meta.events.unregister("after-call", unique_id="cross-tenant-answers")


# A payload kept in the record and one kept in S3 (over DynamoConfig.offload_bytes).
@pytest.mark.parametrize("copies", [1, 2000])
def test_dynamodb_reads_of_another_tenants_job_receive_none_of_it(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, copies: int
) -> None:
    """DynamoDB's GetItem compares nothing: get, cancel, the attempt history and the
    webhooks read the record whole (its inline payload, result, error and attempts)
    and compared the tenant afterwards. Now the read itself compares it (a Query of
    the one key, filtered on the tenant): another tenant's job answers as an unknown
    id does, with nothing of the record."""
    with open_backend("dynamodb", clock, tmp_path, request) as store:
        done = _finished_job(store, clock, copies)
        waiting = _queued_job(store, clock)
        with _aws_answers(store) as seen:  # the owner's reads do bring it
            owned = store.get(done, OWNER)
            assert owned is not None and owned.payload == {"secret": MARK * copies}
            assert MARK in str(store.attempts(done, OWNER))
        assert MARK in repr(seen)
        with _aws_answers(store) as seen:
            assert store.get(done, OTHER) is None
            assert store.attempts(done, OTHER) is None
            assert store.webhooks(done, OTHER) == []
            with pytest.raises(JobNotFound):
                store.cancel(waiting, OTHER)
            with pytest.raises(JobNotFound):
                store.cancel(done, OTHER)
            assert store.discard([done], OTHER) == []
        assert seen, "the reads went through the store's clients"
        assert MARK not in repr(seen)
        assert not [op for op, _ in seen if op == "GetObject"]
        with _aws_answers(store) as unknown:
            assert store.get("j_" + "0" * 32, OTHER) is None
        assert [op for op, _ in seen[:1]] == [op for op, _ in unknown]  # the same read
        assert store.get(done, None) is not None  # the worker's reads (no tenant) unchanged
        assert store.cancel(waiting, OWNER).state is JobState.CANCELLED
