"""The webhook delivery thread beside `spool worker` and `spool serve` outlives an error.

Store outages are ridden out inside the delivery loop; anything else that escaped it
(here: the pool cannot start a thread for a delivery, as when a handler has leaked
threads up to the process's limit) ended the thread with "webhook delivery stopped",
and every webhook after it stayed pending until the process was restarted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.runtime import Runtime
from chalicelib.webhooks import runner
from tests.apikit import TENANT_A, installed, settings_for
from tests.test_webhook_events import SECRET, drain_due, enqueue
from tests.webhook_receiver import Receiver


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """Webhooks on, with a short delivery lease (twice the timeout plus 5 s): the
    delivery claimed when the pool refused its thread is taken again once it lapses."""
    extra = {
        "SPOOL_WEBHOOKS": json.dumps({TENANT_A: {"secrets": [SECRET]}}),
        "SPOOL_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPOOL_WEBHOOK_TIMEOUT": "0.5",
        "SPOOL_WEBHOOK_BACKOFF": "0.2",  # an attempt timed out on a loaded machine retries soon
    }
    with installed(settings_for(tmp_path, extra=extra)) as runtime:
        yield runtime


def states(rt: Runtime, job_id: str) -> list[str]:
    return [h.state for h in rt.store.webhooks(job_id)]


def test_delivery_starts_again_after_an_error_out_of_its_loop(
    rt: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(runner, "RESTART_PAUSE", 0.05)
    thread = runner.DeliveryThread(rt)
    pool = thread._deliverer._pool
    submit = pool.submit
    failures: list[str] = []

    def no_thread_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append("refused")
            raise RuntimeError("can't start new thread")
        return submit(*args, **kwargs)

    monkeypatch.setattr(pool, "submit", no_thread_once)
    thread.start()
    try:
        job_id = enqueue(rt, receiver.url)
        drain_due()  # runs the job; the thread delivers its webhook
        receiver.wait_for(lambda got: len(got) >= 1, timeout=30)
        # A loaded machine can take past the 0.5 s timeout to answer: the attempt is
        # then retried, and the test waits for the one that is recorded delivered.
        deadline = time.monotonic() + 60
        while states(rt, job_id) != ["delivered"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
    assert failures == ["refused"]
    assert states(rt, job_id) == ["delivered"]
    assert "webhook delivery failed; starting again" in caplog.text
