"""Bulk redrive bounded by `died_before`: only jobs dead when the caller began.

Before: each bulk redrive listed dead jobs from the oldest, so a job that one call
redrove and that died again came back in the next call: `spool dlq redrive --all`
(local and remote) redrove it twice, and its "nothing new" stop ended the run with
older dead jobs never redriven. The bound comes from the first call's answer (the
server's clock) and goes back with every later call.

"Dies again" is played without timing: after each bulk redrive a fast-failing
worker is stood in for by claiming the jobs just redriven and finishing them dead,
on a FakeClock moved forward first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client as ChaliceClient

import app as spool_app
from chalicelib.api.schemas import RedriveAllResult
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import Job, JobState
from chalicelib.service import REDRIVE_STEP, Service
from chalicelib.storage import open_store
from chalicelib.storage.base import JobStore
from chalicelib.storage.sqlite import SQLiteStore
from local import cli, remote_cli
from tests.apikit import KEY_A, KEY_B, TENANT_A, TENANT_B, Api, installed, settings_for
from tests.redrive_support import MICRO, add, claim, dead, kill, local_cli, serving, state

# -- helpers ---------------------------------------------------------------------


class DiesAgain:
    """Service.redriving (what POST /dlq/redrive calls), and then every job it
    redrove dies again a second later (a handler that fails at once, run by a worker
    while the caller is between calls). Records what each call redrove and the bound
    it was given."""

    def __init__(self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = clock
        self.calls: list[tuple[datetime | None, list[str]]] = []
        original = Service.redriving

        def redriving(service: Service, *args: Any, **kwargs: Any) -> Any:
            moved = list(original(service, *args, **kwargs))
            ids = [j.id for j in moved]
            self.calls.append((kwargs.get("died_before"), ids))
            self.clock.advance(1)
            kill(service.store, claim(service.store, ids), ids)
            self.clock.advance(1)
            return iter(moved)

        monkeypatch.setattr(Service, "redriving", redriving)

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(i for _, ids in self.calls for i in ids)


# -- the service, on every store ---------------------------------------------------


@pytest.fixture
def svc(store: JobStore, handlers: Registry) -> Service:
    return Service(store, handlers)


def test_only_jobs_dead_before_the_bound_move_and_newer_ones_do_not_stop_the_paging(
    svc: Service, store: JobStore, clock: FakeClock
) -> None:
    """The oldest jobs died last: skipping them must not end the listing early."""
    old = add(store, clock, "t1", 3)
    clock.advance(1)
    young = add(store, clock, "t1", 3)
    theirs = add(store, clock, "t2", 1)
    tokens = claim(store, [*old, *young, *theirs])
    clock.advance(1)
    kill(store, tokens, [*young, *theirs])
    bound = clock.now() + timedelta(seconds=1)
    clock.advance(3)
    died = clock.now()
    kill(store, tokens, old)

    first = svc.redrive_all("t1", limit=2, died_before=bound)
    assert [j.id for j in first] == young[:2]  # after a page of skipped jobs
    assert [j.id for j in svc.redrive_all("t1", limit=2, died_before=bound)] == young[2:]
    assert svc.redrive_all("t1", limit=2, died_before=bound) == []
    assert {state(store, i) for i in old} == {JobState.DEAD}
    assert state(store, theirs[0]) is JobState.DEAD  # another tenant's: never
    assert svc.redrive_all("t1", died_before=died) == []  # strictly before
    assert sorted(j.id for j in svc.redrive_all("t1", died_before=died + MICRO)) == sorted(old)


def test_calls_that_pass_the_first_bound_back_redrive_each_job_once(
    svc: Service, store: JobStore, clock: FakeClock
) -> None:
    """What `spool dlq redrive --all` does, in chunks of 3 over 8 dead jobs that all
    die again as soon as they are redriven."""
    jobs = dead(store, clock, "t1", 8)
    clock.advance(1)
    bound = svc.redrive_bound()
    assert bound == clock.now() + MICRO  # everything dead by the server's now
    moved: list[str] = []
    for _ in range(10):
        batch = [j.id for j in svc.redrive_all("t1", limit=3, died_before=bound)]
        if not batch:
            break
        moved.extend(batch)
        clock.advance(1)
        kill(store, claim(store, batch), batch)  # dead again, after the bound
        clock.advance(1)
    assert moved == jobs  # oldest first, each once
    assert {state(store, i) for i in jobs} == {JobState.DEAD}


# -- `spool dlq redrive --all`, local ---------------------------------------------------


def test_local_redrive_all_redrives_every_job_dead_at_its_start_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """More dead jobs than one chunk (500); each redriven job dies again at once.
    Before: the second call redrove the first 500 again, saw nothing new and
    stopped; the last 100 were never redriven."""
    url, clock = local_cli(tmp_path, monkeypatch)
    store = open_store(url, clock)
    try:
        jobs = dead(store, clock, "default", 600)  # cli.REDRIVE_CHUNK is 500
    finally:
        store.close()
    clock.advance(1)
    dies = DiesAgain(clock, monkeypatch)

    assert cli.main(["dlq", "redrive", "--all", "--json"]) == 0
    out, err = capsys.readouterr()
    assert dies.counts() == dict.fromkeys(jobs, 1)  # each once, none left
    assert json.loads(out)["ids"] == jobs and f"redriven {len(jobs)} job(s)" in err
    bounds = {bound for bound, _ in dies.calls}
    assert len(dies.calls) >= 2 and len(bounds) == 1  # one bound, from the start
    [bound] = bounds
    assert bound is not None and bound <= clock.now()


def live_jobs() -> int:
    """Whole Job objects alive in this process right now, of those made since
    `counting_from_here` began (gc.get_objects leaves frozen objects out)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Job))


@contextlib.contextmanager
def counting_from_here() -> Iterator[None]:
    """Freeze every object alive now, for the block: gc.collect and gc.get_objects
    then walk only what the block made, not all an xdist worker's earlier tests left
    (each count walked them all: 32 s for this test in the suite, 14 s alone). A Job
    made before the block is none of the redrive's doing, so the counts lose nothing."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_local_redrive_all_holds_a_few_steps_of_whole_jobs_not_a_chunk(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was: each call of the command's loop (service.redrive_all) kept REDRIVE_CHUNK
    (500) whole redriven jobs in a list to read their ids, each job possibly with a
    256 KiB payload. Now it walks service.redriving and keeps ids: when the store is
    asked to redrive a step, the whole jobs alive are the page listed, its due part
    and the step yielded before it, never the chunk."""
    url, clock = local_cli(tmp_path, monkeypatch)
    store = open_store(url, clock)
    try:
        jobs = dead(store, clock, "default", cli.REDRIVE_CHUNK + 20)
    finally:
        store.close()
    clock.advance(1)
    alive: list[int] = []
    original = SQLiteStore.redrive

    def redrive(
        self: SQLiteStore, ids: Any, tenant: str | None = None, *more: Any, **kw: Any
    ) -> Any:
        alive.append(live_jobs())
        return original(self, ids, tenant, *more, **kw)

    monkeypatch.setattr(SQLiteStore, "redrive", redrive)
    with counting_from_here():
        assert cli.main(["dlq", "redrive", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == jobs
    assert len(alive) >= len(jobs) // REDRIVE_STEP
    assert max(alive) <= 3 * REDRIVE_STEP, alive


# -- over HTTP: the route, the remote CLI and both clients ---------------------------


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, JobStore, FakeClock]]:
    with serving(tmp_path, monkeypatch) as served:
        yield served


def test_remote_redrive_all_passes_the_first_answers_bound_back(
    served: tuple[str, JobStore, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, store, clock = served
    jobs = dead(store, clock, TENANT_A, remote_cli.REDRIVE_CHUNK + 50)
    theirs = dead(store, clock, TENANT_B, 2)
    clock.advance(1)
    started = clock.now()
    dies = DiesAgain(clock, monkeypatch)

    argv = ["dlq", "redrive", "--all", "--json", "--url", url, "--key", KEY_A]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert dies.counts() == dict.fromkeys(jobs, 1)  # each once, none left
    assert sorted(json.loads(out)["ids"]) == sorted(jobs) and f"redriven {len(jobs)}" in err
    bounds = [bound for bound, _ in dies.calls]
    assert len(bounds) >= 2 and bounds == [started + MICRO] * len(bounds)
    assert {state(store, i) for i in theirs} == {JobState.DEAD}


def test_the_clients_send_the_bound_and_read_it_back(
    served: tuple[str, JobStore, FakeClock],
) -> None:
    from spool_client import Client
    from spool_client.aio import AsyncClient

    url, store, clock = served
    before = dead(store, clock, TENANT_A, 3)
    clock.advance(10)
    after = dead(store, clock, TENANT_A, 2)
    clock.advance(10)
    with Client(url, KEY_A) as spool:
        with pytest.raises(TypeError):
            spool.redrive_all(died_before="2030-01-01T00:00:00Z")  # type: ignore[arg-type]
        first = spool.redrive_all(limit=2, died_before=clock.now() - timedelta(seconds=5))
        assert first.ids == before[:2] and first.redriven == 2
        assert first.died_before == clock.now() - timedelta(seconds=5)
        plain = spool.redrive_all(limit=1)
        assert plain.ids == [before[2]] and plain.died_before == clock.now() + MICRO

    async def rest() -> tuple[Any, Any]:
        async with AsyncClient(url, KEY_A) as aspool:
            bound = datetime(2000, 1, 1, tzinfo=UTC)
            none = await aspool.redrive_all(died_before=bound)
            return none, await aspool.redrive_all(died_before=clock.now())

    none, last = asyncio.run(rest())
    assert (none.ids, none.died_before) == ([], datetime(2000, 1, 1, tzinfo=UTC))
    assert last.ids == after and last.died_before == clock.now()


# -- POST /dlq/redrive ------------------------------------------------------------


@pytest.fixture
def api_on(tmp_path: Path) -> Iterator[tuple[Api, JobStore, FakeClock]]:
    clock = FakeClock()
    with installed(settings_for(tmp_path), clock) as rt, ChaliceClient(spool_app.app) as client:
        yield Api(client), rt.store, clock


def test_the_route_honours_and_echoes_the_bound(
    api_on: tuple[Api, JobStore, FakeClock],
) -> None:
    api, store, clock = api_on
    start = clock.now()
    early = dead(store, clock, TENANT_A, 2)
    clock.advance(60)
    late = dead(store, clock, TENANT_A, 1)
    clock.advance(60)
    given = (start + timedelta(seconds=30)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    reply = api.post("/dlq/redrive", {"died_before": given.isoformat()})
    assert reply.status == 200, reply.body
    body = RedriveAllResult.model_validate(reply.json)
    assert body.ids == early and body.redriven == 2
    assert reply.json["died_before"] == (start + timedelta(seconds=30)).isoformat()  # UTC
    assert state(store, late[0]) is JobState.DEAD


@pytest.mark.parametrize("body", [None, {}, {"died_before": None}, {"queue": "default"}])
def test_without_a_bound_the_route_echoes_the_servers_now(
    api_on: tuple[Api, JobStore, FakeClock], body: dict[str, Any] | None
) -> None:
    """The server's clock at the start of the call (one microsecond on, so a job that
    died at that very instant counts as dead at the start)."""
    api, store, clock = api_on
    jobs = dead(store, clock, TENANT_A, 2)  # dead at the server's now, to the microsecond
    reply = api.post("/dlq/redrive", body)
    assert reply.status == 200, reply.body
    assert reply.json["ids"] == jobs
    assert datetime.fromisoformat(reply.json["died_before"]) == clock.now() + MICRO


BAD_BOUNDS: list[tuple[Any, str]] = [
    (1_800_000_000, "must be a string"),  # a number: Unix seconds are not taken
    (1.8e9, "must be a string"),
    (True, "must be a string"),
    (["2030-01-01T00:00:00Z"], "must be a string"),
    ({"at": "2030-01-01T00:00:00Z"}, "must be a string"),
    ("2030-01-01T00:00:00", "with a time zone"),  # no offset
    ("2030-01-01 00:00:00Z", "RFC 3339"),
    ("2030-01-01T00:00Z", "RFC 3339"),
    ("soon", "RFC 3339"),
    ("", "RFC 3339"),
    ("2030-02-30T00:00:00Z", "not a date-time that exists"),
    ("2030-01-01T00:00:00+24:00", "not a date-time that exists"),
    ("9999-12-31T23:59:59-14:00", "outside the range"),  # far out of range, in UTC
    ("0001-01-01T00:00:00+14:00", "outside the range"),
    ("0000-01-01T00:00:00Z", "not a date-time that exists"),
]


@pytest.mark.parametrize(("value", "says"), BAD_BOUNDS)
def test_a_bad_bound_is_a_400_that_says_why_and_moves_nothing(
    api_on: tuple[Api, JobStore, FakeClock], value: Any, says: str
) -> None:
    api, store, clock = api_on
    [job] = dead(store, clock, TENANT_A, 1)
    reply = api.post("/dlq/redrive", {"died_before": value})
    assert reply.status == 400, reply.body
    error = reply.json["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("died_before") and says in error["message"]
    assert error["details"]["field"] == "died_before"
    assert state(store, job) is JobState.DEAD


def test_one_tenants_bound_never_redrives_another_tenants_jobs(
    api_on: tuple[Api, JobStore, FakeClock],
) -> None:
    api, store, clock = api_on
    theirs = dead(store, clock, TENANT_B, 2)
    clock.advance(5)
    mine = dead(store, clock, TENANT_A, 1)
    clock.advance(5)
    late = {"died_before": "9999-01-01T00:00:00Z"}
    assert api.post("/dlq/redrive", late).json["ids"] == mine
    assert {state(store, i) for i in theirs} == {JobState.DEAD}
    bound = clock.now().isoformat()
    assert api.post("/dlq/redrive", {"died_before": bound}, key=KEY_B).json["ids"] == theirs
