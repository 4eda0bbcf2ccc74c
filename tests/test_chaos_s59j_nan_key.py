"""A result whose dict has a NaN or infinite key is refused in the handler's terms.

Was: the worker's refusal named NaN or Infinity only when one was a value; as a key
(`{float("nan"): 1}`, as a table keyed by a measured ratio makes) the job went dead
with Python's own words, "Out of range float values are not JSON compliant", where
docs/handlers.md promises that the error names NaN or Infinity.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import new_job


@pytest.mark.parametrize(
    "result",
    [{float("nan"): "b"}, {"rows": [{1.5: "a", float("-inf"): "b"}]}],
    ids=["nan-key", "nested-inf-key"],
)
def test_a_non_finite_key_is_named(mem: MemoryStore, clock: FakeClock, result: Any) -> None:
    reg = Registry()

    @reg.handler("table", max_attempts=1)
    def table(payload: dict[str, Any]) -> Any:
        return result

    added = mem.add([new_job(clock, "table", max_attempts=1)])[0].job
    worker = Worker(mem, reg, WorkerConfig(concurrency=1))
    try:
        worker.drain()
    finally:
        worker.close()
    job = mem.get(added.id)
    assert job is not None and job.state is JobState.DEAD and job.result is None
    assert job.last_error == (
        "result is not JSON: a dict's key is NaN or Infinity (use a string key instead)"
    )
