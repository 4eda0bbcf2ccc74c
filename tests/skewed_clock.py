"""`python -m tests.skewed_clock SECONDS ARGS...`: the spool CLI on a host whose wall
clock is off by SECONDS (ahead when positive), as after a bad NTP step or on a VM
whose clock drifted. Only this process's SystemClock moves: the store server's
clock, and every other process's, stay true.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from chalicelib import clock


def skew(seconds: float) -> None:
    """Move SystemClock (this host's wall clock, as Spool reads it) by `seconds`."""
    off = timedelta(seconds=seconds)
    true_now = clock.SystemClock.now

    def now(self: clock.SystemClock) -> datetime:
        return true_now(self) + off

    clock.SystemClock.now = now  # type: ignore[method-assign]


if __name__ == "__main__":
    skew(float(sys.argv[1]))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    from local.cli import console

    console()
