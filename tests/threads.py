"""Threads started together in tests, for the races a store must win."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_together(
    target: Callable[[], object], count: int, timeout: float = 60.0
) -> list[BaseException]:
    """Run `target` on `count` threads at once and wait for them (each up to `timeout`
    seconds); what they raised, so the test asserts on it in its own thread."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return raised
