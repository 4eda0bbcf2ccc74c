"""One tenant's redrive or purge must not empty every tenant's result cache.

Through the HTTP API on a real SQLite file: tenant B redriving or purging its own
jobs (here or in another process) leaves tenant A's cached answers hits, so B cannot
keep A's cache cold and A cannot see, in `X-Cache`, that B did anything; while a
redrive or purge of A's own jobs, made anywhere, is never served stale to A."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chalicelib.api import routes
from chalicelib.api.cache import ResultCache
from chalicelib.errors import StoreUnavailable
from chalicelib.models import Completion, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.sqlite import SQLiteStore
from tests.apikit import KEY_A, KEY_B, TENANT_B, Api, installed, settings_for
from tests.factories import stored, token
from tests.test_api_cache import Tick, drain


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


@pytest.fixture
def tick(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Tick:
    """The process's Edge on a timer the test moves past the epoch re-check."""
    timer = Tick()
    monkeypatch.setattr(routes, "_edge", routes.Edge(rt, timer=timer))
    return timer


def _dead(api: Api, key: str) -> str:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1}, key)
    drain()
    return job_id


def _done(api: Api, key: str) -> str:
    job_id = api.enqueue({"type": "echo"}, key)
    drain()
    return job_id


def _cached(api: Api, job_id: str, key: str = KEY_A) -> None:
    """Read twice: the second answer comes from the cache."""
    assert api.get(f"/status/{job_id}", key=key).header("X-Cache") == "miss"
    assert api.get(f"/status/{job_id}", key=key).header("X-Cache") == "hit"


def _other_handle(rt: Runtime) -> SQLiteStore:
    """Another process's view of the store (as the CLI or a second server opens it)."""
    return SQLiteStore(rt.store.path)  # type: ignore[attr-defined]


def test_another_tenants_redrive_here_leaves_this_tenants_answers_cached(
    api: Api, rt: Runtime, tick: Tick
) -> None:
    mine, theirs = _done(api, KEY_A), _dead(api, KEY_B)
    _cached(api, mine)
    assert api.post(f"/dlq/{theirs}/redrive", key=KEY_B).status == 200
    tick.now = 1.0  # past the re-check: the store's epoch is read again
    assert api.get(f"/status/{mine}").header("X-Cache") == "hit"
    assert api.get(f"/status/{theirs}", key=KEY_B).json["state"] == "queued"


def test_another_tenants_redrive_elsewhere_leaves_this_tenants_answers_cached(
    api: Api, rt: Runtime, tick: Tick
) -> None:
    mine, theirs = _dead(api, KEY_A), _dead(api, KEY_B)
    _cached(api, mine)
    other = _other_handle(rt)
    try:
        for _ in range(5):  # a tenant redriving in a loop
            assert [j.id for j in other.redrive([theirs], TENANT_B)] == [theirs]
            [claimed] = other.claim(1, 30, ids=[theirs])  # and it dies again
            other.finish([Completion(theirs, token(claimed), JobState.DEAD, error="x")])
            tick.now += 1.0
            reply = api.get(f"/status/{mine}")
            assert (reply.header("X-Cache"), reply.json["state"]) == ("hit", "dead")
    finally:
        other.close()


def test_another_tenants_purge_leaves_this_tenants_answers_cached(
    api: Api, rt: Runtime, tick: Tick
) -> None:
    theirs = _done(api, KEY_B)
    time.sleep(0.01)  # finished strictly after theirs
    mine = _done(api, KEY_A)
    _cached(api, mine)
    other = _other_handle(rt)
    try:
        mine_finished = stored(other, mine).finished_at
        assert mine_finished is not None
        assert other.purge(mine_finished) == 1  # theirs only: mine finished at the bound
        assert other.get(theirs) is None
        assert other.discard([_dead(api, KEY_B)], TENANT_B) != []  # the dashboard's purge
    finally:
        other.close()
    tick.now = 1.0
    assert api.get(f"/status/{mine}").header("X-Cache") == "hit"


def test_this_tenants_redrive_elsewhere_is_never_served_stale(
    api: Api, rt: Runtime, tick: Tick
) -> None:
    mine, theirs = _dead(api, KEY_A), _done(api, KEY_B)
    _cached(api, mine)
    _cached(api, theirs, KEY_B)
    other = _other_handle(rt)
    try:
        assert [j.id for j in other.redrive([mine])] == [mine]  # an operator's redrive
    finally:
        other.close()
    tick.now = 1.0
    after = api.get(f"/status/{mine}")
    assert (after.header("X-Cache"), after.json["state"]) == ("miss", "queued")
    assert api.get(f"/status/{theirs}", key=KEY_B).header("X-Cache") == "hit"


def test_this_tenants_purge_elsewhere_is_never_served_stale(
    api: Api, rt: Runtime, tick: Tick
) -> None:
    mine = _done(api, KEY_A)
    _cached(api, mine)
    other = _other_handle(rt)
    try:
        assert other.purge(other.clock.now() + timedelta(days=1)) == 1
    finally:
        other.close()
    tick.now = 1.0
    assert api.get(f"/status/{mine}").status == 404


# -- the cache on its own: each tenant's share answers to its own epoch ----------


class Epochs:
    """A store's cache_epoch(tenant) stand-in: per tenant values and reads."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reads: list[str] = []
        self.down: set[str] = set()

    def __call__(self, tenant: str) -> int:
        self.reads.append(tenant)
        if tenant in self.down:
            raise StoreUnavailable("the database cannot be reached")
        return self.values.get(tenant, 0)


def _two_tenants() -> tuple[Tick, Epochs, ResultCache]:
    tick, epochs = Tick(), Epochs()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epochs, recheck=1.0)
    cache.put("t", "j", "dead", cache.ticket("t"))
    cache.put("u", "k", "succeeded", cache.ticket("u"))
    return tick, epochs, cache


def test_a_moved_epoch_empties_only_its_tenants_share() -> None:
    tick, epochs, cache = _two_tenants()
    epochs.values["u"] = 1
    tick.now = 1.0
    assert cache.get("t", "j") == "dead"
    assert cache.get("u", "k") is None
    assert len(cache) == 1 and cache.invalidations == 1
    epochs.values["t"] = 1
    tick.now = 2.0
    assert cache.get("t", "j") is None


def test_each_tenants_epoch_is_read_at_most_once_per_recheck() -> None:
    tick, epochs, cache = _two_tenants()
    assert sorted(epochs.reads) == ["t", "u"]
    for _ in range(20):
        assert cache.get("t", "j") == "dead" and cache.get("u", "k") == "succeeded"
    assert sorted(epochs.reads) == ["t", "u"]
    tick.now = 1.0
    for _ in range(20):
        cache.get("t", "j")
    assert sorted(epochs.reads) == ["t", "t", "u"]  # u's is not read for t's hits


def test_a_ticket_is_voided_by_its_own_tenants_epoch_only() -> None:
    """The race rules, per tenant: a read that started before the tenant's epoch
    moved is refused; another tenant's epoch moving meanwhile voids nothing."""
    tick, epochs, cache = _two_tenants()
    ticket_t, ticket_u = cache.ticket("t"), cache.ticket("u")
    epochs.values["u"] = 1
    tick.now = 1.0
    assert cache.get("u", "other") is None  # u's share sees its epoch move and empties
    assert cache.put("t", "j2", "dead", ticket_t) is True
    assert cache.put("u", "k2", "dead (stale)", ticket_u) is False
    assert cache.get("u", "k2") is None


def test_an_unreadable_epoch_stops_only_its_tenants_answers() -> None:
    tick, epochs, cache = _two_tenants()
    epochs.down.add("u")
    tick.now = 1.0
    assert cache.get("u", "k") is None
    assert cache.put("u", "k", "succeeded", cache.ticket("u")) is False
    assert cache.get("t", "j") == "dead"
    epochs.down.clear()
    tick.now = 2.0
    assert cache.put("u", "k", "succeeded", cache.ticket("u")) is True
    assert cache.get("u", "k") == "succeeded"
