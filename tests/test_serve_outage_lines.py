"""`spool serve`'s built-in worker says an outage's end only when the store is back.

Found by a chaos run (helper F, stop 42): the SQLite file was deleted (or damaged)
under a running `spool serve` while a job ran. Its drain rode the outage for a lease's
length, let the result go (logged as not written) and returned, and the
emulator took a drain that returned for a store that answered: "store is back
... the worker carries on" while every call still failed, then "store
unavailable" again at the next drain, once per lease for as long as it lasted.

A real `spool serve` on a SQLite file deleted under it. Waits are generous
bounds on the way to a state, never assertions on speed.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import guarded_env, spool_serve_logged, stop

pytestmark = pytest.mark.timeout(120)

BOUND = 60.0
KEY = "outage-lines-key-0123456789"


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _call(url: str, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"X-API-Key": KEY, "Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        conn.close()


def _worker_lines(log: Path, words: str) -> list[str]:
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "spool.worker:" in line and words in line
    ]


def test_a_drain_that_let_its_results_go_is_no_end_of_the_outage(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    log = tmp_path / "serve.log"
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{db}",
        SPOOL_API_KEYS=f"{KEY}=default",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_LEASE_SECONDS="2",  # how long a drain rides an outage with a result held
    )
    served = spool_serve_logged(log, env=env)
    try:
        status, answer = _call(
            served.url, "POST", "/enqueue", {"type": "sleep", "payload": {"seconds": 1}}
        )
        assert status == 201, answer
        job_id = str(answer["id"])

        def running() -> bool:
            return _call(served.url, "GET", f"/status/{job_id}")[1].get("state") == "running"

        until(running, "the job runs")
        os.unlink(db)  # deleted under it: its result can never be written now
        until(lambda: bool(_worker_lines(log, "outcomes not written")), "the result is let go")
        time.sleep(3.0)  # an outage of several backoff rounds
        assert served.proc.poll() is None, log.read_text()
    finally:
        stop(served.proc)
    assert _worker_lines(log, "store is back") == [], log.read_text()
    assert len(_worker_lines(log, "store unavailable")) == 1, log.read_text()
