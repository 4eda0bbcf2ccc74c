"""`spool serve`'s built-in worker while a limit holds every due job back.

Found by following docs/handlers.md as a new user (helper E, s58): a handler under
`SPOOL_LIMITS` `{"type:send_email": {"rate": "2/s"}}` and a few jobs enqueued over
HTTP. The rate held, but the server's emulated worker invoked `drain_due` again the
moment each drain returned: the job the rate held back was due, so the emulator's
look at the store (`next_due_at`) said "work now" and no wait was made. One CPU core
went to that loop for as long as the limit held (18,000 claims counted in
`spool_job_holds_total` in 5 s; with `rate="100/h"` it would be an hour). `spool
worker` paces such claims (worker.HOLD_POLL); the emulator now does too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import app as spool_app
from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from local.emulator import Emulator
from tests.apikit import TENANT_A, installed, settings_for


def _add(rt: Runtime) -> str:
    request = EnqueueRequest.model_validate({"type": "echo", "payload": {}})
    return rt.service.enqueue([request], TENANT_A)[0].job.id


class _Counting(Emulator):
    """The emulator, counting its invocations and the waits it makes between them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waits = 0
        self.enough = threading.Event()

    def invoke(self) -> Any:
        done = super().invoke()
        if self.invocations >= 20:
            self.enough.set()
        return done

    def _wait_for_work(self, notifier: Any) -> None:
        outer = notifier

        class _Seen:
            """The store's notifier, noting each wait the loop makes on it."""

            def wait(inner, timeout: float) -> bool:
                self.waits += 1
                return bool(outer.wait(timeout))

        super()._wait_for_work(_Seen() if outer is not None else None)


def test_a_job_a_rate_holds_back_is_waited_for_not_claimed_in_a_loop(tmp_path: Path) -> None:
    """The second echo job is held by `rate: 1/h` for an hour: every drain after the
    first finds it due and held. Between two such drains the loop must wait (on the
    store's notifier, which new work wakes at once); before the fix it made no wait at
    all and invoked again, thousands of times a second."""
    limits = '{"type:echo": {"rate": "1/h"}}'
    with installed(settings_for(tmp_path, extra={"SPOOL_LIMITS": limits})) as rt:
        first, held = _add(rt), _add(rt)
        emulator = _Counting(spool_app.app, rt)
        emulator.start()
        try:
            # 20 invocations: a few seconds at the fixed pace, a blink in the loop.
            assert emulator.enough.wait(60)
        finally:
            emulator.stop(timeout=20)
        assert rt.store.get(first).state == JobState.SUCCEEDED  # type: ignore[union-attr]
        assert rt.store.get(held).state == JobState.QUEUED  # type: ignore[union-attr]
        # Each invocation but the last (stop ended the loop) was followed by a wait.
        assert emulator.waits >= emulator.invocations - 1


def test_new_work_still_wakes_the_paced_loop_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause is a wait on the notifier, not a sleep: a job of another type enqueued
    while the held one waits runs without waiting out any pause (here: the loop's
    pause is made an hour long, and the new job must still run)."""
    import local.emulator as emulator_module

    limits = '{"type:echo": {"rate": "1/h"}}'
    with installed(settings_for(tmp_path, extra={"SPOOL_LIMITS": limits})) as rt:
        _add(rt), _add(rt)
        monkeypatch.setattr(emulator_module, "HOLD_POLL", 3600.0)
        emulator = _Counting(spool_app.app, rt)
        emulator.start()
        try:
            request = EnqueueRequest.model_validate({"type": "sleep", "payload": {"seconds": 0}})
            other = rt.service.enqueue([request], TENANT_A)[0].job.id
            deadline = time.monotonic() + 30
            while rt.store.get(other).state != JobState.SUCCEEDED:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the new job waited out the pause"
                time.sleep(0.05)
        finally:
            emulator.stop(timeout=20)
