"""Threads started together in tests, for the races a store must win."""

from __future__ import annotations

import threading
from collections.abc import Callable


def _capturing(target: Callable[[], object], raised: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    return run


def run_together(
    target: Callable[[], object], count: int, timeout: float = 60.0
) -> list[BaseException]:
    """Run `target` on `count` threads at once and wait for them (each up to `timeout`
    seconds); what they raised, so the test asserts on it in its own thread."""
    raised: list[BaseException] = []
    threads = [threading.Thread(target=_capturing(target, raised)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return raised


def run_alone(target: Callable[[], object], limit: float) -> tuple[bool, BaseException | None]:
    """Run `target` on a daemon thread: (did it return within `limit` seconds, what it
    raised). A call that hangs is left behind, not waited for at exit."""
    raised: list[BaseException] = []
    thread = threading.Thread(target=_capturing(target, raised), daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), (raised[0] if raised else None)
