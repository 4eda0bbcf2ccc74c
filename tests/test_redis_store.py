"""The Redis store where the contract suite cannot reach: a server that refuses
writes, URLs, and keys kept apart per prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import StoreUnavailable
from chalicelib.models import JobQuery
from chalicelib.storage import open_store
from chalicelib.storage.redis_store import RedisStore, from_url, parse_url
from tests.factories import new_job, token
from tests.redis_support import admin, fresh_prefix, private_server, with_prefix


@pytest.mark.timeout(60)
def test_a_full_server_refuses_whole_batches_with_503(tmp_path: Path) -> None:
    """With maxmemory reached (noeviction) an add is refused whole: StoreUnavailable
    (HTTP 503), and every job the store holds is one that was acknowledged."""
    with private_server(tmp_path / "redis", appendfsync="no") as server:
        control = admin(server.url)
        control.config_set("maxmemory-policy", "noeviction")
        used = int(control.info("memory")["used_memory"])
        control.config_set("maxmemory", str(used + 2 * 1024 * 1024))  # room for some jobs
        store = from_url(with_prefix(server.url, "full"))
        clock = FakeClock(store.clock.now())
        acknowledged = 0
        try:
            with pytest.raises(StoreUnavailable):
                for _ in range(10_000):
                    store.add([new_job(clock, payload={"pad": "x" * 500}) for _ in range(50)])
                    acknowledged += 50
            assert acknowledged > 0
            assert sum(store.counts().values()) == acknowledged
            control.config_set("maxmemory", "0")  # room again: reads and writes work
            listed, cursor = 0, None
            while True:  # no half-written job: the listing holds exactly those acknowledged
                page = store.list_jobs(JobQuery(limit=1000, cursor=cursor))
                listed += len(page.jobs)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert listed == acknowledged
            assert store.add([new_job(clock)])[0].created
        finally:
            store.close()
            control.close()


def test_two_prefixes_on_one_database_never_see_each_other() -> None:
    with fresh_prefix() as first_url, fresh_prefix() as second_url:
        first, second = from_url(first_url), from_url(second_url)
        try:
            clock = FakeClock(first.clock.now())
            job = first.add([new_job(clock, idempotency_key="k")])[0].job
            assert second.get(job.id) is None
            assert second.counts() == {} and second.claim(10, 30) == []
            again = second.add([new_job(clock, idempotency_key="k")])[0]
            assert again.created and again.job.id != job.id
        finally:
            first.close()
            second.close()


def test_every_key_of_a_store_carries_its_hash_tag() -> None:
    """One slot per store (Redis Cluster): no key escapes the {prefix} tag."""
    with fresh_prefix() as url:
        store = from_url(url)
        prefix = store.settings.prefix
        try:
            clock = FakeClock(store.clock.now())
            store.add([new_job(clock, idempotency_key="k", callback_url="https://x.test/h")])
            [job] = store.claim(1, 30)
            store.beat("w:1", None, clock.now())
            from chalicelib.models import Completion, JobState

            store.finish([Completion(job.id, token(job), JobState.SUCCEEDED)])
            client = admin()
            try:
                keys = [k.decode() for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
            finally:
                client.close()
            assert len(keys) > 10
            assert all(k.startswith("{" + prefix + "}:") for k in keys), keys
        finally:
            store.close()


def test_url_options() -> None:
    settings = parse_url("redis://:pw@127.0.0.1:6390/3?prefix=team.a&pool_max=7&timeout=2.5")
    assert (settings.prefix, settings.pool_max, settings.timeout) == ("team.a", 7, 2.5)
    assert settings.url == "redis://:pw@127.0.0.1:6390/3"
    assert settings.keys == "{team.a}:"
    assert parse_url("rediss://h:1/0?ssl_cert_reqs=none").url == "rediss://h:1/0?ssl_cert_reqs=none"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1/0?prefix=",
        "redis://127.0.0.1/0?prefix=a%7Bb",
        "redis://127.0.0.1/0?prefix=has space",
        "redis://127.0.0.1/x",
        "redis://127.0.0.1/0?pool_max=0",
        "redis://127.0.0.1/0?timeout=-1",
        "redis://127.0.0.1/0?timeout=nan",
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str) -> None:
    from chalicelib.config import ConfigError

    with pytest.raises(ConfigError):
        open_store(url)


def test_the_store_is_chosen_by_scheme() -> None:
    with fresh_prefix() as url:
        store = open_store(url)
        try:
            assert isinstance(store, RedisStore)
        finally:
            store.close()


def test_a_write_whose_reply_was_lost_says_it_may_have_been_applied() -> None:
    """A 503 that said only "try again shortly" for an enqueue Redis had stored
    (its reply timed out): a client doing as told, without an idempotency key,
    made the job twice."""
    import redis

    with fresh_prefix() as url:
        store = from_url(url)
        try:
            clock = FakeClock(store.clock.now())
            real = store._scripts["ADD"]

            def applied_then_timed_out(*args: Any, **kwargs: Any) -> object:
                real(*args, **kwargs)
                raise redis.TimeoutError("Timeout reading from socket")

            store._scripts["ADD"] = applied_then_timed_out  # type: ignore[assignment]
            with pytest.raises(StoreUnavailable) as refused:
                store.add([new_job(clock)])
            assert "this change may have been applied" in refused.value.message
            assert "same idempotency_key" in refused.value.message
            assert sum(store.counts().values()) == 1  # it was
        finally:
            store.close()


@pytest.mark.parametrize(
    ("failure", "tries"),
    [("timeout", 1), ("connection", 2)],
)
def test_a_read_is_tried_again_after_a_reset_connection_not_after_a_timeout(
    failure: str, tries: int
) -> None:
    """A hung server (a timeout) answered each read after twice the URL's `timeout`,
    and a request of several reads after several times it; a reset connection (a
    restarted server) is still worth one more try."""
    import redis

    with fresh_prefix() as url:
        store = from_url(url)
        try:
            calls: list[str] = []

            def failing(*args: object, **kwargs: object) -> object:
                calls.append(failure)
                if failure == "timeout":
                    raise redis.TimeoutError("Timeout reading from socket")
                raise redis.ConnectionError("Connection reset by peer")

            store.client.hmget = failing
            with pytest.raises(StoreUnavailable, match="try again shortly"):
                store.get("j_" + "0" * 32)
            assert len(calls) == tries
        finally:
            store.close()
