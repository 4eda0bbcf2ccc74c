"""One AsyncClient used from one event loop after another, as scripts and tests do.

Reproduced against `spool serve` (s60, helper H): a module-level AsyncClient used
by two `asyncio.run(...)` calls (a sync web view that runs a coroutine per request,
a test suite with a fresh loop per test) raised `RuntimeError: Event loop is
closed` from the second call's first request: the pooled connection belonged to
the first, closed, loop. The client now keeps its pool to one loop and opens new
connections from another (AsyncClient._pool).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from spool_client import AsyncClient, Enqueued
from tests.apikit import KEY_A
from tests.client_servers import serve
from tests.procs import stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("loops")
    served = serve(f"sqlite:///{folder / 'spool.db'}", folder / "serve.log", "--no-worker")
    try:
        yield served.url
    finally:
        stop(served.proc)


def test_one_async_client_serves_one_asyncio_run_after_another(server: str) -> None:
    spool = AsyncClient(server, KEY_A)

    async def round_trip(n: int) -> tuple[Enqueued, str]:
        job = await spool.enqueue("echo", {"n": n})
        return job, (await spool.get(job.id)).id

    try:
        for n in range(3):
            job, seen = asyncio.run(round_trip(n))
            assert seen == job.id and job.created
    finally:
        asyncio.run(spool.aclose())


def test_an_async_client_closed_from_another_loop_is_closed(server: str) -> None:
    spool = AsyncClient(server, KEY_A)
    assert asyncio.run(spool.health())["status"] == "ok"
    asyncio.run(spool.aclose())  # a loop of its own: no "Event loop is closed"
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(spool.health())


def test_an_async_with_block_per_loop_still_works(server: str) -> None:
    async def once() -> str:
        async with AsyncClient(server, KEY_A) as spool:
            status: str = (await spool.health())["status"]
            return status

    assert [asyncio.run(once()) for _ in range(2)] == ["ok", "ok"]
