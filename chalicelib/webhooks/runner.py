"""Where delivery runs: a thread beside a long-running worker, and a pass beside
the scheduled function's drain. Both start only when SPOOL_WEBHOOKS (or
SPOOL_WEBHOOKS_PARAMETER) is set (without a secret no delivery can exist), so a
deployment without webhooks pays nothing: not a thread, not a store query, not an
SSM read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chalicelib import logs
from chalicelib.config import Settings

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime
    from chalicelib.webhooks.deliver import Deliverer

log = logging.getLogger("spool.webhooks")
# Delivery threads running in this process: while one runs, the scheduled path
# leaves delivery to it (the emulator invokes that path every moment, and a
# slow receiver must not hold up its next invocation).
_threads = 0
_threads_lock = threading.Lock()


def enabled(settings: Settings) -> bool:
    """Whether webhooks are configured (source.configured: nothing is read from SSM)."""
    from chalicelib.webhooks import source

    return source.configured(settings)


def deliverer(rt: Runtime) -> Deliverer:
    """A Deliverer on the runtime's store, reporting to its metrics."""
    from chalicelib.webhooks.deliver import Deliverer

    metrics = rt.metrics()
    return Deliverer(rt.store, rt.settings, observe=metrics.observe_webhook)


RESTART_PAUSE = 1.0  # before the delivery loop starts again after an error; doubles
MAX_RESTART_PAUSE = 60.0


class DeliveryThread:
    """`spool worker` and `spool serve`: deliver continuously until stopped."""

    def __init__(self, rt: Runtime) -> None:
        self._deliverer = deliverer(rt)
        self._stop = threading.Event()
        # Beside the emulated invocations of `spool serve`, not in them (on Lambda
        # delivery runs in the invocation: beside_drain).
        self._thread = logs.outside_thread(self._run, name="spool-webhooks")

    def _run(self) -> None:
        """Deliver until stopped. An error out of the loop (not a store outage, which it
        rides out itself: a thread that cannot be started for a delivery, say) never
        takes the worker down, and no longer ends delivery for the rest of the
        process's life either, every later webhook left pending: it starts again."""
        pause = RESTART_PAUSE
        while not self._stop.is_set():
            try:
                self._deliverer.run(self._stop)
            except Exception:  # the outbox keeps the deliveries
                log.exception("webhook delivery failed; starting again in %.0f s", pause)
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_RESTART_PAUSE)

    def start(self) -> DeliveryThread:
        global _threads
        with _threads_lock:
            _threads += 1
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        global _threads
        self._stop.set()
        self._thread.join(timeout)
        self._deliverer.close()
        with _threads_lock:
            _threads -= 1


def start_thread(rt: Runtime) -> DeliveryThread | None:
    """The delivery thread when webhooks are configured, else None."""
    if not enabled(rt.settings):
        return None
    return DeliveryThread(rt).start()


@contextlib.contextmanager
def beside_drain(rt: Runtime, deadline: float | None) -> Iterator[None]:
    """Deliver what is due on a thread of its own while the body drains jobs, then
    what the drain itself made due (its jobs' webhooks), before returning: a
    Lambda invocation ends with both done, and a receiver never delays a job."""
    if not enabled(rt.settings) or _threads > 0:
        yield
        return
    worker = deliverer(rt)
    thread = logs.inherited_thread(
        worker.drain, args=(deadline,), name="spool-webhooks", daemon=False
    )
    thread.start()
    try:
        yield
    finally:
        thread.join()
        try:
            worker.drain(deadline)  # the webhooks of the jobs this invocation finished
        finally:
            worker.close()
