"""The SQS poller when moto_server is killed mid-drain and restarted (empty).

Its log said "store unavailable (EndpointConnectionError ...): the SQS poller
waits it out" when the endpoint went, and then nothing at all: once the endpoint
was back without the queue (a restarted moto_server keeps nothing; on AWS, a
deleted queue), every poll failed with "the specified queue does not exist",
which no waiting fixes, and the operator still read only that the endpoint was
unreachable. An outage now says each new reason once (Outage.failed), so the log
names what it is waiting on now; the same reason again says nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.runtime import Runtime
from chalicelib.store_outage import Outage
from tests.apikit import installed, settings_for
from tests.moto_proc import MotoServer, moto_server
from tests.procs import stop
from tests.sqs_chaos_kit import enqueue
from tests.test_chaos_s50e_poller_signals import start_poller


def test_an_outage_says_each_new_reason_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("spool.test_outage")
    outage = Outage(log, "the test loop")
    with caplog.at_level(logging.WARNING, logger="spool.test_outage"):
        outage.failed(StoreUnavailable("AWS is unreachable"))
        outage.failed(StoreUnavailable("AWS is unreachable"))
        outage.failed(StoreUnavailable("the queue does not exist"))
        outage.failed(StoreUnavailable("the queue does not exist"))
        outage.failed(StoreUnavailable("AWS is unreachable"))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "AWS is unreachable" in said[0]
    assert "still unavailable" in said[1] and "the queue does not exist" in said[1]


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto.log") as server:
        yield server


@pytest.fixture
def store(tmp_path: Path, moto: MotoServer) -> Iterator[tuple[str, Runtime]]:
    url = f"dynamodb://lost?queue=lost&bucket=lost-bucket&endpoint={moto.endpoint}&create=1"
    with installed(settings_for(tmp_path, store_url=url)) as rt:
        yield url, rt


def wait_for(path: Path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.aws
@pytest.mark.timeout(180)
def test_the_poller_says_when_a_restarted_endpoint_lost_its_queue(
    store: tuple[str, Runtime], moto: MotoServer, tmp_path: Path
) -> None:
    url, rt = store
    proc = start_poller(url, tmp_path)
    log = tmp_path / "poller.log"
    try:
        for _ in range(5):
            enqueue(rt, "sleep", payload={"seconds": 0.2})
        moto.kill()
        wait_for(log, "EndpointConnectionError")
        moto.restart()
        wait_for(log, "The specified queue does not exist")
        assert proc.poll() is None, "the poller exited"
    finally:
        stop(proc)
