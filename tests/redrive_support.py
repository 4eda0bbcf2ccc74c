"""What tests/test_redrive_bound.py and tests/test_redrive_interrupted.py both stand on:
dead jobs made without a worker, the `spool` command on a SQLite file, app.py served
on a real socket, and a call that fails on its Nth use.

"Dies again" is played without timing: a fast-failing worker is stood in for by
claiming the jobs and finishing them dead, on a FakeClock moved forward first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.runtime import build_runtime
from chalicelib.storage.base import JobStore
from local import cli
from local.server import ChaliceWSGI, Server
from tests.apikit import installed, settings_for
from tests.factories import new_job, token

MICRO = timedelta(microseconds=1)


def add(store: JobStore, clock: FakeClock, tenant: str, n: int) -> list[str]:
    """n queued jobs of `tenant`, oldest first: lists are ordered by (created_at,
    id), and jobs added at one instant would be ordered by their random ids."""
    ids: list[str] = []
    for _ in range(n):
        [added] = store.add([new_job(clock, tenant=tenant)])
        ids.append(added.job.id)
        clock.advance(MICRO.total_seconds())
    return ids


def claim(store: JobStore, ids: Sequence[str]) -> dict[str, str]:
    """Lease exactly these jobs (nothing else is due in these tests): id -> token."""
    want, tokens = set(ids), dict[str, str]()
    for _ in range(100):  # DynamoDB hands them over a few SQS messages at a time
        if len(tokens) == len(want):
            break
        for job in store.claim(len(want) - len(tokens), 300):
            tokens[job.id] = token(job)
    assert set(tokens) == want
    return tokens


def kill(store: JobStore, tokens: dict[str, str], ids: Sequence[str]) -> None:
    done = store.finish([Completion(i, tokens[i], JobState.DEAD) for i in ids])
    assert all(done)


def dead(store: JobStore, clock: FakeClock, tenant: str, n: int) -> list[str]:
    ids = add(store, clock, tenant, n)
    kill(store, claim(store, ids), ids)
    return ids


def state(store: JobStore, job_id: str) -> JobState:
    job = store.get(job_id)
    assert job is not None
    return job.state


def local_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, FakeClock]:
    """The `spool` command on its own SQLite file and a FakeClock (never a server's
    SPOOL_URL from the environment): the store's URL and the clock, for the test to
    fill the store through open_store(url, clock)."""
    url = f"sqlite:///{tmp_path}/local.db"
    monkeypatch.setenv("SPOOL_STORE_URL", url)
    monkeypatch.delenv("SPOOL_URL", raising=False)
    clock = FakeClock()
    monkeypatch.setattr(cli, "build_runtime", lambda: build_runtime(None, clock))
    return url, clock


@contextmanager
def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, JobStore, FakeClock]]:
    """app.py behind a real socket in this process, on a FakeClock, with no worker:
    its URL, store and clock. The tests name the server and key on the command line,
    so no SPOOL_URL or SPOOL_API_KEY from the environment stands in for them."""
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)
    clock = FakeClock()
    with installed(settings_for(tmp_path), clock) as rt:
        server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=2)
        server.start()
        try:
            yield server.url, rt.store, clock
        finally:
            server.stop()


def fail_on_call(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, at: int, failure: BaseException
) -> None:
    """owner.name raises `failure` on its `at`th call (counted from 1) and runs as
    before on every other: a command cut short part-way through."""
    original: Callable[..., Any] = getattr(owner, name)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == at:
            raise failure
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
