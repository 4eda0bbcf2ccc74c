"""What the AWS-path chaos tests (tests/test_chaos_s49e_*.py) share: a runtime on
in-process moto's DynamoDB, SQS and S3, an enqueue, and a batch answer's failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moto import mock_aws

from chalicelib.runtime import Runtime
from chalicelib.service import EnqueueRequest
from tests.apikit import TENANT_A, installed, settings_for

STORE_URL = "dynamodb://jobs?queue=jobs&bucket=jobs-bucket&create=1"


@contextmanager
def moto_runtime(tmp_path: Path, **overrides: Any) -> Iterator[Runtime]:
    """The app installed on a table, queue and bucket made afresh in moto."""
    settings = settings_for(tmp_path, store_url=STORE_URL, **overrides)
    with mock_aws(), installed(settings) as runtime:
        yield runtime


def enqueue(rt: Runtime, type_: str = "echo", *, tenant: str = TENANT_A, **fields: Any) -> str:
    request = EnqueueRequest.model_validate({"type": type_, **fields})
    return rt.service.enqueue([request], tenant)[0].job.id


def failed(answer: dict[str, Any]) -> list[str]:
    """The message ids a batch's answer hands back (batchItemFailures)."""
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]
