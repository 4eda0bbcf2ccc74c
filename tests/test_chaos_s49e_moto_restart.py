"""The SQS worker (events.handle_sqs) when moto_server dies under a running batch and
comes back empty (s49, helper E): the batch's outcome cannot be written, so its
messages are handed back (not acknowledged, nothing lost); after the restart, the
redelivered batch is handed back again (no table), and the API answers 503."""

from __future__ import annotations

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
from tests.moto_proc import MotoServer, moto_server

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:
        yield server


def failed(answer: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def test_moto_dying_mid_batch_hands_the_batch_back_and_a_restart_is_a_503(
    moto: MotoServer, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{moto.port}"
    settings = settings_for(
        tmp_path,
        store_url=f"dynamodb://jobs?queue=jobs&bucket=jobs-bucket&endpoint={endpoint}&create=1",
        lease_seconds=2.0,
    )
    with installed(settings) as rt:
        requests = [
            EnqueueRequest.model_validate({"type": "sleep", "payload": {"seconds": 6}}),
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
        moto.restart()  # same port, nothing in it
        again = events.handle_sqs(event, context("w", timeout_ms=90_000))
        assert sorted(failed(again)) == sorted(r["messageId"] for r in event["Records"])
        api = Api(Client(spool_app.app))
        for reply in (api.get(f"/status/{ids[0]}"), api.post("/enqueue", {"type": "echo"})):
            assert reply.status == 503, reply.body
