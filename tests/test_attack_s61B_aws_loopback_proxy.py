"""An AWS endpoint on loopback (moto_server, a MinIO) is reached past HTTP_PROXY.

botocore reads the proxy variables for every endpoint: with HTTP_PROXY set, a
DynamoDB store at `endpoint=http://127.0.0.1:PORT` sent every request to the proxy,
and `spool` stopped with "unexpected error: ClientError ... (502) ... DescribeTable";
the blob store at SPOOL_BLOB_ENDPOINT_URL did the same (chalicelib/aws_proxies.py).
Against a real moto_server and a loopback listener standing in for the proxy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from chalicelib import blobs
from chalicelib.aws_proxies import endpoint_proxies
from chalicelib.config import Settings
from tests.moto_proc import moto_server
from tests.procs import ROOT, guarded_env
from tests.recording_proxy import Proxy

VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as moto:
        yield moto.endpoint


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    running = Proxy()
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", running.url)
    monkeypatch.setenv("HTTPS_PROXY", running.url)
    try:
        yield running
    finally:
        running.close()


def test_a_dynamodb_store_on_loopback_is_reached_past_the_proxy(
    tmp_path: Path, endpoint: str, proxy: Proxy
) -> None:
    url = f"dynamodb://s61b?queue=s61b&bucket=s61b-jobs&endpoint={endpoint}&create=1"
    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "jobs"],
        cwd=tmp_path, env=guarded_env(PYTHONPATH=str(ROOT), SPOOL_STORE_URL=url),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert proxy.seen == []


def test_the_blob_store_on_loopback_is_reached_past_the_proxy(endpoint: str, proxy: Proxy) -> None:
    direct = Config(proxies={})
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=direct)
    s3.create_bucket(Bucket="s61b-blobs")
    settings = Settings.from_env(
        {"SPOOL_BLOB_BUCKET": "s61b-blobs", "SPOOL_BLOB_ENDPOINT_URL": endpoint}
    )
    store = blobs.open_blob_store(settings)
    store.put("tenant-a/x.bin", b"bytes")
    assert store.get("tenant-a/x.bin") == b"bytes"
    assert proxy.seen == []


@pytest.mark.parametrize(
    ("endpoint", "proxies"),
    [
        ("http://127.0.0.1:5000", {}),
        ("http://localhost:9000", {}),
        ("http://[::1]:8000", {}),
        ("http://127.8.0.1:5000/", {}),
        (None, None),
        ("", None),
        ("https://dynamodb.us-east-1.amazonaws.com", None),
        ("http://10.0.0.5:9000", None),
        ("http://localhost.example:9000", None),
        ("http://[::1", None),
    ],
)
def test_which_endpoints_go_direct(endpoint: str | None, proxies: dict[str, str] | None) -> None:
    assert endpoint_proxies(endpoint) == proxies
