"""The Redis store against a private redis-server configured the ways an operator
might get wrong: an evicting maxmemory-policy, a SCRIPT FLUSH under a running
store, two deployments sharing one database."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage.redis_store import from_url
from tests.factories import new_job, token
from tests.redis_support import admin, private_server, with_prefix


def _opened_under(tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Open a store on a private server with this eviction policy; what spool.redis said."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        control = admin(server.url)
        control.config_set("maxmemory", str(64 * 1024 * 1024))
        control.config_set("maxmemory-policy", policy)
        control.close()
        with caplog.at_level(logging.WARNING, logger="spool.redis"):
            from_url(with_prefix(server.url, "evict")).close()
    return [r.getMessage() for r in caplog.records if r.name == "spool.redis"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_an_evicting_policy_is_warned_about_at_start(
    tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """allkeys-* deletes any key once Redis is full, jobs and idempotency keys among
    them, silently; docs say to set noeviction, but a store on such a server opened
    without a word."""
    said = _opened_under(tmp_path, policy, caplog)
    assert any(policy in m and "noeviction" in m for m in said), said


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl"])
def test_a_policy_that_spares_spools_keys_opens_without_a_warning(
    tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """volatile-* evicts only keys with a TTL; Spool's keys carry none. (The server
    has no persistence, which is warned about apart: tests/test_chaos_s59c_redis_policy.py.)"""
    said = _opened_under(tmp_path, policy, caplog)
    assert not [m for m in said if "maxmemory-policy" in m], said


@pytest.mark.timeout(60)
def test_a_script_flush_is_survived(tmp_path: Path) -> None:
    """SCRIPT FLUSH (or a restart) drops the loaded scripts: the next EVALSHA meets
    NOSCRIPT, and the store loads the script again rather than failing the call."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "flush"))
        try:
            clock = FakeClock(store.clock.now())
            store.add([new_job(clock)])
            admin(server.url).script_flush()
            store.add([new_job(clock)])
            admin(server.url).script_flush()
            claimed = store.claim(10, 30)
            assert len(claimed) == 2
        finally:
            store.close()


@pytest.mark.timeout(60)
def test_two_prefixes_in_one_database_do_not_see_each_other(tmp_path: Path) -> None:
    """'a' and 'a:b' share a start, but the hash tag's braces keep their keys apart."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        one = from_url(with_prefix(server.url, "a"))
        two = from_url(with_prefix(server.url, "a:b"))
        try:
            clock = FakeClock(one.clock.now())
            one.add([new_job(clock)])
            assert two.claim(10, 30) == []
            assert len(one.claim(10, 30)) == 1
        finally:
            one.close()
            two.close()


def _emptied(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "spool.redis" and r.levelno >= logging.ERROR and "emptied" in r.getMessage()
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("check", ["health", "beat"])
def test_a_store_emptied_under_a_running_process_is_noticed(
    tmp_path: Path, check: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis without persistence restarted under `spool serve` and `spool worker`
    comes back empty: every acknowledged job gone, and nothing said so. /health
    (check_writable) and the worker's beat now log it, once per emptying."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "wiped"))
        try:
            clock = FakeClock(store.clock.now())
            store.add([new_job(clock)])

            def look() -> None:
                if check == "health":
                    store.check_writable()
                else:
                    store.beat("w1", None, clock.now())

            with caplog.at_level(logging.WARNING, logger="spool.redis"):
                look()
                assert _emptied(caplog) == []
                server.kill()
                server.start()  # the same port, nothing on disk: an empty server
                look()
                assert len(_emptied(caplog)) == 1, caplog.text
                look()  # said once, not at every check
                assert len(_emptied(caplog)) == 1
        finally:
            store.close()


@pytest.mark.timeout(60)
def test_a_restart_that_kept_its_data_is_not_called_emptied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with private_server(tmp_path / "redis", appendfsync="always") as server:
        store = from_url(with_prefix(server.url, "kept"))
        try:
            with caplog.at_level(logging.WARNING, logger="spool.redis"):
                store.check_writable()
                server.kill()
                server.start()  # the AOF brings every key back
                store.check_writable()
            assert _emptied(caplog) == []
        finally:
            store.close()


@pytest.mark.timeout(60)
def test_a_slow_server_times_out_and_leaves_no_stray_reply(tmp_path: Path) -> None:
    """A server that answers slowly (CLIENT PAUSE, as DEBUG SLEEP or a long script
    would) past `timeout`: the read ends in StoreUnavailable, and the reply it gave
    up on must not be read by the next call on the same pooled connection (a stale
    reply would answer another job's lookup)."""
    from chalicelib.errors import StoreUnavailable

    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "slow") + "&timeout=0.5&pool_max=1")
        try:
            clock = FakeClock(store.clock.now())
            one, two = new_job(clock), new_job(clock)
            store.add([one, two])
            control = admin(server.url)
            control.client_pause(1500, all=True)  # returns at once; the rest wait
            with pytest.raises(StoreUnavailable):
                store.get(one.id)
            with pytest.raises(StoreUnavailable):
                store.claim(1, 30)
            control.client_unpause()
            control.close()
            got = store.get(two.id)
            assert got is not None and got.id == two.id
            claimed = store.claim(10, 30)
            assert sorted(j.id for j in claimed) == sorted([one.id, two.id])
        finally:
            store.close()


@pytest.mark.timeout(60)
def test_a_killed_connection_mid_finish_ends_the_job_once(tmp_path: Path) -> None:
    """CLIENT KILL of Spool's connections before a finish: the finish fails as
    StoreUnavailable (never retried blind: it may have been applied), a second
    finish under the same lease applies once, a third is refused."""
    from chalicelib.errors import StoreUnavailable
    from chalicelib.models import Completion, JobState

    with private_server(tmp_path / "redis", appendfsync="no") as server:
        store = from_url(with_prefix(server.url, "killed"))
        try:
            clock = FakeClock(store.clock.now())
            store.add([new_job(clock)])
            (job,) = store.claim(1, 30)
            done = Completion(job.id, token(job), JobState.SUCCEEDED)
            control = admin(server.url)
            control.client_kill_filter(_type="normal", skipme=True)
            control.close()
            try:
                first = store.finish([done])
            except StoreUnavailable:
                first = [False]
            again = store.finish([done])
            assert first.count(True) + again.count(True) == 1
            assert store.finish([done]) == [False]
            final = store.get(job.id)
            assert final is not None and final.state is JobState.SUCCEEDED
            assert final.attempts == 1
        finally:
            store.close()
