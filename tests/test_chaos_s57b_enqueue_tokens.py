"""A tenant's enqueue tokens pay for the jobs stored, each once: every way out of
POST /enqueue after the take that stores a job costs that job's token, and every way
that stores nothing new costs none.

The edge takes a request's tokens before the store writes (so a refused request
leaves no job), and gave them back only for a store's backlog refusal and a raced
repeat (tests/test_chaos_s56n_backlog_refusal_tokens.py). Kept, before this:

- a 409 after a race: two requests under one key with different bodies, both finding
  the key unstored; the loser stored nothing but paid a token, where the same 409
  without the race takes none (the key is found stored before the take);
- a batch's 409: the keyed jobs are added first, and a key naming another job ends
  the batch there; the jobs without a key were never stored but were paid for;
- every 503 of the store's add: refused before anything was written, or "may have
  been applied" (the connection lost mid-write). A client told to retry with the
  same idempotency key paid again for the retry that stored the job (two tokens for
  one job), and nothing at all when the retry was answered by the job the lost write
  had stored;
- a store's other refusals (DynamoDB's 413 for a payload too big with no bucket) and
  any exception (a 500);
- and a mixed batch whose keyed jobs were stored before the store refused its other
  jobs for the backlog gave back the stored jobs' tokens too: they cost nothing.

The faults are the store's own errors raised from its add, before or after the real
write, on a real SQLite file and a real Postgres schema, through the HTTP edge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib.errors import PayloadTooLarge, StoreUnavailable, UncertainWrite
from chalicelib.models import AddResult, NewJob
from chalicelib.runtime import Runtime
from chalicelib.storage.base import Backlog, BacklogFull
from tests.apikit import TENANT_A, Api, installed, settings_for
from tests.pg_support import sqlite_or_postgres

BURST = 6
RATE_ONLY = {TENANT_A: {"rate": "1/h", "burst": BURST}}
WITH_BACKLOG = {TENANT_A: {"rate": "1/h", "burst": BURST, "backlog": 50}}
LIMITS = [RATE_ONLY, WITH_BACKLOG]
LIMIT_IDS = ["rate", "rate-and-backlog"]
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

KEYED = {"type": "echo", "idempotency_key": "k", "payload": {"n": 1}, "delay": 600}
PLAIN = {"type": "echo", "delay": 600}

AddFn = Callable[..., list[AddResult]]


@contextmanager
def edge(backend: str, limits: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Api, Runtime]]:
    extra = {"SPOOL_TENANT_LIMITS": json.dumps(limits)}
    with (
        sqlite_or_postgres(backend, tmp_path) as url,
        installed(settings_for(tmp_path, store_url=url, extra=extra)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        yield Api(client), rt


def stored(rt: Runtime) -> int:
    """The tenant's jobs in the store (every one is waiting: delayed, no worker)."""
    return rt.store.waiting_count(TENANT_A)


def tokens_left(api: Api) -> int:
    """Enqueue until the bucket refuses (the rate refills one an hour: none here)."""
    for spent in range(BURST + 1):
        reply = api.post("/enqueue", PLAIN)
        if reply.status == 429:
            assert "enqueue rate limit" in reply.json["error"]["message"], reply.body
            return spent
        assert reply.status == 201, reply.body
    raise AssertionError(f"more than the burst ({BURST}) enqueued")


def assert_each_stored_job_paid_once(api: Api, rt: Runtime) -> None:
    jobs = stored(rt)
    assert tokens_left(api) == BURST - jobs, f"{jobs} jobs stored"


def failing_add(
    monkeypatch: pytest.MonkeyPatch,
    rt: Runtime,
    fault: Callable[[], BaseException],
    apply: bool,
    call: int = 1,
) -> None:
    """Make the store's `call`-th add from now raise `fault()`: after the real write
    (`apply`, a reply lost) or instead of it (refused before anything was written)."""
    real: AddFn = rt.store.add
    calls = [0]

    def add(jobs: Sequence[NewJob], cap: Backlog | None = None) -> list[AddResult]:
        calls[0] += 1
        if calls[0] != call:
            return real(jobs) if cap is None else real(jobs, cap)
        if apply:
            real(jobs) if cap is None else real(jobs, cap)
        raise fault()

    monkeypatch.setattr(rt.store, "add", add)


def lost() -> StoreUnavailable:
    return UncertainWrite("the database connection failed before it answered", retry_after=2)


def refused() -> StoreUnavailable:
    return StoreUnavailable("cannot reach the job store; try again shortly", retry_after=5)


def too_big() -> PayloadTooLarge:
    return PayloadTooLarge("payload over 400000 bytes and no bucket is configured", {"index": 0})


def broken() -> RuntimeError:
    return RuntimeError("a bug in the store's add")


@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_409_costs_nothing_raced_or_not(
    backend: str, limits: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key reused with another body is 409 whether or not the first request was
    still being stored when the second counted the key: neither stored anything."""
    from chalicelib.api.throttle import EnqueueGate

    with edge(backend, limits, tmp_path) as (api, rt):
        api.enqueue(KEYED)
        other = {**KEYED, "payload": {"n": 2}}
        plain = api.post("/enqueue", other)
        assert plain.status == 409, plain.body
        # The race: the key counted unstored (as it was when both requests counted).
        monkeypatch.setattr(EnqueueGate, "_fresh", lambda self, tenant, keys: len(keys))
        raced = api.post("/enqueue", other)
        assert raced.status == 409, raced.body
        monkeypatch.undo()
        assert stored(rt) == 1
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_409_costs_the_keyed_jobs_it_stored_and_no_more(
    backend: str, limits: dict[str, Any], tmp_path: Path
) -> None:
    """The keyed jobs go first; a key naming another job ends the batch there, so its
    jobs without a key are not stored, and the new keyed job stands (details.stored)."""
    with edge(backend, limits, tmp_path) as (api, rt):
        api.enqueue(KEYED)
        batch = [
            {**KEYED, "idempotency_key": "new"},
            {**KEYED, "payload": {"n": 2}},
            PLAIN,
            PLAIN,
        ]
        reply = api.post("/enqueue", {"jobs": batch})
        assert reply.status == 409, reply.body
        assert [s["index"] for s in reply.json["error"]["details"]["stored"]] == [0]
        assert stored(rt) == 2
        assert_each_stored_job_paid_once(api, rt)


SHAPES: dict[str, dict[str, Any]] = {
    "single-keyed": KEYED,
    "single-plain": PLAIN,
    "batch-keyed": {"jobs": [KEYED, {**KEYED, "idempotency_key": "k2"}]},
    "batch-plain": {"jobs": [PLAIN, PLAIN]},
}
FAULTS = {
    "lost-after-the-write": (lost, True, 503),
    "lost-before-the-write": (lost, False, 503),
    "refused-at-connect": (refused, False, 503),
    "refused-413": (too_big, False, 413),
    "exception": (broken, False, 500),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_add_costs_the_jobs_it_stored(
    backend: str,
    limits: dict[str, Any],
    shape: str,
    fault: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the add's failure, the request costs the jobs the store holds after it:
    none when nothing was written, each written job once when the reply was lost."""
    make, apply, status = FAULTS[fault]
    with edge(backend, limits, tmp_path) as (api, rt):
        failing_add(monkeypatch, rt, make, apply)
        reply = api.post("/enqueue", SHAPES[shape])
        assert reply.status == status, reply.body
        monkeypatch.undo()
        assert stored(rt) == (len(SHAPES[shape].get("jobs", [None])) if apply else 0)
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("fault", ["refused-at-connect", "refused-413"])
def test_a_refusal_that_wrote_nothing_is_not_read_back(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that refused the add before writing (no connection, a payload too big)
    says what it stored: nothing. Reading the jobs back would meet the same outage and
    hold the 503 for a second pool timeout."""
    from chalicelib.api import throttle

    reads: list[Any] = []
    make, _, status = FAULTS[fault]
    with edge("sqlite", RATE_ONLY, tmp_path) as (api, rt):
        failing_add(monkeypatch, rt, make, False)

        def counted(*args: Any) -> dict[str, Any]:
            reads.append(args)
            return {}

        monkeypatch.setattr(throttle, "job_timings", counted)
        reply = api.post("/enqueue", KEYED)
        assert reply.status == status, reply.body
        monkeypatch.undo()
        assert reads == []
        assert stored(rt) == 0
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_job_whose_write_may_have_been_applied_costs_one_token_with_its_retry(
    backend: str,
    limits: dict[str, Any],
    applied: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the 503 tells the client to do: retry with the same idempotency key. The
    retry is answered by the job the lost write stored (a repeat, free), or stores it
    (one token): one token for the job either way, never two, never none."""
    with edge(backend, limits, tmp_path) as (api, rt):
        failing_add(monkeypatch, rt, lost, applied)
        first = api.post("/enqueue", KEYED)
        assert first.status == 503 and "may have been applied" in first.body.decode()
        monkeypatch.undo()
        retry = api.post("/enqueue", KEYED)
        assert retry.status == (200 if applied else 201), retry.body
        assert stored(rt) == 1
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("fault", ["lost-after-the-write", "lost-before-the-write"])
@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mixed_batch_whose_second_add_fails_costs_its_stored_keyed_jobs(
    backend: str,
    limits: dict[str, Any],
    fault: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of keyed and plain jobs is two adds: the keyed jobs stand when the
    plain ones' add fails (the retry completes the batch), and cost their tokens."""
    make, apply, _ = FAULTS[fault]
    with edge(backend, limits, tmp_path) as (api, rt):
        failing_add(monkeypatch, rt, make, apply, call=2)
        reply = api.post("/enqueue", {"jobs": [KEYED, PLAIN, PLAIN]})
        assert reply.status == 503, reply.body
        monkeypatch.undo()
        assert stored(rt) == (3 if apply else 1)
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mixed_batch_refused_for_the_backlog_after_its_keyed_add_pays_for_those(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process fills the backlog between the keyed add and the plain one: the
    store refuses the plain jobs (429), the keyed job stands and costs its token (all
    the request's tokens were given back, the stored job's too)."""
    with edge(backend, WITH_BACKLOG, tmp_path) as (api, rt):

        def full() -> BacklogFull:
            return BacklogFull(49, 2, 50)

        failing_add(monkeypatch, rt, full, False, call=2)
        reply = api.post("/enqueue", {"jobs": [KEYED, PLAIN, PLAIN]})
        assert reply.status == 429 and "backlog" in reply.json["error"]["message"], reply.body
        monkeypatch.undo()
        assert stored(rt) == 1
        assert_each_stored_job_paid_once(api, rt)


REFUSED_BEFORE_THE_TAKE = {
    "invalid": ({"type": "echo", "payload": []}, 422),
    "unknown-type": ({"type": "nope"}, 422),
    "admit-check": ({"type": "http_request", "payload": {"url": "https://example.com/"}}, 422),
    "batch-same-key-differs": ({"jobs": [KEYED, {**KEYED, "payload": {"n": 2}}]}, 409),
    "over-the-burst": ({"jobs": [PLAIN] * (BURST + 1)}, 413),
}


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_THE_TAKE))
@pytest.mark.parametrize("limits", LIMITS, ids=LIMIT_IDS)
def test_a_request_refused_before_the_store_costs_nothing(
    limits: dict[str, Any], case: str, tmp_path: Path
) -> None:
    """The checks that need no store answer before a token is taken: the handler's
    payload model and admit check, a batch's own key conflicts, a batch no wait fits."""
    body, status = REFUSED_BEFORE_THE_TAKE[case]
    with edge("sqlite", limits, tmp_path) as (api, rt):
        reply = api.post("/enqueue", body)
        assert reply.status == status, reply.body
        assert stored(rt) == 0
        assert_each_stored_job_paid_once(api, rt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_outcome_nobody_can_read_back_is_not_charged(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The write landed but its reply was lost, and the read that would tell fails
    too: the edge cannot know, so it charges nothing and says so in its log (the
    client's retry with its key is answered by the stored job, free)."""
    with edge(backend, RATE_ONLY, tmp_path) as (api, rt):
        failing_add(monkeypatch, rt, lost, True)

        def unreadable(job_id: str, tenant: str | None = None) -> None:
            raise lost()

        monkeypatch.setattr(rt.store, "get", unreadable)
        monkeypatch.setattr(rt.store, "timings", unreadable, raising=False)
        with caplog.at_level("WARNING", logger="spool.api"):
            reply = api.post("/enqueue", KEYED)
        assert reply.status == 503, reply.body
        assert "could not read back which jobs a failed enqueue stored" in caplog.text
        monkeypatch.undo()
        assert api.post("/enqueue", KEYED).status == 200
        assert stored(rt) == 1
        assert tokens_left(api) == BURST
