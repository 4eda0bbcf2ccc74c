"""How the contract suite opens each backend. A new backend adds one entry here
and must then pass tests/contract/ unchanged."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from chalicelib.clock import FakeClock
from chalicelib.storage.base import JobStore
from tests import moto_rollback, moto_sqs_counts


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


@contextlib.contextmanager
def _dynamodb(clock: FakeClock, tmp_path: Path, request: Any) -> Iterator[JobStore]:
    """moto in-process: a fresh table, queue and bucket per test.

    tests/test_dynamodb_shards.py runs the contract again with sharded indexes."""
    from moto import mock_aws

    from chalicelib.storage.dynamodb import (
        DynamoConfig,
        DynamoStore,
        create_resources,
        make_clients,
    )

    moto_rollback.install()
    moto_sqs_counts.install()
    with mock_aws():
        config = DynamoConfig(table="spool", queue="spool", bucket="spool")
        ddb, sqs, s3 = make_clients(config)
        lock = threading.Lock()
        for client in (ddb, sqs, s3):
            _atomic_requests(client, lock)
        create_resources(config, ddb, sqs, s3)
        store = DynamoStore(config, clock, ddb=ddb, sqs=sqs, s3=s3)
        with _ShallowStack(store) as proxied:
            yield cast(JobStore, proxied)
        store.close()


def _atomic_requests(client: Any, lock: threading.Lock) -> None:
    """Each request of a moto client runs whole before the next begins.

    DynamoDB applies a conditional write or a transaction atomically; moto in-process
    does not (its check and its write interleave between threads: a job claimed twice,
    an item read half written). With every request atomic, the contract's tests from
    many threads interleave the store's requests as DynamoDB would, and test its
    conditional writes: before, every call went through one thread (_ShallowStack),
    and those tests ran their claims one after another on DynamoDB."""
    real = client._make_api_call

    def atomic(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return real(*args, **kwargs)

    client._make_api_call = atomic


# Threads of _ShallowStack's pool: as many as the contract's tests run store calls at once
# (tests/threads.run_together), so those calls interleave, one request at a time.
SHALLOW_THREADS = 8


class _ShallowStack:
    """Runs every call of the wrapped store on a thread of its own pool.

    Under Python 3.11 a deep stack (pytest + Hypothesis + moto's recursive
    serializer) keeps crossing a frame-stack chunk boundary, and CPython maps and
    unmaps a chunk each time: the model test spent two thirds of its time in
    mmap/munmap. A fresh thread starts shallow, which makes it about 3x faster.
    """

    def __init__(self, target: object) -> None:
        self._target = target
        self._pool = concurrent.futures.ThreadPoolExecutor(
            SHALLOW_THREADS, thread_name_prefix="moto"
        )

    def __enter__(self) -> _ShallowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            policy = kwargs.get("policy")
            if policy is None:
                return self._pool.submit(value, *args, **kwargs).result()

            def watched() -> tuple[Any, list[Any]]:
                # Holds are recorded per thread: carry them back to the caller's.
                with policy.holds.watch() as holds:
                    return value(*args, **kwargs), holds

            result, holds = self._pool.submit(watched).result()
            for hold in holds:
                policy.holds.record(hold)
            return result

        return call


@contextlib.contextmanager
def _postgres(clock: FakeClock, tmp_path: Path, request: Any) -> Iterator[JobStore]:
    """The real server: a fresh migrated schema per test, dropped afterwards."""
    from chalicelib.storage.postgres import from_url
    from tests.pg_support import fresh_schema

    with fresh_schema() as url:
        store = from_url(url, clock)
        yield store
        store.close()


@contextlib.contextmanager
def _redis(clock: FakeClock, tmp_path: Path, request: Any) -> Iterator[JobStore]:
    """The real server: a fresh key prefix per test, its keys deleted afterwards."""
    from chalicelib.storage.redis_store import from_url
    from tests.redis_support import fresh_prefix

    with fresh_prefix() as url:
        store = from_url(url, clock)
        yield store
        store.close()


OPENERS: dict[str, Callable[..., contextlib.AbstractContextManager[JobStore]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "dynamodb": _dynamodb,
    "postgres": _postgres,
    "redis": _redis,
}

BACKENDS = list(OPENERS)


def open_backend(
    name: str, clock: FakeClock, tmp_path: Path, request: Any
) -> contextlib.AbstractContextManager[JobStore]:
    return OPENERS[name](clock, tmp_path, request)
