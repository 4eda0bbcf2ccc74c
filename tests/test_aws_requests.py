"""The request budget on AWS: at most 3 requests per job, enqueue through success,
amortised over batches (bench/aws_requests.py prints the full table). Counts, not
timings: moto answers every request, so the numbers are exact on any machine."""

from __future__ import annotations

from bench.aws_requests import measure


def test_batched_jobs_cost_at_most_three_requests_each() -> None:
    result = measure(jobs=40, enqueue_batch=10)
    assert result.per_job <= 3.0, result.by_operation
    ops = result.by_operation
    assert ops["sqs:SendMessageBatch"] == 4  # ten ids to a request
    assert ops["sqs:ReceiveMessage"] <= 5 and ops["sqs:DeleteMessageBatch"] == 4
    assert ops["dynamodb:UpdateItem"] == 40  # one conditional claim per job
    assert ops["dynamodb:TransactWriteItems"] == 8  # one per enqueue batch and per finish batch
    assert result.s3 == 0  # small payloads stay in the record


def test_single_enqueues_pay_one_transaction_and_one_send_each() -> None:
    result = measure(jobs=20, enqueue_batch=1)
    assert result.by_operation["sqs:SendMessageBatch"] == 20
    assert result.by_operation["dynamodb:TransactWriteItems"] == 20 + 2
