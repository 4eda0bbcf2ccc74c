"""A `resize_image` job whose source is not in the blob store: the worker's log says
where it looked, the job's error (its tenant's to read) says the log does.

Before, both said only "source image 'default/uploads/cat.jpg' not found in the blob
store": a worker started in another folder than the one holding `.spool/blobs` (the
default SPOOL_BLOB_DIR is relative to where the process starts) buried every job so,
with nothing naming the folder it had read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import boto3

from chalicelib import blobs
from chalicelib.blob_tenancy import TenantBlobStore
from tests.procs import SPOOL, guarded_env


def spool(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOOL), *argv],  # as a user runs it, in `cwd`
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_worker_started_elsewhere_names_the_folder_it_read(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / ".spool" / "blobs" / "default" / "uploads").mkdir(parents=True)
    (project / ".spool" / "blobs" / "default" / "uploads" / "cat.jpg").write_bytes(b"x")
    elsewhere.mkdir()
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db")
    for name in ("SPOOL_URL", "SPOOL_BLOB_DIR", "SPOOL_BLOB_BUCKET"):
        env.pop(name, None)
    payload = json.dumps({"key": "default/uploads/cat.jpg", "widths": [100]})
    made = spool(project, env, "enqueue", "resize_image", "--payload", payload, "--json")
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["id"]

    worked = spool(elsewhere, env, "worker", "--burst", "--quiet")
    assert worked.returncode == 0, worked.stderr
    looked = elsewhere / ".spool" / "blobs"
    assert (
        f"no blob 'default/uploads/cat.jpg' in the folder {looked} (SPOOL_BLOB_DIR, "
        "'.spool/blobs' unless set, from the folder the process started in)"
    ) in worked.stderr, worked.stderr

    status = spool(project, env, "status", job_id, "--json")
    job = json.loads(status.stdout)
    assert job["state"] == "dead"
    assert job["last_error"] == (
        "PermanentError: source image 'default/uploads/cat.jpg' not found in the blob "
        "store (the worker's log names where it looked)"
    )
    assert str(tmp_path) not in status.stdout  # the server's folders are not the tenant's


def test_an_s3_store_is_named_by_its_bucket_and_prefix() -> None:
    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    store = TenantBlobStore(blobs.S3BlobStore(client, "media-bucket", "media"), "acme")
    assert blobs.location(store) == (
        "s3://media-bucket/media/ (SPOOL_BLOB_BUCKET, SPOOL_BLOB_PREFIX)"
    )


def test_a_store_of_ones_own_is_not_described() -> None:
    class Mine:
        def get(self, key: str, max_bytes: int | None = None) -> bytes:
            raise blobs.BlobNotFound(key)

    assert blobs.location(Mine()) is None
    assert blobs.location(TenantBlobStore(Mine(), "acme")) is None  # type: ignore[arg-type]
