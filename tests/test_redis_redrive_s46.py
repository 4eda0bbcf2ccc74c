"""The Redis store's redrive of explicit ids (POST /dlq/redrive, `spool dlq redrive ID...`).

Found from outside: 100 dead jobs of 250 KB payloads redriven by id held one EVALSHA
for 16 ms (about 160 ms for a chunk of 1,000 ids), and Redis runs one script at a
time: every tenant's enqueue and every worker's claim waited behind it. The REDRIVE
script read each moved job whole (payload included) to hand it back. These tests pin
that the script now reads only the fields it needs, while the answer is still the
whole job, in the order asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.base import JobStore
from tests.backends import open_backend
from tests.factories import new_job
from tests.redis_support import script_commands

LEASE = 30.0
BIG = "x" * 4096  # a payload whose every copy is easy to see in MONITOR's lines


@pytest.fixture
def store(clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    with open_backend("redis", clock, tmp_path, request) as opened:
        yield opened


def _dead(store: JobStore, clock: FakeClock, tenant: str, n: int) -> list[str]:
    """n dead jobs of the tenant, each with a large payload and a large result."""
    added = store.add(
        [
            new_job(clock, tenant=tenant, max_attempts=1, payload={"i": i, "big": BIG})
            for i in range(n)
        ]
    )
    ids = [r.job.id for r in added]
    claimed = store.claim(n, LEASE)
    done = [
        Completion(j.id, j.lease_token or "", JobState.DEAD, result={"big": BIG}, error="no")
        for j in claimed
    ]
    assert store.finish(done) == [True] * n
    return ids


def test_the_redrive_script_reads_no_payload_or_result(store: Any, clock: FakeClock) -> None:
    """The script's commands name neither payload nor result to read: its time does not
    grow with them (it only deletes the result, as a redrive must)."""
    ids = _dead(store, clock, "acme", 8)
    moved: list[Any] = []
    commands = script_commands(store, lambda: moved.extend(store.redrive(ids, "acme")))
    assert [j.id for j in moved] == ids
    assert commands, "the redrive ran a script"
    reads = [c for c in commands if c.startswith(("HMGET", "HGET", "HGETALL", "HVALS"))]
    assert reads, commands
    assert not [c for c in reads if " payload" in c or " result" in c], reads


def test_the_answer_is_still_each_whole_job_in_the_order_asked(
    store: Any, clock: FakeClock
) -> None:
    """Payload and all, result gone, queued, each once; another tenant's and live
    jobs skipped, as before."""
    ids = _dead(store, clock, "acme", 5)
    other = _dead(store, clock, "beta", 1)
    live = store.add([new_job(clock, tenant="acme")])[0].job.id
    asked = [ids[3], other[0], ids[0], live, ids[3], "nope", ids[4]]
    moved = store.redrive(asked, "acme")
    assert [j.id for j in moved] == [ids[3], ids[0], ids[4]]
    for job in moved:
        assert job.state is JobState.QUEUED
        assert job.attempts == 0
        assert job.result is None
        assert job.finished_at is None
        assert job.payload == {"i": ids.index(job.id), "big": BIG}
        assert store.get(job.id) == job
    assert store.get(other[0]).state is JobState.DEAD


def test_a_job_deleted_between_its_redrive_and_its_payload_read_answers_an_empty_payload(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payloads are read after the script: a job gone by then (run, dead again and
    discarded in between) is still answered as moved, with {} for its payload, not a
    500 for the whole redrive."""
    ids = _dead(store, clock, "acme", 2)
    script = store._call

    def then_deleted(name: str, args: Any, read: bool = False) -> Any:
        answer = script(name, args, read)
        if name == "REDRIVE":
            store.client.delete(store._p + "j:" + ids[0])
        return answer

    monkeypatch.setattr(store, "_call", then_deleted)
    moved = store.redrive(ids, "acme")
    assert [j.id for j in moved] == ids
    assert moved[0].payload == {}
    assert moved[1].payload == {"i": 1, "big": BIG}
