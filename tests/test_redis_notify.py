"""Wake-ups on Redis (chalicelib/storage/redis_notify.py) against the real server:
an add or a redrive in one process wakes a worker waiting in another, a broken
pub/sub connection is replaced and reported as a wake-up, and close wakes waiters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from chalicelib.clock import FakeClock
from chalicelib.models import Completion, JobState
from chalicelib.storage.redis_store import RedisStore, from_url
from tests.factories import new_job, token
from tests.redis_support import admin, fresh_prefix


@pytest.fixture
def pair() -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two handles on one store: a waiting worker's and a producer's."""
    with fresh_prefix() as url:
        waiter, producer = from_url(url), from_url(url)
        try:
            yield waiter, producer
        finally:
            waiter.close()
            producer.close()


def test_an_add_in_another_handle_wakes_the_waiter(pair: tuple[RedisStore, RedisStore]) -> None:
    waiter, producer = pair
    assert waiter.notifier.wait(0) is False  # subscribes; nothing happened yet
    producer.add([new_job(FakeClock(producer.clock.now()))])
    assert waiter.notifier.wait(10) is True
    assert waiter.notifier.wait(0.2) is False  # one add, one wake-up


def test_the_first_wait_is_subscribed_when_it_returns(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A job added right after the worker's first wait(0) is never missed: that wait
    returns once the server confirmed the subscription (the confirmation was once
    never recognised, and every worker sat out a 5 s timeout before its first claim)."""
    waiter, producer = pair
    waiter.notifier.wait(0)
    assert waiter.notifier.subscribed
    producer.add([new_job(FakeClock(producer.clock.now()))])
    assert waiter.notifier.wait(10) is True


def test_a_redrive_wakes_the_waiter_and_a_finish_does_not(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    waiter, producer = pair
    clock = FakeClock(producer.clock.now())
    [added] = producer.add([new_job(clock, max_attempts=1)])
    [job] = producer.claim(1, 30)
    waiter.notifier.wait(0)
    assert producer.finish([Completion(job.id, token(job), JobState.DEAD)]) == [True]
    assert waiter.notifier.wait(0.3) is False
    assert [j.id for j in producer.redrive([added.job.id])] == [added.job.id]
    assert waiter.notifier.wait(10) is True


def test_a_killed_pubsub_connection_is_replaced_and_reported(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    waiter, producer = pair
    waiter.notifier.wait(0)
    client = admin()
    try:  # only this store's subscriber: other pub/sub clients of the server are left alone
        mine = [
            c["id"]
            for c in client.client_list(_type="pubsub")
            if c.get("name") == f"spool:{waiter.settings.prefix}"
        ]
        assert len(mine) == 1
        assert client.client_kill_filter(_id=mine[0]) == 1
    finally:
        client.close()
    # Messages sent while it was down are lost: the notifier says "look now".
    assert waiter.notifier.wait(10) is True
    deadline = time.monotonic() + 10
    while True:  # once resubscribed, adds wake it again
        producer.add([new_job(FakeClock(producer.clock.now()))])
        if waiter.notifier.wait(0.5):
            break
        assert time.monotonic() < deadline, "no wake-up after the reconnect"


def test_close_wakes_a_waiting_thread(pair: tuple[RedisStore, RedisStore]) -> None:
    waiter, _ = pair
    waiter.notifier.wait(0)
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(waiter.notifier.wait(30)))
    thread.start()
    time.sleep(0.2)
    waiter.notifier.close()
    thread.join(5)
    assert not thread.is_alive() and woke == [True]
