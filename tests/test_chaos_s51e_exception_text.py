"""An exception whose str() raises a BaseException is the handler's failure, named as such.

Was: Spool read a handler's exception text with `except Exception` around str(), so
an exception whose __str__ raised SystemExit or KeyboardInterrupt (a library calling
sys.exit() in a formatter, a signal-shaped class) escaped the reading itself:
- in the worker, the attempt was recorded as Spool's own fault ("worker error:
  SystemExit: ...", error_type SystemExit), the handler's class lost;
- in a payload check at enqueue, the SystemExit left PayloadCheck as itself, not as
  the 503 naming the handler: under `spool serve` that ends the serving thread, the
  failure PayloadCheck exists to prevent.

Now one reading (models.exception_text) holds any failure of str() to the
placeholder, except a KeyboardInterrupt on the main thread (Ctrl-C, as ever).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from chalicelib.clock import FakeClock
from chalicelib.errors import Misconfigured
from chalicelib.handlers import PayloadCheck, Registry
from chalicelib.models import JobState
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.factories import history, new_job

UNREAD = "<the exception's message could not be read>"


class ExitsInStr(Exception):
    def __str__(self) -> str:
        raise SystemExit("from __str__")


class InterruptsInStr(BaseException):
    def __str__(self) -> str:
        raise KeyboardInterrupt


@pytest.mark.parametrize("kind", [ExitsInStr, InterruptsInStr])
def test_the_worker_names_the_handler_s_exception_not_a_worker_error(
    mem: MemoryStore, clock: FakeClock, reg: Registry, kind: type[BaseException]
) -> None:
    @reg.handler("odd", max_attempts=2, backoff=(1.0, 1.0))
    def odd(payload: dict[str, Any]) -> None:
        raise kind()

    job = mem.add([new_job(clock, "odd", max_attempts=2)])[0].job
    worker = Worker(mem, reg, WorkerConfig(concurrency=1), rng=random.Random(1))
    try:
        worker.drain()
    finally:
        worker.close()
    waiting = mem.get(job.id)
    assert waiting is not None and waiting.state is JobState.RETRYING
    assert waiting.last_error == f"{kind.__name__}: {UNREAD}"
    [attempt] = history(mem, job.id)
    assert (attempt.error_type, attempt.error) == (kind.__name__, waiting.last_error)


@pytest.mark.parametrize("kind", [ExitsInStr, InterruptsInStr])
def test_a_payload_check_s_exception_is_the_503_whatever_its_str_raises(
    kind: type[BaseException],
) -> None:
    """On a serving thread (not the main one, where Ctrl-C arrives and passes)."""
    escaped: list[BaseException] = []

    def check() -> None:
        try:
            with PayloadCheck("odd", {}):
                raise kind()
        except BaseException as exc:
            escaped.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(10)
    [refused] = escaped
    assert isinstance(refused, Misconfigured), repr(refused)
    assert f"{kind.__name__}: {UNREAD}" in refused.message
