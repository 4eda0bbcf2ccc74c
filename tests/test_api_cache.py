"""The result cache: finished jobs only, per tenant, LRU + TTL, dropped on redrive here
and, through the store's invalidation epoch, within a second of a change made elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import app as spool_app
from chalicelib.api import routes
from chalicelib.api.cache import ResultCache
from chalicelib.errors import StoreUnavailable
from chalicelib.models import Completion, JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.sqlite import SQLiteStore
from local.emulator import context, scheduled_event
from tests.apikit import KEY_B, OPERATOR_KEY, Api, installed, settings_for
from tests.factories import token


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """The process-wide runtime on a real SQLite file, with the demo handlers."""
    with installed(settings_for(tmp_path, demo_handlers=True)) as runtime:
        yield runtime


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expires_entries() -> None:
    tick = Tick()
    cache = ResultCache(10, ttl=5, timer=tick)
    cache.put("t", "j1", "body", cache.ticket("t"))
    tick.now = 4.9
    assert cache.get("t", "j1") == "body"
    tick.now = 5.1
    assert cache.get("t", "j1") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_least_recently_used_entry_goes_first() -> None:
    cache = ResultCache(2, ttl=60)
    cache.put("t", "a", "A", cache.ticket("t"))
    cache.put("t", "b", "B", cache.ticket("t"))
    assert cache.get("t", "a") == "A"  # a is now more recent than b
    cache.put("t", "c", "C", cache.ticket("t"))
    assert cache.get("t", "b") is None
    assert cache.get("t", "a") == "A" and cache.get("t", "c") == "C"


def test_entries_are_per_tenant() -> None:
    cache = ResultCache(10, ttl=60)
    cache.put("alpha", "j1", "secret", cache.ticket("alpha"))
    assert cache.get("beta", "j1") is None


def test_one_tenants_reads_never_evict_anothers_answers() -> None:
    """With one shared LRU, tenant A could read back its own answers and count, from
    its misses, the finished jobs B looked up in between (and evict B's answers)."""
    cache = ResultCache(3, ttl=60)
    for job in ("b1", "b2", "b3"):
        cache.put("beta", job, "B", cache.ticket("beta"))
    for n in range(50):
        cache.put("alpha", f"a{n}", "A", cache.ticket("alpha"))
    assert [cache.get("beta", job) for job in ("b1", "b2", "b3")] == ["B", "B", "B"]
    # ...and B's reads leave A's last three where they were.
    cache.put("beta", "b4", "B", cache.ticket("beta"))
    assert [cache.get("alpha", f"a{n}") for n in (47, 48, 49)] == ["A", "A", "A"]
    assert len(cache) == 6


def test_each_tenants_share_is_bounded_in_characters_too() -> None:
    """A count alone let 1,000 answers with 256 KiB payloads hold 250 MB in a process."""
    cache = ResultCache(1000, ttl=60, max_bytes=10_000)
    big = "x" * 4_000
    for job in ("j1", "j2", "j3"):
        assert cache.put("t", job, big, cache.ticket("t")) is True
    # 12,000 characters do not fit in 10,000: the least recently used went first.
    assert cache.get("t", "j1") is None
    assert cache.get("t", "j2") == big and cache.get("t", "j3") == big
    # Small answers still fill the share up to its count.
    small = ResultCache(5, ttl=60, max_bytes=10_000)
    for n in range(7):
        small.put("t", f"s{n}", "{}", small.ticket("t"))
    assert len(small) == 5 and small.get("t", "s1") is None and small.get("t", "s2") == "{}"


def test_an_answer_larger_than_a_share_is_not_kept_and_evicts_nothing() -> None:
    cache = ResultCache(10, ttl=60, max_bytes=1_000)
    cache.put("t", "small", "{}", cache.ticket("t"))
    assert cache.put("t", "huge", "x" * 1_001, cache.ticket("t")) is False
    assert cache.get("t", "huge") is None and cache.get("t", "small") == "{}"


def test_max_bytes_zero_disables_the_cache() -> None:
    cache = ResultCache(10, ttl=60, max_bytes=0)
    assert cache.put("t", "j", "x", cache.ticket("t")) is False
    assert cache.get("t", "j") is None and len(cache) == 0


def test_size_zero_disables_the_cache() -> None:
    cache = ResultCache(0, ttl=60)
    cache.put("t", "j", "x", cache.ticket("t"))
    assert cache.get("t", "j") is None and len(cache) == 0


def drain() -> None:
    spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain_due"))


def metric(api: Api, name: str) -> float:
    text = api.get("/metrics", key=OPERATOR_KEY).body.decode()
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


def test_the_counters_agree_with_the_x_cache_headers(api: Api, rt: Runtime) -> None:
    """One count per answer that carries X-Cache, as it says; an answer without one
    (a 404 for an unknown id or another tenant's job) counts as neither. The ratio's
    readers compare it with the headers: asking for attempts used to count nothing
    though it answered `miss`, and an id guesser's 404s counted as misses."""
    job_id = api.enqueue({"type": "echo", "payload": {"v": 1}})
    drain()
    said = []
    for path, key in [
        (f"/status/{job_id}", None),
        (f"/status/{job_id}", None),
        (f"/status/{job_id}?attempts=true", None),
        (f"/status/{job_id}?webhooks=true&attempts=true", None),
        (f"/status/{job_id}", KEY_B),
        ("/status/j_00000000000000000000000000000000", None),
        ("/status/j_00000000000000000000000000000001", None),
        ("/status/j_00000000000000000000000000000002", None),
    ]:
        answer = api.get(path, key=key) if key else api.get(path)
        said.append((answer.status, answer.header("X-Cache")))
    assert said == [
        (200, "miss"), (200, "hit"), (200, "miss"), (200, "miss"),
        (404, None), (404, None), (404, None), (404, None),
    ]  # fmt: skip
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
    edge.cache.put("tenant-a", job_id, '{"stale": true}', edge.cache.ticket("tenant-a"))
    assert api.post(f"/jobs/{job_id}/cancel").status == 200
    assert api.get(f"/status/{job_id}").json["state"] == "cancelled"


# -- the invalidation epoch: changes made by other processes -------------------


class Epoch:
    """A store's cache_epoch stand-in that counts its reads and can fail."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.down = False

    def __call__(self, tenant: str) -> int:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("the database cannot be reached")
        return self.value


def test_the_epoch_is_read_at_most_once_per_recheck_interval() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    cache.put("t", "j", "dead", cache.ticket("t"))
    for _ in range(50):
        assert cache.get("t", "j") == "dead"
    assert epoch.reads == 1
    tick.now = 0.99
    assert cache.get("t", "j") == "dead" and epoch.reads == 1
    tick.now = 1.0
    assert cache.get("t", "j") == "dead" and epoch.reads == 2


def test_a_moved_epoch_empties_the_cache_at_the_next_check() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    cache.put("t", "j", "dead", cache.ticket("t"))
    cache.put("t", "k", "succeeded", cache.ticket("t"))
    epoch.value = 1  # another process redrove or purged something
    tick.now = 1.0
    assert cache.get("t", "j") is None and cache.get("t", "k") is None
    assert len(cache) == 0 and cache.invalidations == 1
    cache.put("t", "j", "queued-now-dead-again", cache.ticket("t"))
    tick.now = 2.0
    assert cache.get("t", "j") == "queued-now-dead-again"  # same epoch: kept


def test_an_answer_read_before_the_epoch_moved_is_not_kept() -> None:
    """The race: a status read starts, another process redrives, this cache sees the
    new epoch and empties itself, then the (stale) read arrives to be stored."""
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    assert cache.get("t", "j") is None
    ticket = cache.ticket("t")  # taken before the store read...
    epoch.value = 1
    tick.now = 1.0
    assert cache.get("t", "other") is None  # ...another request sees the new epoch
    assert cache.put("t", "j", "dead (stale)", ticket) is False
    assert cache.get("t", "j") is None


def test_an_unreadable_epoch_serves_nothing_until_it_reads_again() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    cache.put("t", "j", "dead", cache.ticket("t"))
    epoch.down = True
    tick.now = 1.0
    assert cache.get("t", "j") is None
    assert cache.put("t", "j", "dead", cache.ticket("t")) is False
    tick.now = 1.5
    assert cache.get("t", "j") is None and epoch.reads == 2  # not retried per request
    epoch.down = False
    tick.now = 2.0
    assert cache.put("t", "j", "dead", cache.ticket("t")) is True
    assert cache.get("t", "j") == "dead"


# -- through the edge, on a real SQLite file -------------------------------------


@pytest.fixture
def edge_tick(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Tick:
    """The process's Edge, on a timer the test moves (TTL and epoch re-checks)."""
    tick = Tick()
    monkeypatch.setattr(routes, "_edge", routes.Edge(rt, timer=tick))
    return tick


def test_running_and_retrying_jobs_are_never_cached(api: Api, rt: Runtime) -> None:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 3})
    [running] = rt.store.claim(1, 30, ids=[job_id])
    for _ in range(2):
        reply = api.get(f"/status/{job_id}")
        assert (reply.header("X-Cache"), reply.json["state"]) == ("miss", "running")
    retry = Completion(
        job_id, token(running), JobState.RETRYING, error="x", retry_at=rt.store.clock.now()
    )
    assert rt.store.finish([retry]) == [True]
    for _ in range(2):
        reply = api.get(f"/status/{job_id}")
        assert (reply.header("X-Cache"), reply.json["state"]) == ("miss", "retrying")
    assert [j.id for j in rt.store.claim(1, 30, ids=[job_id])] == [job_id]
    reply = api.get(f"/status/{job_id}")
    assert (reply.header("X-Cache"), reply.json["state"]) == ("miss", "running")
    assert reply.json["attempts"] == 2


def test_an_entry_older_than_the_ttl_is_a_miss(api: Api, rt: Runtime, edge_tick: Tick) -> None:
    job_id = api.enqueue({"type": "echo"})
    drain()
    api.get(f"/status/{job_id}")
    edge_tick.now = rt.settings.cache_ttl - 1
    assert api.get(f"/status/{job_id}").header("X-Cache") == "hit"
    edge_tick.now = rt.settings.cache_ttl + 1
    assert api.get(f"/status/{job_id}").header("X-Cache") == "miss"


def _dead_job(api: Api) -> str:
    job_id = api.enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
    drain()
    return job_id


def test_a_redrive_through_another_store_handle_is_seen_within_the_recheck(
    api: Api, rt: Runtime, edge_tick: Tick
) -> None:
    """Another process (here: a second SQLite connection on the same file, as the
    CLI would open) redrives a job this process holds in its cache."""
    job_id = _dead_job(api)
    assert api.get(f"/status/{job_id}").header("X-Cache") == "miss"
    assert api.get(f"/status/{job_id}").header("X-Cache") == "hit"
    other = SQLiteStore(rt.store.path)  # type: ignore[attr-defined]
    try:
        assert [j.id for j in other.redrive([job_id])] == [job_id]
    finally:
        other.close()
    edge_tick.now = 1.0
    after = api.get(f"/status/{job_id}")
    assert (after.header("X-Cache"), after.json["state"]) == ("miss", "queued")


def test_a_purge_elsewhere_makes_a_cached_job_not_found(
    api: Api, rt: Runtime, edge_tick: Tick
) -> None:
    job_id = api.enqueue({"type": "echo"})
    drain()
    api.get(f"/status/{job_id}")
    assert api.get(f"/status/{job_id}").header("X-Cache") == "hit"
    other = SQLiteStore(rt.store.path)  # type: ignore[attr-defined]
    try:
        assert other.purge(other.clock.now() + timedelta(days=1)) == 1
    finally:
        other.close()
    edge_tick.now = 1.0
    assert api.get(f"/status/{job_id}").status == 404


def test_hits_read_the_epoch_once_per_interval_not_per_request(
    api: Api, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    real = rt.store.cache_epoch

    def counted(tenant: str) -> int:
        reads.append(tenant)
        return real(tenant)

    monkeypatch.setattr(rt.store, "cache_epoch", counted)
    tick = Tick()
    monkeypatch.setattr(routes, "_edge", routes.Edge(rt, timer=tick))
    job_id = api.enqueue({"type": "echo"})
    drain()
    for _ in range(20):
        api.get(f"/status/{job_id}")
    assert len(reads) == 1
    assert metric(api, "spool_cache_hits_total") == 19


def test_spool_cache_bytes_keeps_a_large_answer_out_of_the_cache(tmp_path: Path) -> None:
    """SPOOL_CACHE_BYTES reaches the API's cache: an answer over it is read from the
    store every time, while a small one is still served from the cache."""
    from chalice.test import Client

    settings = settings_for(tmp_path, extra={"SPOOL_CACHE_BYTES": "2048"})
    with installed(settings), Client(spool_app.app, stage_name="local") as client:
        api = Api(client)
        big = api.enqueue({"type": "echo", "payload": {"text": "x" * 4096}})
        small = api.enqueue({"type": "echo", "payload": {"v": 1}})
        drain()
        assert [api.get(f"/status/{big}").header("X-Cache") for _ in range(2)] == [
            "miss",
            "miss",
        ]
        assert [api.get(f"/status/{small}").header("X-Cache") for _ in range(2)] == [
            "miss",
            "hit",
        ]


def test_a_bad_spool_cache_bytes_is_refused_at_start(tmp_path: Path) -> None:
    from chalicelib.config import ConfigError

    with (
        pytest.raises(ConfigError, match="SPOOL_CACHE_BYTES"),
        installed(settings_for(tmp_path, extra={"SPOOL_CACHE_BYTES": "-1"})),
    ):
        routes.current()
