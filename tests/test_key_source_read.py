"""key_source.source() reads the process's source without taking the lock (stop 42):
reset() replaces it in one assignment, so a reader sees the old source or the new."""

from __future__ import annotations

import threading

import pytest

from chalicelib.api import key_source


class CountingLock:
    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.taken = 0

    def __enter__(self) -> None:
        self.taken += 1
        self.inner.acquire()

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def test_reading_the_source_takes_no_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = CountingLock()
    monkeypatch.setattr(key_source, "_source_lock", lock)
    first = key_source.source()
    assert key_source.source() is first
    assert lock.taken == 0
    key_source.reset()
    assert lock.taken == 1  # replacing it still does
    assert key_source.source() is not first
    assert isinstance(key_source.source(), key_source.KeySource)
