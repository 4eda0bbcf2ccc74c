"""The backlog quota is a hard cap across API processes (SQLite, Postgres, Redis).

Each API process checked the tenant's waiting count and then added the jobs, under a
lock of its own only: two processes (`spool serve --processes N`, Lambda containers)
could both find the last room, and a backlog of 20 held 21 jobs (helper G, stop 45,
measured from outside). Now the store counts and inserts in one atomic step.

Here several processes, each the whole HTTP edge (app.py through chalice's test
client), send single-job requests together at a barrier, many requests for few
rooms, round after round (each round a tenant of its own): no round may end with more
jobs waiting than the backlog, and each fills it exactly (a refusal only when full).
The same for redrives of dead jobs, which the backlog caps too.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage import open_store
from tests.factories import new_job, token

PROCESSES = 4
ROUNDS = 8
TRIES = 3  # single-job requests per process per round: 12 for 2 rooms
BACKLOG = 2
KEYS = {f"key-round-{r:02d}-0123456789": f"round{r}" for r in range(ROUNDS)}


def _requests_in_process(
    store_url: str,
    barrier: Any,
    out: Any,
    dead: list[list[str]] | None,
) -> None:
    """One API process: ROUNDS rounds of TRIES requests, each round after the barrier:
    enqueues, or with `dead` (this process's dead jobs per round) their redrives."""
    from chalice.test import Client

    from tests.apikit import Api, installed, settings_for

    settings = settings_for(
        Path("."),
        store_url=store_url,
        api_keys=",".join(f"{k}={t}" for k, t in KEYS.items()),
        extra={"SPOOL_TENANT_LIMITS": json.dumps({"*": {"backlog": BACKLOG}})},
    )
    statuses: list[list[int]] = []
    try:
        with installed(settings):
            import app as spool_app

            with Client(spool_app.app, stage_name="local") as client:
                api = Api(client)
                job = {"type": "echo", "payload": {}, "delay": 3600}
                api.post("/enqueue", job, key="no-such-key-0123456789")  # warm the path
                for r, key in enumerate(KEYS):
                    sent: list[tuple[str, Any]]
                    if dead is None:
                        sent = [("/enqueue", job)] * TRIES
                    else:
                        sent = [(f"/dlq/{job_id}/redrive", None) for job_id in dead[r]]
                    barrier.wait(60)
                    statuses.append([api.post(path, body, key=key).status for path, body in sent])
    finally:
        out.put(statuses)


def _dead_jobs(url: str) -> list[list[list[str]]]:
    """TRIES dead jobs per process per round (each round's tenant's): [process][round]."""
    store = open_store(url)
    clock = FakeClock(store.clock.now())
    try:
        per_round = []
        for tenant in KEYS.values():
            made = [new_job(clock, tenant=tenant, max_attempts=1) for _ in range(PROCESSES * TRIES)]
            per_round.append([r.job.id for r in store.add(made)])
        while claimed := store.claim(100, 60):
            done = [Completion(j.id, token(j), JobState.DEAD, error="no") for j in claimed]
            assert all(store.finish(done))
        assert all(store.waiting_count(t) == 0 for t in KEYS.values())
    finally:
        store.close()
    return [[ids[p * TRIES : (p + 1) * TRIES] for ids in per_round] for p in range(PROCESSES)]


@contextlib.contextmanager
def _store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/spool.db"
    elif backend == "postgres":
        from tests.pg_support import fresh_schema

        with fresh_schema() as url:
            yield url
    else:
        from tests.redis_support import fresh_prefix

        with fresh_prefix() as url:
            yield url


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("action", ["enqueue", "redrive"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"]
)
def test_processes_together_never_pass_the_backlog(
    backend: str, action: str, tmp_path: Path
) -> None:
    """Enqueues, or single redrives of distinct dead jobs (they count against the
    backlog as well), from every process at once."""
    with _store_url(backend, tmp_path) as url:
        open_store(url).close()  # made (and migrated) before the processes race to
        dead = _dead_jobs(url) if action == "redrive" else [None] * PROCESSES
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(PROCESSES)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_requests_in_process, args=(url, barrier, out, dead[p]))
            for p in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        try:
            answers = [out.get(timeout=180) for _ in procs]
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
        store = open_store(url)
        try:
            waiting = [store.waiting_count(tenant) for tenant in KEYS.values()]
        finally:
            store.close()
    assert all(len(rounds) == ROUNDS for rounds in answers), answers
    ok = 201 if action == "enqueue" else 200
    for r in range(ROUNDS):
        statuses = sorted(s for rounds in answers for s in rounds[r])
        assert statuses == [ok] * BACKLOG + [429] * (PROCESSES * TRIES - BACKLOG), (r, statuses)
    assert waiting == [BACKLOG] * ROUNDS
