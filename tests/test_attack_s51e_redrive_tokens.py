"""A redrive spends the tenant's enqueue tokens only on the jobs it moves, on every store.

Was: a redrive took a token per id named, before the store looked at them (stop 48's
charge, Service.redrive_ids), so a tenant redriving a list with mistakes in it (an
unknown id, another tenant's id, a job no longer dead, an id twice) or a bulk step the
backlog cap cut short lost allowance for jobs that never moved: with a burst of 3, a
list of one dead job and two typos left the tenant unable to enqueue for hours.

Now the charge is taken for the distinct ids named (so a refusal still moves nothing)
and what the store did not move is given back at once: a redrive costs exactly the
jobs it moved, whatever else the list held.
"""

from __future__ import annotations

import threading

import pytest

from chalicelib.api.throttle import EnqueueGate
from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.limit_settings import TenantLimit, TenantLimits
from chalicelib.limits import Rate
from chalicelib.models import Completion, JobState
from chalicelib.runtime import Runtime
from chalicelib.service import Service
from chalicelib.storage.base import Backlog, BacklogFull, JobStore
from tests.apikit import KEY_B, Api
from tests.factories import new_job, token
from tests.test_limits_api import TENANT_RATE, dead_jobs, limited

assert limited  # the fixture, imported for the test at the end

BURST = 4
RATE = Rate.parse("1/h")  # the test clock stands still: nothing refills


def _dead(store: JobStore, clock: FakeClock, tenant: str) -> str:
    job = store.add([new_job(clock, tenant=tenant)])[0].job
    [claimed] = store.claim(1, 30.0, ids=[job.id])
    store.finish([Completion(claimed.id, token(claimed), JobState.DEAD, error="nope")])
    return job.id


def _tokens_left(store: JobStore, tenant: str) -> int:
    """The whole tokens in the tenant's bucket: the most one take of them accepts."""
    rate, burst = RATE.count / RATE.per, BURST
    for n in range(burst, 0, -1):
        if store.take_tokens(f"enqueue:{tenant}", rate, burst, n) == 0.0:
            return n
    return 0


def _gate(store: JobStore) -> EnqueueGate:
    return EnqueueGate(store, TenantLimits(TenantLimit(rate=RATE, burst=BURST), {}))


def test_ids_a_redrive_does_not_move_cost_no_token(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    service, gate = Service(store, handlers), _gate(store)
    mine = _dead(store, clock, "t1")
    theirs = _dead(store, clock, "t2")
    alive = store.add([new_job(clock, tenant="t1")])[0].job.id
    unknown = "j_" + "0" * 32
    charge = gate.redrive_charge("t1")
    moved = service.redrive_ids([mine, unknown, theirs, alive], "t1", None, charge)
    assert [j.id for j in moved] == [mine]
    assert _tokens_left(store, "t1") == BURST - 1


def test_an_id_named_twice_costs_one_token(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    service, gate = Service(store, handlers), _gate(store)
    mine = _dead(store, clock, "t1")
    moved = service.redrive_ids([mine, mine, mine], "t1", None, gate.redrive_charge("t1"))
    assert [j.id for j in moved] == [mine]
    assert _tokens_left(store, "t1") == BURST - 1


def test_jobs_the_backlog_cap_holds_back_cost_no_token(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    service, gate = Service(store, handlers), _gate(store)
    dead = [_dead(store, clock, "t1") for _ in range(3)]
    store.add([new_job(clock, tenant="t1")])  # one waiting: room for one more
    charge = gate.redrive_charge("t1")
    moved = service.redrive_ids(dead, "t1", Backlog("t1", 2), charge)
    assert [j.id for j in moved] == dead[:1]
    assert _tokens_left(store, "t1") == BURST - 1


def test_a_redrive_the_full_backlog_refuses_whole_costs_no_token(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    """The store's BacklogFull (another process filled the room since the edge
    counted it) moves nothing: the 429 must not cost the tokens either."""
    service, gate = Service(store, handlers), _gate(store)
    dead = [_dead(store, clock, "t1") for _ in range(2)]
    store.add([new_job(clock, tenant="t1")])  # the one waiting job fills the backlog
    with pytest.raises(BacklogFull):
        service.redrive_ids(dead, "t1", Backlog("t1", 1), gate.redrive_charge("t1"))
    assert _tokens_left(store, "t1") == BURST


def test_a_redrive_of_nothing_dead_leaves_the_bucket_full(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    service, gate = Service(store, handlers), _gate(store)
    mine = _dead(store, clock, "t1")
    assert service.redrive_ids([mine], "t1", None, gate.redrive_charge("t1"))
    # Raced by another redrive: the job is no longer dead when this one comes.
    assert service.redrive_ids([mine], "t1", None, gate.redrive_charge("t1")) == []
    assert _tokens_left(store, "t1") == BURST - 1


def test_concurrent_redrives_of_one_job_cost_one_token_in_all(
    store: JobStore, clock: FakeClock, handlers: Registry
) -> None:
    """Four requests redrive the same job at once: one moves it, and the tokens the
    other three took for it come back."""
    service, gate = Service(store, handlers), _gate(store)
    mine = _dead(store, clock, "t1")
    moved: list[int] = []
    barrier = threading.Barrier(4)

    def redrive() -> None:
        barrier.wait(10)
        moved.append(len(service.redrive_ids([mine], "t1", None, gate.redrive_charge("t1"))))

    threads = [threading.Thread(target=redrive) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(moved) == [0, 0, 0, 1]
    assert _tokens_left(store, "t1") == BURST - 1


@pytest.mark.parametrize("limited", [TENANT_RATE], indirect=True)
def test_a_user_s_list_with_mistakes_costs_only_the_job_it_moved(
    limited: tuple[Api, Runtime],
) -> None:
    """As a user sees it: a burst of 3, a redrive of one dead job named beside a typo
    and another tenant's job, and the 2 tokens the two took are still there."""
    api, rt = limited
    [mine] = dead_jobs(rt, 1)
    theirs = api.enqueue({"type": "echo", "delay": 600}, key=KEY_B)
    unknown = "j_" + "f" * 32
    moved = api.post("/ui/api/dead/redrive", {"ids": [mine, unknown, theirs]})
    assert moved.status == 200 and moved.json["ids"] == [mine], moved.body
    for _ in range(2):
        assert api.post("/enqueue", {"type": "echo", "delay": 600}).status == 201
    assert api.post("/enqueue", {"type": "echo", "delay": 600}).status == 429
