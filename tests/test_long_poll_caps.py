"""Long-polls (`GET /status/{id}?wait=N`) never take every server thread: a cap per
tenant and one per process answer 429 + Retry-After, and /health keeps answering.
Real concurrent requests over a socket, through waitress (local/server.py)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
import requests

import app as spool_app
from chalicelib.api import routes
from chalicelib.api.waits import TooManyWaits, WaitSlots
from chalicelib.runtime import Runtime
from local.server import ChaliceWSGI, Server
from tests.apikit import KEY_A, KEY_B, TENANT_A, TENANT_B, installed, settings_for

THREADS = 4
LIMITS = {"SPOOL_MAX_WAITS_PER_TENANT": "2", "SPOOL_MAX_WAITS": "3"}


@pytest.fixture
def rt(tmp_path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path, demo_handlers=True, extra=LIMITS)
    with installed(settings) as runtime:
        yield runtime


@pytest.fixture
def base(rt: Runtime) -> Iterator[str]:
    server = Server(ChaliceWSGI(spool_app.app), "127.0.0.1", 0, threads=THREADS)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def until(predicate: Callable[[], bool]) -> bool:
    for _ in range(200):  # bounded: 200 x 0.05 s
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def enqueue(base: str, key: str) -> str:
    reply = requests.post(
        f"{base}/enqueue",
        json={"type": "echo", "delay": 3600},  # stays queued: nothing finishes it
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def long_poll(base: str, key: str, job_id: str) -> requests.Response:
    return requests.get(
        f"{base}/status/{job_id}", params={"wait": 20}, headers={"X-API-Key": key}, timeout=30
    )


def test_waits_over_the_caps_get_429_and_health_keeps_answering(base: str) -> None:
    job_a, job_b = enqueue(base, KEY_A), enqueue(base, KEY_B)
    waits = routes.current().waits
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = [pool.submit(long_poll, base, KEY_A, job_a) for _ in range(2)]
        assert until(lambda: waits.held(TENANT_A) == 2)
        # The tenant's cap is full: its next wait is refused at once.
        refused = long_poll(base, KEY_A, job_a)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_waits"
        assert refused.json()["error"]["details"] == {"limit": 2, "scope": "tenant"}
        assert int(refused.headers["Retry-After"]) >= 1
        # Another tenant may wait, up to the process-wide cap.
        held.append(pool.submit(long_poll, base, KEY_B, job_b))
        assert until(lambda: waits.held() == 3)
        over = long_poll(base, KEY_B, job_b)
        assert over.status_code == 429
        assert over.json()["error"]["details"] == {"limit": 3, "scope": "server"}
        # Every cap is full, and the server still answers everything else.
        health = requests.get(f"{base}/health", timeout=5)
        assert health.status_code == 200
        quick = requests.get(f"{base}/status/{job_a}", headers={"X-API-Key": KEY_A}, timeout=5)
        assert quick.status_code == 200 and quick.json()["state"] == "queued"
        assert not any(f.done() for f in held)  # answered while the waits were held
        # Finishing the jobs (cancel) ends the waits, which free their slots.
        for job_id, key in ((job_a, KEY_A), (job_b, KEY_B)):
            cancel = requests.post(
                f"{base}/jobs/{job_id}/cancel", headers={"X-API-Key": key}, timeout=5
            )
            assert cancel.status_code == 200
        answers = [f.result(timeout=30) for f in held]
    assert [a.json()["state"] for a in answers] == ["cancelled"] * 3
    assert waits.held() == 0


def test_a_finished_job_needs_no_wait_slot(base: str, rt: Runtime) -> None:
    job_id = enqueue(base, KEY_A)
    assert requests.post(f"{base}/jobs/{job_id}/cancel", headers={"X-API-Key": KEY_A}, timeout=5).ok
    waits = routes.current().waits
    waits.per_tenant = waits.total = 1
    with waits.hold(TENANT_A):  # the tenant's only slot is taken
        reply = long_poll(base, KEY_A, job_id)
    assert reply.status_code == 200 and reply.json()["state"] == "cancelled"


def test_slots_are_given_back_even_when_the_wait_fails() -> None:
    slots = WaitSlots(per_tenant=1, total=5)
    with pytest.raises(RuntimeError), slots.hold("t"):
        raise RuntimeError("the store went away mid-wait")
    assert slots.held() == 0 and slots.held("t") == 0
    with slots.hold("t"), pytest.raises(TooManyWaits), slots.hold("t"):
        pass


def test_a_tenant_without_waits_takes_a_slot_from_the_tenant_holding_the_most(
    base: str,
) -> None:
    """Was: tenants at their per-tenant cap filled the process-wide one, and every
    other tenant's wait got 429 until theirs ran out."""
    job_a, job_b = enqueue(base, KEY_A), enqueue(base, KEY_B)
    waits = routes.current().waits
    waits.total = 2  # A's two waits fill the server
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(long_poll, base, KEY_A, job_a)
        assert until(lambda: waits.held(TENANT_A) == 1)
        second = pool.submit(long_poll, base, KEY_A, job_a)
        assert until(lambda: waits.held(TENANT_A) == 2)
        newcomer = pool.submit(long_poll, base, KEY_B, job_b)
        # A's oldest wait answers at once with the job as it stands; A's other stays.
        early = first.result(timeout=10)
        assert early.status_code == 200 and early.json()["state"] == "queued"
        assert until(lambda: waits.held(TENANT_B) == 1 and waits.held(TENANT_A) == 1)
        assert not second.done() and not newcomer.done()
        # Now each holds one: A, short of none, may not take B's back.
        refused = long_poll(base, KEY_A, job_a)
        assert refused.status_code == 429
        assert refused.json()["error"]["details"] == {"limit": 2, "scope": "server"}
        for job_id, key in ((job_a, KEY_A), (job_b, KEY_B)):
            requests.post(f"{base}/jobs/{job_id}/cancel", headers={"X-API-Key": key}, timeout=5)
        assert second.result(timeout=30).json()["state"] == "cancelled"
        assert newcomer.result(timeout=30).json()["state"] == "cancelled"
    assert waits.held() == 0


def test_taking_over_evens_the_split_and_stops_there() -> None:
    slots = WaitSlots(per_tenant=4, total=8)
    with contextlib.ExitStack() as stack:
        held = {t: [stack.enter_context(slots.hold(t)) for _ in range(4)] for t in "ab"}
        c1 = stack.enter_context(slots.hold("c"))  # a's oldest ends (a and b hold 4)
        assert held["a"][0].ending and not any(s.ending for s in held["a"][1:] + held["b"])
        stack.enter_context(slots.hold("c"))  # then b's: b holds 4 against c's 1
        assert held["b"][0].ending and not held["a"][1].ending
        with pytest.raises(TooManyWaits):  # a 3, b 3, c 2: no one holds two more than c
            slots.hold("c").__enter__()
        assert not c1.ending and slots.held() == 10  # the two ending ones still leaving
