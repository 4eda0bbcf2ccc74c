"""A client made before a fork, used in both processes, answers each its own requests.

Reproduced against `spool serve` (s60, helper H): a `Client` made at import time in
a program that then forks (multiprocessing, gunicorn --preload, a prefork worker)
handed the child the parent's pooled keep-alive connection. Both processes wrote
requests into the one socket and read whichever answer came: the child's
`get(a)` returned job b (2 of 200 calls), the parent's raised UnexpectedResponse.
Each process now opens connections of its own (Client._forked).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from spool_client import AsyncClient, Client
from tests.apikit import KEY_A
from tests.client_servers import port_of, serve
from tests.fault_proxy import FaultProxy
from tests.procs import stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fork")
    served = serve(f"sqlite:///{folder / 'spool.db'}", folder / "serve.log", "--no-worker")
    try:
        yield served.url
    finally:
        stop(served.proc)


def _in_child(work: object) -> int:
    """Run `work()` in a forked child; its exit status (0: it held)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = 0 if work() else 1  # type: ignore[operator]
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_forked_child_opens_its_own_connection(server: str) -> None:
    proxy = FaultProxy(port_of(server))
    try:
        with Client(proxy.url, KEY_A) as spool:
            job = spool.enqueue("echo", {"n": 1})
            assert spool.get(job.id).id == job.id
            assert proxy.accepted == 1  # the parent's pooled connection
            assert _in_child(lambda: spool.get(job.id).id == job.id) == 0
            assert proxy.accepted == 2  # the child did not write into the parent's
            assert spool.get(job.id).id == job.id
            assert proxy.accepted == 2  # and the parent still uses its own
    finally:
        proxy.close()


def test_an_async_client_in_a_forked_child_opens_its_own_connection(server: str) -> None:
    proxy = FaultProxy(port_of(server))
    spool = AsyncClient(proxy.url, KEY_A)

    async def get_back() -> bool:
        job = await spool.enqueue("echo", {"n": 2})
        return (await spool.get(job.id)).id == job.id

    try:
        assert asyncio.run(get_back())
        assert proxy.accepted == 1
        assert _in_child(lambda: asyncio.run(get_back())) == 0
        assert proxy.accepted == 2
    finally:
        proxy.close()


def test_parent_and_child_calling_at_once_each_get_their_own_answers(server: str) -> None:
    with Client(server, KEY_A) as spool:
        ids = [spool.enqueue("echo", {"n": n}).id for n in range(20)]

        def own_answers(step: int) -> bool:
            return all(
                spool.get(ids[(n * step) % 20]).id == ids[(n * step) % 20] for n in range(150)
            )

        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if own_answers(3) else 1
            finally:
                os._exit(code)
        try:
            assert own_answers(7)
        finally:
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert status == 0


def test_a_closed_client_stays_closed_in_a_forked_child(server: str) -> None:
    spool = Client(server, KEY_A)
    spool.close()

    def refused() -> bool:
        try:
            spool.health()
        except RuntimeError:
            return True
        return False

    assert _in_child(refused) == 0
