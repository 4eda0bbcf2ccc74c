"""The result cache: terminal jobs only, per tenant, LRU + TTL, dropped on redrive."""

from __future__ import annotations

import re

import pytest

import app as spool_app
from chalicelib.api import routes
from chalicelib.api.cache import ResultCache
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import KEY_B, Api


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expires_entries() -> None:
    tick = Tick()
    cache = ResultCache(10, ttl=5, timer=tick)
    cache.put("t", "j1", "body")
    tick.now = 4.9
    assert cache.get("t", "j1") == "body"
    tick.now = 5.1
    assert cache.get("t", "j1") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_least_recently_used_entry_goes_first() -> None:
    cache = ResultCache(2, ttl=60)
    cache.put("t", "a", "A")
    cache.put("t", "b", "B")
    assert cache.get("t", "a") == "A"  # a is now more recent than b
    cache.put("t", "c", "C")
    assert cache.get("t", "b") is None
    assert cache.get("t", "a") == "A" and cache.get("t", "c") == "C"


def test_entries_are_per_tenant() -> None:
    cache = ResultCache(10, ttl=60)
    cache.put("alpha", "j1", "secret")
    assert cache.get("beta", "j1") is None


def test_size_zero_disables_the_cache() -> None:
    cache = ResultCache(0, ttl=60)
    cache.put("t", "j", "x")
    assert cache.get("t", "j") is None and len(cache) == 0


def drain() -> None:
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))


def metric(api: Api, name: str) -> float:
    text = api.get("/metrics").body.decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_a_terminal_job_is_a_hit_after_the_first_read(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "echo", "payload": {"v": 1}})
    assert api.get(f"/status/{job_id}").header("X-Cache") == "miss"  # queued: never cached
    assert api.get(f"/status/{job_id}").header("X-Cache") == "miss"
    drain()
    first = api.get(f"/status/{job_id}")
    second = api.get(f"/status/{job_id}")
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("miss", "hit")
    assert first.json == second.json and second.json["state"] == "succeeded"
    assert metric(api, "spool_cache_hits_total") == 1
    assert metric(api, "spool_cache_misses_total") == 3


def test_the_hit_is_served_without_the_store(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = api.enqueue({"type": "echo"})
    drain()
    api.get(f"/status/{job_id}")

    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(rt.store, "get", unreachable)
    assert api.get(f"/status/{job_id}").header("X-Cache") == "hit"


def test_another_tenant_cannot_read_a_cached_job(api: Api) -> None:
    job_id = api.enqueue({"type": "echo"})
    drain()
    api.get(f"/status/{job_id}")
    api.get(f"/status/{job_id}")
    assert api.get(f"/status/{job_id}", key=KEY_B).status == 404


def test_redrive_through_this_process_drops_the_entry(api: Api) -> None:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    drain()
    api.get(f"/status/{job_id}")
    assert api.get(f"/status/{job_id}").json["state"] == "dead"
    assert api.post(f"/dlq/{job_id}/redrive").status == 200
    after = api.get(f"/status/{job_id}")
    assert after.header("X-Cache") == "miss" and after.json["state"] == "queued"


def test_redrive_all_drops_entries_too(api: Api) -> None:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    drain()
    api.get(f"/status/{job_id}")
    api.post("/dlq/redrive")
    assert api.get(f"/status/{job_id}").json["state"] == "queued"


def test_cancel_drops_the_entry(api: Api) -> None:
    job_id = api.enqueue({"type": "echo", "delay": 60})
    edge = routes.current()
    edge.cache.put("tenant-a", job_id, '{"stale": true}')
    assert api.post(f"/jobs/{job_id}/cancel").status == 200
    assert api.get(f"/status/{job_id}").json["state"] == "cancelled"
