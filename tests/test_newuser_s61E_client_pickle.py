"""A Client or AsyncClient can be pickled: a multiprocessing pool's workers get one
(stop 61, helper E).

Was: `pool.map(work, [(client, n), ...])` and `pickle.dumps(client)` raised
`TypeError: cannot pickle '_thread.RLock' object` from inside httpx. Now the pickle
carries the URL, key and options (timeout, retry, batch size, answer bound) and no
connection: the copy opens its own. One made with `http=` (the caller's httpx
client) is refused with a TypeError that says to pass url and key instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.server import Server
from spool_client import AsyncClient, Client, RetryPolicy
from tests.apikit import KEY_A
from tests.served import served

POLICY = RetryPolicy(attempts=2, base=0.01, cap=0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with served(tmp_path) as running:
        yield running


def options(client: Any) -> tuple[Any, ...]:
    return (
        client.url,
        client.key,
        client.timeout,
        client.retry,
        client.batch_size,
        client.max_answer_bytes,
    )


@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_the_copy_has_the_same_url_key_and_options(kind: Any) -> None:
    made = kind(
        "http://127.0.0.1:9/base/", KEY_A, timeout=7.5, retry=POLICY, batch_size=3,
        max_answer_bytes=4096,
    )  # fmt: skip
    copy = pickle.loads(pickle.dumps(made))
    assert type(copy) is kind
    assert options(copy) == options(made)
    assert copy._http is not made._http


def test_a_copy_works_against_a_server(server: Server) -> None:
    with Client(server.url, KEY_A, retry=POLICY) as client:
        client.enqueue("echo", {"n": 0})  # the original's pool holds a connection now
        with pickle.loads(pickle.dumps(client)) as copy:
            job = copy.enqueue("echo", {"n": 1})
            assert copy.get(job.id).payload == {"n": 1}


def test_an_async_copy_works_against_a_server(server: Server) -> None:
    async def scenario() -> Any:
        client = AsyncClient(server.url, KEY_A, retry=POLICY)
        async with client, pickle.loads(pickle.dumps(client)) as copy:
            job = await copy.enqueue("echo", {"n": 2})
            return (await copy.get(job.id)).payload

    assert asyncio.run(scenario()) == {"n": 2}


def _enqueue_in_a_pool_worker(args: tuple[Client, int]) -> str:
    client, n = args
    return client.enqueue("echo", {"n": n}).id


def test_a_multiprocessing_pool_gets_the_client(server: Server) -> None:
    """Spawned workers: every argument crosses as a pickle, as on macOS and Windows."""
    with Client(server.url, KEY_A, retry=POLICY) as client:
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            ids = pool.map_async(_enqueue_in_a_pool_worker, [(client, n) for n in range(3)])
            made = ids.get(timeout=120)
        assert sorted(client.get(i).payload["n"] for i in made) == [0, 1, 2]


def test_a_client_given_http_is_refused_saying_what_to_do() -> None:
    with httpx.Client() as http:
        client = Client("http://127.0.0.1:9", KEY_A, http=http)
        with pytest.raises(
            TypeError, match=r"^a Client made with http= cannot be pickled.*pass url and key"
        ):
            pickle.dumps(client)
