"""chalicelib/api/cache.py at its edges: what `make mutation` found untested.

Written to kill the mutants `make mutation MUTANTS='chalicelib.api.cache*'` left
alive (docs/testing.md): a one-entry cache and sub-second TTL and recheck
intervals (the settings accept them), the invalidation count over more than one
invalidation, the warning an operator reads when the epoch cannot be read, and
two requests arriving while the epoch is being read.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import pytest

from chalicelib.api.cache import ResultCache
from tests.test_api_cache import Epoch, Tick


def test_a_one_entry_cache_keeps_exactly_one() -> None:
    cache = ResultCache(1, ttl=60, timer=Tick())
    assert cache.put("t", "a", "A", cache.ticket("t")) is True
    assert cache.get("t", "a") == "A"
    cache.put("t", "b", "B", cache.ticket("t"))
    assert len(cache) == 1
    assert cache.get("t", "a") is None and cache.get("t", "b") == "B"


def test_a_zero_ttl_disables_the_cache() -> None:
    cache = ResultCache(10, ttl=0, timer=Tick())
    assert cache.put("t", "j", "x", cache.ticket("t")) is False
    assert cache.get("t", "j") is None and len(cache) == 0


def test_a_sub_second_ttl_caches_for_that_long() -> None:
    tick = Tick()
    cache = ResultCache(10, ttl=0.5, timer=tick)
    assert cache.put("t", "j", "x", cache.ticket("t")) is True
    tick.now = 0.4
    assert cache.get("t", "j") == "x"
    tick.now = 0.6
    assert cache.get("t", "j") is None


def test_a_sub_second_recheck_reads_the_epoch_that_often() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=0.25)
    cache.put("t", "j", "dead", cache.ticket("t"))
    assert epoch.reads == 1
    tick.now = 0.2
    assert cache.get("t", "j") == "dead" and epoch.reads == 1
    tick.now = 0.25
    assert cache.get("t", "j") == "dead" and epoch.reads == 2


def test_a_zero_recheck_reads_the_epoch_on_every_request() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=0)
    cache.put("t", "j", "dead", cache.ticket("t"))
    reads = epoch.reads
    for _ in range(3):
        assert cache.get("t", "j") == "dead"
    assert epoch.reads == reads + 3


def test_every_invalidation_is_counted() -> None:
    tick, epoch = Tick(), Epoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    for n in range(1, 4):
        cache.put("t", "j", "dead", cache.ticket("t"))
        epoch.value = n
        tick.now = float(n)
        assert cache.get("t", "j") is None
        assert cache.invalidations == n


def test_an_unreadable_epoch_is_logged_saying_what_happened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    epoch = Epoch()
    epoch.down = True
    cache = ResultCache(10, ttl=300, timer=Tick(), epoch=epoch, recheck=1.0)
    with caplog.at_level(logging.WARNING, logger="spool.cache"):
        assert cache.get("t", "j") is None
    [record] = [r for r in caplog.records if r.name == "spool.cache"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "cannot read the cache epoch (the database cannot be reached); not serving from cache"
    )


class _SpyLock:
    """A lock that says when a second caller has come to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callers = 0
        self.second_caller = threading.Event()

    def __enter__(self) -> None:
        self._callers += 1
        if self._callers >= 2:
            self.second_caller.set()
        self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


class _SlowEpoch(Epoch):
    """An epoch read that, once armed, waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.reading = threading.Event()
        self.finish = threading.Event()

    def __call__(self, tenant: str) -> int:
        if self.armed:
            self.reading.set()
            assert self.finish.wait(timeout=30)
        return super().__call__(tenant)


def test_a_request_that_waited_for_anothers_epoch_read_serves_from_the_cache() -> None:
    tick, epoch = Tick(), _SlowEpoch()
    cache = ResultCache(10, ttl=300, timer=tick, epoch=epoch, recheck=1.0)
    spy = _SpyLock()
    cache._of("t").check = spy  # type: ignore[assignment]
    cache.put("t", "j", "dead", cache.ticket("t"))
    tick.now = 1.0  # a re-read is due
    epoch.armed = True
    answers: dict[str, str | None] = {}

    def read(name: str) -> None:
        answers[name] = cache.get("t", "j")

    first = threading.Thread(target=read, args=("first",))
    first.start()
    assert epoch.reading.wait(timeout=30)  # the first request is reading the epoch
    second = threading.Thread(target=read, args=("second",))
    second.start()
    assert spy.second_caller.wait(timeout=30)  # the second has come to wait for it
    epoch.finish.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert answers == {"first": "dead", "second": "dead"}
    assert epoch.reads == 2  # the second did not read the epoch again
