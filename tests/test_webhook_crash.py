"""A worker SIGKILLed in the middle of a delivery: the webhook is delivered anyway,
possibly twice, always under the same webhook-id, and never lost.

Real `spool worker` processes on a real store (a SQLite file; Postgres too), a
receiver on a loopback socket that holds the first request unanswered while
the worker that sent it is killed. The delivery's lease then runs out (timeout
x 2 + 5 s) and the next worker delivers it again.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.config import Settings
from chalicelib.models import JobState
from chalicelib.runtime import build_runtime
from chalicelib.service import EnqueueRequest
from chalicelib.webhooks import signing
from spool_client.webhooks import verify
from tests.factories import stored
from tests.pg_support import sqlite_or_postgres
from tests.procs import ROOT, guarded_env, stop
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

SECRET = signing.new_secret()
HOOKS = json.dumps({"crash": {"secrets": [SECRET]}})


@contextlib.contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(kind, tmp_path) as url:
        yield url


def worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = guarded_env(
        SPOOL_STORE_URL=url,
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_WEBHOOKS=HOOKS,
        SPOOL_WEBHOOK_ALLOW_PRIVATE="true",
        SPOOL_WEBHOOK_TIMEOUT="1",  # lease: 1 x 2 + 5 = 7 s
        SPOOL_WEBHOOK_BACKOFF="0.2",
        SPOOL_WEBHOOK_POLL="0.1",
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "local.cli", "worker", "--quiet"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_worker_killed_mid_delivery_is_delivered_by_the_next(tmp_path: Path, kind: str) -> None:
    receiver = Receiver()
    receiver.hang.set()  # the first request is read, then held without an answer
    receiver.up()
    with store_url(kind, tmp_path) as url:
        settings = Settings(store_url=url, demo_handlers=True, extra={"SPOOL_WEBHOOKS": HOOKS,
                            "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true"})  # fmt: skip
        rt = build_runtime(settings)
        first = second = None
        try:
            [added] = rt.service.enqueue(
                [EnqueueRequest(type="echo", payload={"n": 1}, callback_url=receiver.url)], "crash"
            )
            job_id = added.job.id
            first = worker(url, tmp_path / "first.log")
            receiver.wait_for(lambda got: len(got) == 1)  # mid-delivery now
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            receiver.hang.clear()  # from now on, answer 204
            receiver.released.set()  # the held request ends with no answer
            assert stored(rt.store, job_id).state is JobState.SUCCEEDED
            [pending] = rt.store.webhooks(job_id)
            assert pending.state == "pending" and pending.attempts == 1
            killed_at = time.monotonic()
            second = worker(url, tmp_path / "second.log")
            receiver.wait_for(lambda got: len(got) == 2, timeout=30)
            assert time.monotonic() - killed_at < 25
            deadline = time.monotonic() + 10
            while rt.store.webhooks(job_id)[0].state == "pending":
                assert time.monotonic() < deadline, "the second attempt was never recorded"
                time.sleep(0.05)
            [done] = rt.store.webhooks(job_id)
            assert done.state == "delivered" and done.attempts == 2
            ids = {r.headers["webhook-id"] for r in receiver.requests}
            assert ids == {done.id}  # twice, under one id: the receiver drops the repeat
            for got in receiver.requests:
                assert verify(got.body, got.headers, SECRET)["data"]["id"] == job_id
        finally:
            for proc in (first, second):
                if proc is not None:
                    stop(proc)
            rt.close()
            receiver.released.set()
            receiver.down()
