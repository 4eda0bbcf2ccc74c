"""Threads started together in tests, for the races a store must win."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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


def on_a_shallow_stack(target: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`target(*args, **kwargs)` on a fresh thread, its result (or what it raised) here.

    Under Python 3.11 a call made from deep in pytest's stack that recurses through
    moto's serializer keeps crossing a frame-stack chunk boundary, and CPython maps and
    unmaps a chunk each time (tests/backends.py's _ShallowStack): tests/test_held_backlog.py
    took 8.9 s called from the test and 4.9 s called here. A fresh thread starts shallow."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shallow") as pool:
        return pool.submit(target, *args, **kwargs).result()
