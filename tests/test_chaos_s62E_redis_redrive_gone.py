"""A Redis redrive racing a discard or a purge of the same dead job.

Found by tests/test_chaos_s62E_lifecycle_race.py (redis, with purges): a redrive
raised JobUnreadable ("job ?'s stored record cannot be read (KeyError: no id,
tenant, ... field in its hash); its operator must repair or delete the row"), a
500 job_unreadable on POST /dlq/{id}/redrive or /dlq/redrive, for a record nobody
damaged. The redrive reads its dead jobs before the script writes (so a damaged
record is refused before any write): state and owner first, then the rest of the
caller's own dead ones, in a second round trip. A job discarded (DELETE from the
dead letters, the dashboard's purge) or purged between those two reads read back as
a hash with no fields at all, which it took for a damaged one. A job gone is no
damage: the redrive skips it, as it skips an id it never found.

The discard is made to land exactly between the two reads (a hook on the store's
reads), so the interleaving is the same every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import JobUnreadable
from chalicelib.models import Completion, JobState
from tests.backends import open_backend
from tests.factories import new_job

T = TypeVar("T")
LEASE = 30.0


@pytest.fixture
def store(clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    with open_backend("redis", clock, tmp_path, request) as opened:
        yield opened


def _dead(store: Any, clock: FakeClock, n: int) -> list[str]:
    added = store.add([new_job(clock, tenant="acme", max_attempts=1) for _ in range(n)])
    ids = [result.job.id for result in added]
    done = [
        Completion(j.id, j.lease_token or "", JobState.DEAD, error="no")
        for j in store.claim(n, LEASE)
    ]
    assert store.finish(done) == [True] * n
    return ids


def _after_first_read(
    store: Any, monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]
) -> None:
    """Run `then` once, right after the store's first read (the redrive's read of
    state and owner), before its next one."""
    real = store._run
    pending = [then]

    def run(fn: Callable[[], T], read: bool = False) -> T:
        answer: T = real(fn, read)
        if read and pending:
            pending.pop()()
        return answer

    monkeypatch.setattr(store, "_run", run)


@pytest.mark.parametrize("tenant", ["acme", None], ids=["tenant", "operator"])
def test_a_dead_job_discarded_between_the_redrives_reads_is_skipped(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tenant: str | None
) -> None:
    gone, kept = _dead(store, clock, 2)
    _after_first_read(store, monkeypatch, lambda: store.discard([gone], "acme"))
    moved = store.redrive([gone, kept], tenant)
    assert [job.id for job in moved] == [kept]
    assert store.get(gone) is None
    assert store.get(kept).state is JobState.QUEUED
    assert store.counts() == {("default", JobState.QUEUED): 1}


def test_a_dead_job_purged_between_the_redrives_reads_is_skipped(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    [gone] = _dead(store, clock, 1)
    clock.advance(60)
    _after_first_read(store, monkeypatch, lambda: store.purge(clock.now()))
    assert store.redrive([gone], "acme") == []
    assert store.get(gone) is None
    assert store.counts() == {}


def test_a_damaged_dead_job_is_still_refused_before_any_write(store: Any, clock: FakeClock) -> None:
    """What the read-first is for stays: a hash that lost a field is refused, and the
    job beside it in the same redrive is not moved."""
    damaged, other = _dead(store, clock, 2)
    store.client.hdel(store._p + "j:" + damaged, "created_at")
    with pytest.raises(JobUnreadable):
        store.redrive([other, damaged], "acme")
    assert store.get(other).state is JobState.DEAD
