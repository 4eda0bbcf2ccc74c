"""The SQS worker (events.handle_sqs) when moto_server dies under a running batch and
comes back empty (s49, helper E): the batch's outcome cannot be written, so its
messages are handed back (not acknowledged, nothing lost); after the restart, the
redelivered batch is handed back again (no table), and the API answers 503."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

import app as spool_app
from chalicelib import events
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest
from local.emulator import context, sqs_event
from tests.apikit import TENANT_A, Api, installed, settings_for
from tests.procs import guarded_env, stop

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent


class Moto:
    """moto_server on 127.0.0.1, its output in a file; restartable on its port."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        with self.log.open("w") as out:
            process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                env=guarded_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        for _ in range(300):
            found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log.read_text())
            if found:
                self.port = int(found.group(1))
                return process
            if process.poll() is not None:
                break
            time.sleep(0.1)
        stop(process)
        raise RuntimeError(f"moto_server did not run: {self.log.read_text()[-500:]}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def start_again(self) -> None:
        deadline = time.monotonic() + 30
        while True:  # the port may take a moment to be free again
            try:
                self.process = self._start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    server = Moto(tmp_path / "moto.log")
    try:
        yield server
    finally:
        stop(server.process)


def failed(answer: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def test_moto_dying_mid_batch_hands_the_batch_back_and_a_restart_is_a_503(
    moto: Moto, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{moto.port}"
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={endpoint}&create=1",
        lease_seconds=2.0,
    )
    with installed(settings) as rt:
        requests = [
            EnqueueRequest.model_validate({"type": "sleep", "payload": {"seconds": 1.5}}),
            EnqueueRequest.model_validate({"type": "echo", "payload": {"n": 1}}),
        ]
        ids = [made.job.id for made in rt.service.enqueue(requests, TENANT_A)]
        event = sqs_event(spool_app.app, ids)
        answers: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        def invoke() -> None:
            try:
                answers.append(events.handle_sqs(event, context("w", timeout_ms=90_000)))
            except BaseException as exc:  # what Lambda would see as a crash
                errors.append(exc)

        worker = threading.Thread(target=invoke)
        worker.start()
        end = time.monotonic() + 30
        while True:
            job = rt.store.get(ids[0])
            assert job is not None
            if job.state is JobState.RUNNING:
                break
            assert time.monotonic() < end, "the sleep job never started"
            time.sleep(0.05)
        moto.kill()
        worker.join(60)
        assert not worker.is_alive()
        assert errors == []
        # The sleep job's outcome could not be written: its message comes back.
        assert f"msg-0-{ids[0]}" in failed(answers[0]), answers
        moto.start_again()  # same port, nothing in it
        again = events.handle_sqs(event, context("w", timeout_ms=90_000))
        assert sorted(failed(again)) == sorted(r["messageId"] for r in event["Records"])
        api = Api(Client(spool_app.app))
        for reply in (api.get(f"/status/{ids[0]}"), api.post("/enqueue", {"type": "echo"})):
            assert reply.status == 503, reply.body
