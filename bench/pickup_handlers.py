"""Handlers for bench/worker_paths.py, loaded by `spool worker` through SPOOL_HANDLERS.

They return the wall-clock time the handler started, so the bench (another process
on the same machine) can tell how long a job waited after its enqueue was
acknowledged, and how long its result took to be written after it ran.
"""

from __future__ import annotations

import time
from typing import Any

from chalicelib.handlers import handler


@handler("bench.stamp", max_attempts=1)
def stamp(payload: dict[str, Any]) -> float:
    return time.time()
