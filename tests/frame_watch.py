"""Which functions of a module a call enters, for tests that pin a hot path's shape.

A cost cut that removed a frame (a @contextmanager generator, say) is held by a test
that the frame stays gone: counting instructions belongs to bench/, not to tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def frames_entered(call: Callable[[], Any], module_file: str) -> list[str]:
    """Names of the functions in files ending with `module_file` that `call` entered."""
    called: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.endswith(module_file):
            called.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        call()
    finally:
        sys.setprofile(None)
    return called
