"""A stored job that no longer reads is a problem of that job only, on every SQL and
Redis store (DynamoDB: tests/test_dynamodb_damaged_records.py, the same answer).

Was (reproduced with spool serve and spool worker on a SQLite file): a result holding
an integer of more than 4,300 digits, stored before the worker refused one (c7fd6c6),
answered 500 `internal_error` on its `GET /status` and on every page of the tenant's
`GET /jobs` holding it (`spool status` and `spool jobs` stopped with "unexpected
error"), as did a payload or result edited by hand or cut short, and a row of an
unknown state or a time of the wrong type; a worker whose claim batch held a payload
that is not JSON raised after the claim had committed, so every job claimed with it
stayed `running` unrun, and it logged "store unavailable" on every poll.

Now a payload or result that is not JSON reads as `{"error": "payload_unreadable" |
"result_unreadable", "message"}` in its place; any other damage raises JobUnreadable
naming the job (500 `job_unreadable`, with what is wrong) and listings leave the row
out; a claim makes such a job dead, with a last_error that says why and what to do,
without running it, and runs the others.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.handlers import Registry
from chalicelib.models import Completion, JobQuery, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.base import JobStore
from chalicelib.worker import Worker, WorkerConfig
from tests.apikit import Api
from tests.backends import open_backend
from tests.factories import new_job

DIGITS = sys.int_info.default_max_str_digits
HUGE_INT = "1" + "0" * DIGITS  # one digit more than a default reader converts
STORES = ["sqlite", "postgres", "redis"]
LEASE = 60.0

# Text no Spool writer stores, each with the start of what the marker says of it.
BAD_JSON: dict[str, tuple[str, str]] = {
    "huge int": (
        '{"n": ' + HUGE_INT + "}",
        f"holds an integer of more than {DIGITS} digits, which Python does not read",
    ),
    "cut short": ('{"n": 1', "is not valid JSON (Expecting"),
}


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> Iterator[tuple[str, JobStore]]:
    with open_backend(request.param, clock, tmp_path, request) as opened:
        yield request.param, opened


def write(backend: str, store: Any, job_id: str, field: str, value: str | None) -> None:
    """Set one stored field of the job's record as a hand edit would."""
    if backend == "sqlite":
        with store._write() as db:
            db.execute(f"UPDATE jobs SET {field} = ? WHERE id = ?", (value, job_id))
    elif backend == "postgres":
        store._run(
            lambda conn: conn.execute(
                f"UPDATE jobs SET {field} = %s WHERE id = %s",  # type: ignore[arg-type]
                (value, job_id),
            )
        )
    elif value is None:
        store.client.hdel(store._p + "j:" + job_id, field)
    else:
        store.client.hset(store._p + "j:" + job_id, field, value)


def added(store: JobStore, clock: FakeClock) -> Any:
    """A new job, a second after the one before: listed in the order added."""
    clock.advance(1)
    return store.add([new_job(clock)])[0].job


def finished(store: JobStore, clock: FakeClock) -> str:
    job = store.add([new_job(clock)])[0].job
    [claimed] = store.claim(1, LEASE, ids=[job.id])
    assert claimed.lease_token is not None
    [done] = store.finish([Completion(job.id, claimed.lease_token, JobState.SUCCEEDED, {"n": 1})])
    assert done
    return job.id


@pytest.mark.parametrize("text,says", list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_a_result_that_does_not_read_is_shown_as_a_marker(
    store: tuple[str, JobStore], clock: FakeClock, text: str, says: str
) -> None:
    backend, s = store
    bad, good = finished(s, clock), finished(s, clock)
    write(backend, s, bad, "result", text)
    job = s.get(bad)
    assert job is not None and job.state is JobState.SUCCEEDED and job.payload == {"n": 1}
    assert isinstance(job.result, dict) and job.result["error"] == "result_unreadable"
    assert str(job.result["message"]).startswith(f"its result, kept in the job's record, {says}")
    listed = {j.id: j for j in s.list_jobs(JobQuery(state=JobState.SUCCEEDED)).jobs}
    assert set(listed) == {bad, good} and listed[good].result == {"n": 1}


@pytest.mark.parametrize(
    "text", [t for t, _ in BAD_JSON.values()] + ["[1, 2]"], ids=[*BAD_JSON, "array"]
)
def test_a_payload_that_does_not_read_is_not_run_and_the_others_are(
    store: tuple[str, JobStore], clock: FakeClock, reg: Registry, text: str
) -> None:
    backend, s = store
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=3)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return payload

    jobs = [added(s, clock) for _ in range(3)]
    write(backend, s, jobs[1].id, "payload", text)
    shown = s.get(jobs[1].id)
    assert shown is not None and isinstance(shown.payload, dict)
    assert shown.payload["error"] == "payload_unreadable"
    worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    assert ran == [{"n": 1}, {"n": 1}]  # the marker was never given to the handler
    states = {j.id: s.get(j.id) for j in jobs}
    assert [states[j.id].state for j in jobs] == [  # type: ignore[union-attr]
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.SUCCEEDED,
    ]
    dead = states[jobs[1].id]
    assert dead is not None and dead.last_error is not None
    assert dead.last_error.startswith("its payload, kept in the job's record, ")
    assert dead.last_error.endswith(
        ", so it was not run; repair the row and redrive the job, or delete it"
    )
    assert [j.id for j in s.list_jobs(JobQuery(state=JobState.DEAD)).jobs] == [jobs[1].id]


# A record in another bad shape, per store: (field, value) and what the error names.
DAMAGE: dict[str, list[tuple[str, str | None, str]]] = {
    "sqlite": [
        ("state", "bogus", "ValueError: unknown state 'bogus'"),
        ("created_at", "yesterday", "TypeError: not a time: created_at is str 'yesterday'"),
        ("attempts", "two", "TypeError"),
    ],
    "redis": [
        ("state", "bogus", "ValueError: unknown state 'bogus'"),
        ("created_at", None, "KeyError: no created_at field in its hash"),
        ("attempts", "two", "ValueError"),
    ],
}


def damage_cases() -> list[Any]:
    return [
        pytest.param(backend, field, value, says, id=f"{backend}-{field}")
        for backend, cases in DAMAGE.items()
        for field, value, says in cases
    ]


@pytest.mark.parametrize("backend,field,value,says", damage_cases())
def test_a_record_in_a_bad_shape_is_named_and_left_out_of_listings(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    backend: str,
    field: str,
    value: str | None,
    says: str,
) -> None:
    with open_backend(backend, clock, tmp_path, request) as s:
        jobs = [added(s, clock) for _ in range(3)]
        write(backend, s, jobs[1].id, field, value)
        with pytest.raises(JobUnreadable) as raised:
            s.get(jobs[1].id)
        assert raised.value.message.startswith(
            f"job {jobs[1].id}'s stored record cannot be read ({says}"
        )
        assert raised.value.message.endswith("its operator must repair or delete the row")
        listed = s.list_jobs(JobQuery())
        assert [j.id for j in listed.jobs] == [jobs[0].id, jobs[2].id]
        seen: list[str] = []  # two a page: the page of the damaged row still moves on
        cursor: str | None = None
        for _ in range(5):
            page = s.list_jobs(JobQuery(limit=2, cursor=cursor))
            seen += [j.id for j in page.jobs]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [jobs[0].id, jobs[2].id]


@pytest.mark.parametrize(
    "backend,field,value",
    [
        ("sqlite", "created_at", "yesterday"),
        ("redis", "created_at", None),
        ("sqlite", "max_attempts", "x"),
        ("redis", "max_attempts", "x"),
    ],
)
def test_a_claim_buries_a_record_in_a_bad_shape_and_runs_the_others(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    reg: Registry,
    backend: str,
    field: str,
    value: str | None,
) -> None:
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=3)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return payload

    with open_backend(backend, clock, tmp_path, request) as s:
        jobs = [added(s, clock) for _ in range(3)]
        write(backend, s, jobs[1].id, field, value)
        worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
        try:
            worker.drain()
        finally:
            worker.close()
        assert len(ran) == 2
        assert [s.get(j.id).state for j in (jobs[0], jobs[2])] == [  # type: ignore[union-attr]
            JobState.SUCCEEDED,
            JobState.SUCCEEDED,
        ]
        write(backend, s, jobs[1].id, field, {"created_at": str(1), "max_attempts": "3"}[field])
        dead = s.get(jobs[1].id)
        assert dead is not None and dead.state is JobState.DEAD, dead
        assert dead.last_error is not None
        assert dead.last_error.startswith("the job's stored record cannot be read (")
        assert s.claim(5, LEASE) == []  # nothing left to take: no spin on it


def test_the_api_answers_a_huge_int_result_and_the_tenants_list(rt: Runtime, api: Api) -> None:
    """Through app.py on a real SQLite file: the open defect's own case."""
    job_id = api.enqueue({"type": "echo", "payload": {"n": 1}})
    [claimed] = rt.store.claim(1, LEASE, ids=[job_id])
    assert claimed.lease_token is not None
    rt.store.finish([Completion(job_id, claimed.lease_token, JobState.SUCCEEDED, "ok")])
    write("sqlite", rt.store, job_id, "result", HUGE_INT)
    status = api.get(f"/status/{job_id}")
    assert status.status == 200, status.body
    assert status.json["state"] == "succeeded"
    assert status.json["result"]["error"] == "result_unreadable"
    listed = api.get("/jobs")
    assert listed.status == 200, listed.body
    assert [j["id"] for j in listed.json["jobs"]] == [job_id]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_state_set_by_hand_is_left_out_of_the_counts_and_the_scrape(
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLite's triggers count a row under the state it was set to: the scrape
    (queue_totals) and the dashboard's overview (state_counts) raised on 'bogus'."""
    with open_backend(backend, clock, tmp_path, request) as s:
        jobs = [added(s, clock) for _ in range(3)]
        write(backend, s, jobs[1].id, "state", "bogus")
        # Redis counts what its scripts moved (a hand edit moves none): no raise is all.
        expected = {("default", JobState.QUEUED): 2 if backend == "sqlite" else 3}
        assert s.state_counts() == expected
        assert s.state_counts("default") == expected
        assert s.queue_totals([], 10).counts == expected
        assert s.counts() == expected
    if backend == "sqlite":
        assert "in state 'bogus', which Spool does not know" in caplog.text


def not_utf8(store: Any, job_id: str, column: str, hex_bytes: str) -> None:
    """Store TEXT bytes that are not UTF-8, as another program (or sqlite3 by hand) may."""
    with store._write() as db:
        db.execute(
            f"UPDATE jobs SET {column} = CAST(x'{hex_bytes}' AS TEXT) WHERE id = ?", (job_id,)
        )


def test_sqlite_text_that_is_not_utf8_fails_no_read_and_no_claim(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, reg: Registry
) -> None:
    """sqlite3 failed the whole fetch on one such value: 503 "try again shortly" for
    good on the job, every page of the list holding it, and every claim of its batch."""
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=3)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return payload

    with open_backend("sqlite", clock, tmp_path, request) as s:
        jobs = [added(s, clock) for _ in range(4)]
        not_utf8(s, jobs[0].id, "payload", "7b226e223a2022ff227d")  # {"n": "\xff"}
        not_utf8(s, jobs[1].id, "last_error", "6f6b20ff")
        not_utf8(s, jobs[2].id, "type", "6563686fff")
        bad_payload = s.get(jobs[0].id)
        assert bad_payload is not None and isinstance(bad_payload.payload, dict)
        assert bad_payload.payload["message"] == (
            "its payload, kept in the job's record, is not valid UTF-8 (byte 7)"
        )
        shown = s.get(jobs[1].id)
        assert shown is not None and shown.last_error == "ok \ufffd"
        with pytest.raises(JobUnreadable, match="its id, tenant, type or queue is not text"):
            s.get(jobs[2].id)
        listed = [j.id for j in s.list_jobs(JobQuery()).jobs]
        assert listed == [jobs[0].id, jobs[1].id, jobs[3].id]
        worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
        try:
            worker.drain()
        finally:
            worker.close()
        assert ran == [{"n": 1}, {"n": 1}]
        states = [s.get(j.id) for j in (jobs[0], jobs[1], jobs[3])]
        assert [j.state for j in states if j is not None] == [
            JobState.DEAD,
            JobState.SUCCEEDED,
            JobState.SUCCEEDED,
        ]


def test_a_payload_sent_in_the_shape_of_a_marker_still_runs(
    store: tuple[str, JobStore], clock: FakeClock, reg: Registry
) -> None:
    """Only a value the store could not read is refused a run, never a look-alike."""
    _, s = store
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=1)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return "ok"

    look_alike = {
        "error": "payload_unreadable",
        "message": "its payload, kept in the job's record, is not valid JSON (x)",
    }
    job = s.add([new_job(clock, payload=look_alike)])[0].job
    worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    assert ran == [look_alike]
    done = s.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED


def test_a_damaged_attempt_history_is_named(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`spool status`, GET /status?attempts=true and the dashboard's job page read it:
    a bare JSONDecodeError was a 500 internal_error naming nothing."""
    with open_backend("sqlite", clock, tmp_path, request) as s:
        job_id = finished(s, clock)
        write("sqlite", s, job_id, "attempt_log", '[{"n": 1')
        with pytest.raises(JobUnreadable, match=f"job {job_id}'s stored record cannot be read"):
            s.attempts(job_id)


@pytest.mark.parametrize("field", ["tenant", "type", "queue", "attempts"])
def test_a_redis_hash_without_an_index_field_does_not_stall_the_queue(
    clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest, reg: Registry, field: str
) -> None:
    """The CLAIM script failed on such a hash (ResponseError: attempt to concatenate
    'queue', a boolean value) for every claim: no job behind it ran, ever."""
    ran: list[Any] = []

    @reg.handler("echo", max_attempts=3)
    def echo(payload: dict[str, Any]) -> Any:
        ran.append(payload)
        return payload

    with open_backend("redis", clock, tmp_path, request) as s:
        jobs = [added(s, clock) for _ in range(3)]
        write("redis", s, jobs[0].id, field, None if field != "attempts" else "x")
        worker = Worker(s, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
        try:
            worker.drain()
        finally:
            worker.close()
        assert ran == [{"n": 1}, {"n": 1}]
        stored = s.client.hgetall(s._p + "j:" + jobs[0].id)  # type: ignore[attr-defined]
        assert stored[b"state"] == b"dead"
        assert stored[b"last_error"].startswith(b"the job's stored record cannot be read (")
        with pytest.raises(JobUnreadable, match=jobs[0].id):
            s.get(jobs[0].id)
        assert s.claim(5, LEASE) == []
