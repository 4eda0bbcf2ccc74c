"""The request budget on AWS, with the deployed settings (bench/aws_requests.py reads
them from .chalice/config.json, infra/generate.py and app.py): at most 2.5 requests
per job when jobs come in full batches, at most 4 under light load (one job per
request, one a second), status reads not counted. Counts, not timings: moto answers
every request, so the numbers are exact on any machine."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from bench.aws_requests import ROOT, Deployed, deployed, measure_full, measure_light
from chalicelib.config import Settings
from infra import generate


def test_the_bench_runs_what_the_stage_deploys() -> None:
    settings = deployed("prod")
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    run_jobs = config["stages"]["prod"]["lambda_functions"]["run_jobs"]
    assert settings.timeout_ms == run_jobs["lambda_timeout"] * 1000
    assert settings.window == generate.BATCH_WINDOW > 0
    assert settings.batch_size == 10
    assert settings.concurrency == Settings.from_env(settings.env).concurrency == 8
    url = settings.env["SPOOL_STORE_URL"]
    assert generate.STORE_OPTIONS in url and "bucket=" in url


# The worker container's heartbeat (Worker._beat): one UpdateItem at its start, then one
# every SPOOL_HEARTBEAT_SECONDS (15 s as deployed). These runs take a few seconds alone,
# but tens on a loaded machine (parallel workers), which made the count 2 or 3 there;
# with the beats an hour apart it is the first one only, on any machine.
HEARTBEAT = 1


def one_beat() -> Deployed:
    """The deployed settings, with the heartbeat an hour apart (see HEARTBEAT)."""
    settings = deployed()
    return replace(settings, env={**settings.env, "SPOOL_HEARTBEAT_SECONDS": "3600"})


def test_full_batches_cost_at_most_two_and_a_half_requests_per_job() -> None:
    result = measure_full(jobs=40, enqueue_batch=10, settings=one_beat())
    assert result.per_job <= 2.5, result.by_operation
    ops = result.by_operation
    assert ops["sqs:SendMessageBatch"] == 4  # ten ids to a request
    assert ops["sqs:ReceiveMessage"] == 5 and ops["sqs:DeleteMessageBatch"] == 4
    # Each batch of 10 runs in waves of 8 and 2 (the worker's pool): the 8 are claimed
    # with one read and one transaction, the 2 with one UpdateItem each.
    assert ops["dynamodb:BatchGetItem"] == 4
    # + 1: the worker's heartbeat, an upsert at most every SPOOL_HEARTBEAT_SECONDS.
    assert ops["dynamodb:UpdateItem"] == 8 + HEARTBEAT
    # 4 enqueues, 4 claims, and one finish per wave. Seen once in CI under load: 17. A
    # wave's jobs all count as in flight from its claim's return until each ends, so a
    # quick job's finish waits for the others (tests/test_wave_written.py plays a wave
    # of 2 claimed a job at a time, its first job ending while the second waits). What
    # can write a wave twice is its hold: a finish waits at most WAVE_HOLD (1 s) for the
    # wave's slower jobs, and a starved process can leave one echo that far behind.
    assert 4 + 4 + 8 <= ops["dynamodb:TransactWriteItems"] <= 4 + 4 + 8 + 4
    assert result.s3 == 0  # small payloads stay in the record


def test_light_load_costs_at_most_four_requests_per_job() -> None:
    result = measure_light(jobs=20, interval=1.0, settings=one_beat())
    assert result.invocations == 4  # five jobs gathered by each 5 s window
    assert result.per_job <= 4.0, result.by_operation
    ops = result.by_operation
    assert ops["sqs:SendMessageBatch"] == ops["sqs:ReceiveMessage"] == 20
    assert ops["sqs:DeleteMessageBatch"] == ops["dynamodb:BatchGetItem"] == 4
    assert ops["dynamodb:TransactWriteItems"] == 20 + 4 + 4  # adds, claims, finishes
    assert ops["dynamodb:UpdateItem"] == HEARTBEAT  # claims ride in the transactions


def test_a_trickle_is_one_message_per_invocation_and_six_requests_per_job() -> None:
    """Jobs further apart than the window: the floor, two requests to enqueue, two
    for Lambda's receive and delete, one claim and one finish."""
    result = measure_light(jobs=10, interval=10.0, settings=one_beat())
    assert result.invocations == 10
    ops = result.by_operation
    assert ops["dynamodb:UpdateItem"] == 10 + HEARTBEAT  # a lone job: claimed without a read
    assert ops["dynamodb:TransactWriteItems"] == 20
    assert "dynamodb:BatchGetItem" not in ops


def test_a_waves_completions_are_written_together_when_its_jobs_end_apart() -> None:
    """Jobs of one wave ending tens of milliseconds apart still finish in one write
    (each used to be flushed as it ended: up to one TransactWriteItems per job)."""

    def staggered(i: int) -> dict[str, Any]:
        return {"type": "sleep", "payload": {"seconds": 0.03 * (i % 8)}}

    result = measure_full(jobs=10, enqueue_batch=10, settings=one_beat(), make_job=staggered)
    ops = result.by_operation
    assert ops["dynamodb:TransactWriteItems"] == 1 + 1 + 2  # add, claim of 8, two waves
