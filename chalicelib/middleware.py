"""The worker's hooks around each attempt, in a module of their own.

Middleware (metrics, tracing, logging) is defined by code on the API path too
(chalicelib/api/metrics.py builds the metrics middleware when the HTTP edge
starts), and importing it from here keeps chalicelib.worker, with its thread
pool, out of the API function's cold start. chalicelib.worker re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.limits import Hold
    from chalicelib.models import Completion, Job


class Middleware:
    """Hooks around each attempt (metrics, tracing, logging). Override what you need."""

    def before_attempt(self, job: Job) -> None:
        """Called in the pool thread just before the handler runs."""

    def after_attempt(self, job: Job, completion: Completion, seconds: float) -> None:
        """Called once the attempt's outcome is known (before it is written)."""

    def after_claim(self, claimed: Sequence[Job], holds: Sequence[Hold]) -> None:
        """Called after each claim: the jobs it took and the due jobs limits held back."""

    def after_flush(self, completions: Sequence[Completion], applied: Sequence[bool]) -> None:
        """Called after a batch of completions was written to the store."""
