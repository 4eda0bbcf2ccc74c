"""How the contract suite opens each backend. A new backend adds one entry here
and must then pass tests/contract/ unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chalicelib.clock import FakeClock
from chalicelib.storage.base import JobStore


@contextlib.contextmanager
def _memory(clock: FakeClock, tmp_path: Path, request: Any) -> Iterator[JobStore]:
    from chalicelib.storage.memory import MemoryStore

    store = MemoryStore(clock)
    yield store
    store.close()


@contextlib.contextmanager
def _sqlite(clock: FakeClock, tmp_path: Path, request: Any) -> Iterator[JobStore]:
    from chalicelib.storage.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "spool.db"), clock)
    yield store
    store.close()


OPENERS: dict[str, Callable[..., contextlib.AbstractContextManager[JobStore]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
}

BACKENDS = list(OPENERS)


def open_backend(
    name: str, clock: FakeClock, tmp_path: Path, request: Any
) -> contextlib.AbstractContextManager[JobStore]:
    return OPENERS[name](clock, tmp_path, request)
