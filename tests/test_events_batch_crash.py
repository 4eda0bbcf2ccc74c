"""A batch whose processing raises before any job's outcome is known (the worker
cannot be built, the pool breaks) is reported failed as a whole and comes back after
the visibility timeout, as a crashed function's batch does: not handed back at once
as if deferred for want of time. A fault that lasts (a broken handler module) sent
every message round the queue as fast as Lambda could invoke, to the dead-letter
queue within seconds, and back again with the next release. Against moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from chalicelib import events
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from tests.test_aws_events import enqueue, open_runtime, poller, state, visible


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with mock_aws(), open_runtime(tmp_path) as runtime:
        yield runtime


def test_a_batch_that_raises_comes_back_after_the_visibility_timeout(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [enqueue(rt) for _ in range(2)]

    def broken(runtime: Any) -> Any:
        raise RuntimeError("the worker cannot be built")

    monkeypatch.setattr(events, "worker_for", broken)
    result = poller(rt).poll_once()
    assert (result.received, result.deleted, result.failed) == (2, 0, 2)
    assert all(state(rt, i) is JobState.QUEUED for i in ids)
    assert visible(rt) == 0  # hidden for the visibility timeout, not handed back
