"""The timing histograms' buckets: every attempt a handler may run has a finite
bucket, so a quantile over long jobs is an estimate, not the last bucket's edge."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from chalicelib.api.metrics import Metrics
from chalicelib.config import Settings
from chalicelib.handlers import MAX_TIMEOUT
from chalicelib.storage import open_store

FAMILY = "spool_job_run_duration_seconds"


def _buckets(metrics: Metrics) -> dict[float, float]:
    """The one series' cumulative counts by upper bound (+Inf included)."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name == FAMILY:
            return {
                float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")
            }
    raise AssertionError(f"no {FAMILY}")


def test_attempts_up_to_the_longest_timeout_land_in_finite_buckets() -> None:
    metrics = Metrics(open_store("memory://"), Settings())
    series = metrics.run_duration.labels("default", "echo", "succeeded")
    series.observe(2 * 3600)  # a two-hour report: allowed (timeout up to 12 hours)
    series.observe(MAX_TIMEOUT)
    buckets = _buckets(metrics)
    finite = sorted(le for le in buckets if le != float("inf"))
    assert finite[-1] >= MAX_TIMEOUT
    assert buckets[finite[-1]] == 2  # neither only in +Inf
    # two hours and twelve are told apart: some finite bucket holds the first alone
    assert any(buckets[le] == 1 for le in finite)
