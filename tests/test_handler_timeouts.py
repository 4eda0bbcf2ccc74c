"""One long handler timeout must not stall every job, and one too long is refused.

The SQS worker starts a job only while its own handler's timeout still fits
before the Lambda deadline; a handler longer than the worker function itself is
a deployment error, refused at start-up (SPOOL_WORKER_TIMEOUT) and by
`make package` (python -m chalicelib.handler_check).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import app as spool_app
from chalicelib import handler_check
from chalicelib.config import ConfigError, Settings
from chalicelib.handlers import HandlerSpec, Registry, registry
from chalicelib.models import JobState
from chalicelib.retry import RetryPolicy
from chalicelib.runtime import Runtime, build_runtime
from chalicelib.service import EnqueueRequest
from local.emulator import context, sqs_event
from tests.apikit import TENANT_A, settings_for
from tests.factories import stored
from tests.procs import guarded_env

ROOT = Path(__file__).resolve().parent.parent
LONG = "long_report"


def _long_report(payload: dict[str, object]) -> dict[str, object]:
    return payload


@pytest.fixture
def long_handler() -> Iterator[HandlerSpec]:
    """A handler with a 900 s timeout, registered process-wide for one test."""
    spec = HandlerSpec(LONG, _long_report, None, RetryPolicy(), 900.0, takes_context=False)
    registry.register(spec)
    try:
        yield spec
    finally:
        registry._specs.pop(LONG, None)


def add(rt: Runtime, type_: str) -> str:
    request = EnqueueRequest.model_validate({"type": type_, "payload": {"n": 1}})
    return rt.service.enqueue([request], TENANT_A)[0].job.id


def run_jobs(event: dict[str, object], timeout_ms: int) -> dict[str, object]:
    result: dict[str, object] = spool_app.app.handler_map["run_jobs"](
        event, context("run_jobs", timeout_ms)
    )
    return result


def test_a_long_handler_defers_only_its_own_jobs(rt: Runtime, long_handler: HandlerSpec) -> None:
    echo, long = add(rt, "echo"), add(rt, LONG)
    event = sqs_event(spool_app.app, [echo, long])
    long_message = event["Records"][1]["messageId"]
    result = run_jobs(event, timeout_ms=60_000)  # 60 s left: echo (30 s) fits, 900 s does not
    assert result == {"batchItemFailures": [{"itemIdentifier": long_message}]}
    echo_job, long_job = rt.store.get(echo), rt.store.get(long)
    assert echo_job is not None and echo_job.state == JobState.SUCCEEDED
    # Handed back untouched: not claimed, so no attempt was spent on it.
    assert long_job is not None and (long_job.state, long_job.attempts) == (JobState.QUEUED, 0)
    # Given room for its own timeout (more than Lambda allows: hence the start-up check), it runs.
    redelivered = run_jobs(sqs_event(spool_app.app, [long]), timeout_ms=1_000_000)
    assert redelivered == {"batchItemFailures": []}
    done = rt.store.get(long)
    assert done is not None and done.state == JobState.SUCCEEDED


def test_nothing_is_read_when_every_timeout_fits(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = add(rt, "echo")

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a batch that fits must go straight to the claim")

    monkeypatch.setattr(rt.store, "get", no_reads)
    assert run_jobs(sqs_event(spool_app.app, [job_id]), timeout_ms=900_000) == {
        "batchItemFailures": []
    }
    monkeypatch.undo()
    assert stored(rt.store, job_id).state == JobState.SUCCEEDED


def test_start_up_refuses_a_handler_longer_than_the_worker_function(
    tmp_path: Path, long_handler: HandlerSpec
) -> None:
    settings = settings_for(tmp_path, extra={"SPOOL_WORKER_TIMEOUT": "600"})
    with pytest.raises(ConfigError) as caught:
        build_runtime(settings)
    message = str(caught.value)
    assert "'long_report' has timeout=900s" in message and "timeout is 600s" in message
    assert not (tmp_path / "spool.db").exists()  # refused before the store was opened


def test_start_up_accepts_handlers_that_fit(tmp_path: Path) -> None:
    rt = build_runtime(settings_for(tmp_path, extra={"SPOOL_WORKER_TIMEOUT": "900"}))
    rt.close()


def test_a_handler_needs_its_timeout_and_ten_seconds_of_the_function_s() -> None:
    """1 s (the drain margin) was the whole allowance: timeout=239 passed under a 240 s
    worker, yet a fresh invocation already had a little less than 240 s left when it
    judged the job, and deferred it every time."""
    spec = HandlerSpec("edge", _long_report, None, RetryPolicy(), 890.0)
    assert handler_check.too_long([spec], 900.0) == []
    (message,) = handler_check.too_long([spec], 899.0)
    assert "timeout=890s" in message and "timeout is 899s" in message and "889s" in message
    almost = HandlerSpec("edge", _long_report, None, RetryPolicy(), 239.0)
    assert handler_check.too_long([almost], 240.0)  # the case that never ran


def test_a_malformed_worker_timeout_is_a_config_error() -> None:
    settings = Settings(extra={"SPOOL_WORKER_TIMEOUT": "fifteen minutes"})
    with pytest.raises(ConfigError, match="SPOOL_WORKER_TIMEOUT"):
        handler_check.worker_timeout(settings)


def test_stage_config_follows_chalices_precedence() -> None:
    config = {
        "environment_variables": {"A": "top", "B": "top"},
        "stages": {
            "plain": {},
            "staged": {"lambda_timeout": 120, "environment_variables": {"B": "stage"}},
            "function": {"lambda_functions": {"run_jobs": {"lambda_timeout": 300}}},
        },
    }
    assert handler_check.stage_config(config, "plain") == ({"A": "top", "B": "top"}, 60.0)
    assert handler_check.stage_config(config, "staged") == ({"A": "top", "B": "stage"}, 120.0)
    assert handler_check.stage_config(config, "function")[1] == 300.0
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        handler_check.stage_config(config, "nope")


def check_script(
    tmp_path: Path, config: Mapping[str, object], stage: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.handler_check", "--stage", stage, "--config", str(path)],
        cwd=ROOT, env=guarded_env(PYTHONPATH=f"{tmp_path}:{ROOT}"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_make_packages_check_refuses_a_long_handler_naming_both_numbers(tmp_path: Path) -> None:
    (tmp_path / "my_reports.py").write_text(
        "from chalicelib.handlers import handler\n\n"
        "@handler('nightly_report', timeout=900)\n"
        "def nightly_report(payload):\n    return payload\n"
    )
    config = {
        "stages": {
            "prod": {
                "environment_variables": {"SPOOL_HANDLERS": "my_reports"},
                "lambda_functions": {"run_jobs": {"lambda_timeout": 300}},
            }
        }
    }
    result = check_script(tmp_path, config, "prod")
    assert result.returncode == 1
    assert "'nightly_report' has timeout=900s" in result.stderr
    assert "timeout is 300s" in result.stderr


def test_make_packages_check_refuses_a_worker_timeout_that_disagrees(tmp_path: Path) -> None:
    config = {
        "stages": {
            "dev": {
                "environment_variables": {"SPOOL_WORKER_TIMEOUT": "600"},
                "lambda_functions": {"run_jobs": {"lambda_timeout": 900}},
            }
        }
    }
    result = check_script(tmp_path, config, "dev")
    assert result.returncode == 1 and "must be equal" in result.stderr


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_shipped_stages_pass_the_check(stage: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.handler_check", "--stage", stage],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("timeout", [43_200.5, 86_400, 1e300])
def test_a_timeout_over_twelve_hours_is_refused_where_it_is_declared(timeout: float) -> None:
    """Nothing bounded a timeout from above: timeout=1e300 registered, and meant none (a
    hung handler kept its thread and its concurrency slot for ever); past 12 hours SQS
    can no longer hide the job's message, so the job reaches a second worker meanwhile."""
    registry = Registry()
    with pytest.raises(ValueError) as caught:
        registry.handler("etl", timeout=timeout)(_long_report)
    message = str(caught.value)
    assert message.startswith("handler 'etl': timeout=") and "over 43200s (12 hours)" in message
    assert "etl" not in registry.types()
    registry.handler("etl", timeout=43_200)(_long_report)  # the bound itself is allowed
    spec = registry.get("etl")
    with pytest.raises(ValueError, match="over 43200s"):  # a spec replaced in code, too
        Registry().register(dataclasses.replace(spec, timeout=timeout))


def test_a_worker_timeout_over_lambdas_maximum_is_refused() -> None:
    settings = Settings(extra={"SPOOL_WORKER_TIMEOUT": "1200"})
    with pytest.raises(ConfigError, match=r"SPOOL_WORKER_TIMEOUT must be .*900"):
        handler_check.worker_timeout(settings)


def test_a_queue_that_hides_a_message_for_less_than_the_worker_may_run_is_refused(
    tmp_path: Path,
) -> None:
    """A message visible again while run_jobs may still run its job is delivered twice."""
    short = {"SPOOL_WORKER_TIMEOUT": "240", "SPOOL_SQS_VISIBILITY_TIMEOUT": "120"}
    with pytest.raises(ConfigError) as caught:
        build_runtime(settings_for(tmp_path, extra=short))
    assert "SPOOL_SQS_VISIBILITY_TIMEOUT=120 is shorter than SPOOL_WORKER_TIMEOUT=240" in str(
        caught.value
    )
    enough = {"SPOOL_WORKER_TIMEOUT": "240", "SPOOL_SQS_VISIBILITY_TIMEOUT": "480"}
    build_runtime(settings_for(tmp_path, extra=enough)).close()
