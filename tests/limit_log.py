"""The attempt log the limit tests read (tests/limit_handlers.py writes it).

Kept apart from the handler module so importing it does not register the
handler in the process-wide registry of the test run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

LOG_DIR_ENV = "SPOOL_LIMIT_LOG_DIR"
LIMITED_TYPE = "limits.slow"


def most_at_once(log_dir: str, killed: Mapping[int, float] | None = None) -> tuple[int, int]:
    """(the most attempts running at the same moment, attempts seen) over every log.

    `killed` maps the pid of a process killed (SIGKILL) to when: its attempts that
    logged no end ended then."""
    events: list[tuple[float, int]] = []
    for name in os.listdir(log_dir):
        open_starts = 0
        with open(os.path.join(log_dir, name)) as f:
            for line in f:
                what, at = line.split()
                # Ends sort before starts at the same instant: back to back is not overlap.
                events.append((float(at), 1 if what == "start" else -1))
                open_starts += 1 if what == "start" else -1
        pid = int(name.removeprefix("attempts-").removesuffix(".log"))
        if killed and pid in killed:
            events.extend([(killed[pid], -1)] * open_starts)
    events.sort()
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak, sum(1 for _, step in events if step == 1)
