"""`resize_image` on the `make package` stack: the worker finds its blobs, and may.

The Lambda zip carries Pillow for `resize_image` (docs/aws.md), but the stack gave
the worker no blob store: without SPOOL_BLOB_BUCKET it opened the folder
`.spool/blobs` under /var/task (read-only on Lambda, and empty), and its role could
touch no object outside `spool/`, so every resize_image job deployed by the
documented path went dead ("key not found"). Here the worker's environment is read
from infra/resources.json (what `make package` merges into the stack), a resize is
run through the SQS worker against moto, and every S3 call the worker makes is
checked against the object ARNs its role in that template grants (moto checks no
IAM: tests/test_iam_actions.py checks the actions, this the resources).
"""

from __future__ import annotations

import fnmatch
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from moto import mock_aws
from PIL import Image

from chalicelib.models import JobState
from chalicelib.runtime import Runtime
from chalicelib.storage.s3_blobs import INTERNAL_PREFIX
from tests.apikit import TENANT_A, Api, installed, settings_for
from tests.test_aws_events import QUEUE, poller, state

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "jobs-bucket"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
# What each S3 operation the worker makes is authorized as.
S3_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
}


def _template() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "infra" / "resources.json").read_text())
    return document


def _resolve(value: Any) -> Any:
    """A template value with the stack's bucket put in (None: something else)."""
    if isinstance(value, str):
        return value
    if value == {"Ref": "PayloadBucket"}:
        return BUCKET
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        text = value["Fn::Sub"].replace("${PayloadBucket.Arn}", BUCKET_ARN)
        return None if "${" in text else text
    if value == {"Fn::GetAtt": ["PayloadBucket", "Arn"]}:
        return BUCKET_ARN
    return None


def worker_blob_env() -> dict[str, str]:
    """The worker function's blob settings, as the stack sets them."""
    variables = _template()["Resources"]["RunJobs"]["Properties"]["Environment"]["Variables"]
    return {
        name: _resolve(value)
        for name, value in variables.items()
        if name.startswith("SPOOL_BLOB_") and _resolve(value) is not None
    }


def worker_object_grants() -> list[tuple[str, str]]:
    """(action, object ARN pattern) for every S3 object grant of the worker's role."""
    role = _template()["Resources"]["RunJobsRole"]["Properties"]["Policies"][0]
    grants = []
    for statement in role["PolicyDocument"]["Statement"]:
        for resource in statement["Resource"]:
            arn = _resolve(resource)
            if statement["Effect"] == "Allow" and arn and arn.startswith(BUCKET_ARN + "/"):
                grants += [(action, arn) for action in statement["Action"]]
    return grants


def allowed(action: str, key: str) -> bool:
    return any(
        granted == action and fnmatch.fnmatchcase(f"{BUCKET_ARN}/{key}", pattern)
        for granted, pattern in worker_object_grants()
    )


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for name, value in worker_blob_env().items():
        monkeypatch.setenv(name, value)
    # The worker is started from a folder with no blobs in it, as /var/task has none.
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "no-blobs-here"))
    store_url = f"dynamodb://jobs?queue={QUEUE}&bucket={BUCKET}&create=1"
    # In the environment too, as on Lambda: the blob store checks its folder is apart
    # from the store's own objects when the bucket is the store's.
    monkeypatch.setenv("SPOOL_STORE_URL", store_url)
    settings = settings_for(tmp_path, store_url=store_url)
    with mock_aws(), installed(settings) as runtime:
        yield runtime


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """(operation, bucket, key) of every S3 object call made while it is active."""
    calls: list[tuple[str, str, str]] = []
    real = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]  # not in the stubs

    def recording(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "s3" and "Key" in params:
            calls.append((operation, params["Bucket"], params["Key"]))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return calls


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_the_stack_gives_the_worker_a_blob_folder_apart_from_spools_own() -> None:
    env = worker_blob_env()
    assert env.get("SPOOL_BLOB_BUCKET") == BUCKET, env  # the stack's own bucket
    prefix = env.get("SPOOL_BLOB_PREFIX", "").rstrip("/") + "/"
    assert prefix != "/" and not prefix.startswith(INTERNAL_PREFIX), env
    assert allowed("s3:GetObject", f"{prefix}{TENANT_A}/in/p.png")
    assert allowed("s3:PutObject", f"{prefix}{TENANT_A}/resized/in/p/32x24.png")
    # ...and no more than reading sources and writing outputs there.
    assert not allowed("s3:DeleteObject", f"{prefix}{TENANT_A}/in/p.png")


def test_a_resize_through_the_deployed_worker_succeeds_within_its_grants(
    rt: Runtime, api: Api, s3_calls: list[tuple[str, str, str]]
) -> None:
    prefix = worker_blob_env().get("SPOOL_BLOB_PREFIX", "").rstrip("/") + "/"
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=BUCKET, Key=f"{prefix}{TENANT_A}/in/p.png", Body=_png()
    )
    job_id = api.enqueue(
        {"type": "resize_image", "payload": {"key": f"{TENANT_A}/in/p.png", "widths": [32]}}
    )
    s3_calls.clear()  # the worker's calls only
    poller(rt).poll_once()
    reply = api.get(f"/status/{job_id}").json
    assert state(rt, job_id) == JobState.SUCCEEDED, reply
    assert reply["result"]["outputs"][0]["key"] == f"{TENANT_A}/resized/in/p/32x24.png"
    blob_calls = [(op, key) for op, bucket, key in s3_calls if not key.startswith(INTERNAL_PREFIX)]
    assert {op for op, _ in blob_calls} >= {"GetObject", "PutObject"}
    refused = [
        (op, bucket, key) for op, bucket, key in s3_calls
        if bucket != BUCKET or not allowed(S3_ACTIONS.get(op, f"s3:{op}"), key)
    ]  # fmt: skip
    assert refused == []
