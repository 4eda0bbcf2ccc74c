"""What a redrive gives a dead job back (attempt_ceiling's rule, for the stores).

Kept apart from attempt_ceiling, which reads settings: the stores import this, and
the settings module imported the stores (until stop 59: chalicelib.config no longer
imports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RedriveAttempts:
    """The most attempts a redriven job gets back: attempts_for's bound, the larger of
    the operator's ceiling and the job type's handler default. A redrive restored the
    job's old max_attempts whatever it was, so a job enqueued with 100 before the
    operator set SPOOL_MAX_ATTEMPTS=3 (or lowered it) ran 100 times again on every
    redrive. A job's own number below the bound stands. `above`: the types whose
    handler default is above the ceiling (every other type's bound is the ceiling)."""

    ceiling: int
    above: Mapping[str, int] = field(default_factory=dict)

    def most(self, job_type: str) -> int:
        return max(self.ceiling, self.above.get(job_type, 0))

    def cut(self, job_type: str, max_attempts: int) -> int:
        """A redriven job's max_attempts: its own, at most the bound."""
        return min(max_attempts, self.most(job_type))
