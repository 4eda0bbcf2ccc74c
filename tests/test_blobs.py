"""The blob stores: one behaviour suite run against the local folder and S3 (moto)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib import blobs
from chalicelib.blobs import (
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidKey,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
)
from chalicelib.config import Settings

BUCKET = "spool-blobs-test"


@pytest.fixture
def s3_client() -> Iterator[object]:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        yield S3BlobStore(request.getfixturevalue("s3_client"), BUCKET, prefix="p/")


def test_put_get_overwrite_delete(blob_store: BlobStore) -> None:
    assert not blob_store.exists("a/b/c.bin")
    blob_store.put("a/b/c.bin", b"\x00\x01binary", "application/octet-stream")
    assert blob_store.exists("a/b/c.bin")
    assert blob_store.get("a/b/c.bin") == b"\x00\x01binary"
    blob_store.put("a/b/c.bin", b"new")
    assert blob_store.get("a/b/c.bin") == b"new"
    blob_store.delete("a/b/c.bin")
    assert not blob_store.exists("a/b/c.bin")
    blob_store.delete("a/b/c.bin")  # deleting twice is fine


def test_missing_blobs_are_reported_as_such(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound, match=r"nope/x\.png"):
        blob_store.get("nope/x.png")


def test_reads_stop_at_max_bytes(blob_store: BlobStore) -> None:
    blob_store.put("big", b"x" * 100)
    assert blob_store.get("big", max_bytes=100) == b"x" * 100
    with pytest.raises(BlobTooLarge):
        blob_store.get("big", max_bytes=99)


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/./b",
    "./a",
    "a//b",
    "a/",
    "..",
    "a\\..\\b",
    "a\x00b",
    "line\nbreak",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_by_every_operation(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        blob_store.get(key)
    with pytest.raises(InvalidKey):
        blob_store.put(key, b"data")
    with pytest.raises(InvalidKey):
        blob_store.exists(key)
    with pytest.raises(InvalidKey):
        blob_store.delete(key)


def test_local_store_writes_inside_its_folder_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("photos/cat.jpg", b"meow")
    assert (tmp_path / "blobs" / "photos" / "cat.jpg").read_bytes() == b"meow"
    assert sorted(os.listdir(tmp_path / "blobs" / "photos")) == ["cat.jpg"]


def test_local_store_refuses_a_symlink_that_leads_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "blobs"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = LocalBlobStore(root)
    with pytest.raises(InvalidKey, match="outside"):
        store.get("link/secret")
    with pytest.raises(InvalidKey, match="outside"):
        store.put("link/planted", b"x")
    assert not (outside / "planted").exists()


def test_s3_store_keeps_objects_under_its_prefix(s3_client: object) -> None:
    store = S3BlobStore(s3_client, BUCKET, prefix="tenant-a/")  # type: ignore[arg-type]
    store.put("img/1.png", b"png", "image/png")
    head = s3_client.head_object(Bucket=BUCKET, Key="tenant-a/img/1.png")  # type: ignore[attr-defined]
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == 3


def test_settings_choose_the_store(
    tmp_path: Path, s3_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "_clients", {})
    local = open_blob_store(Settings.from_env({"SPOOL_BLOB_DIR": str(tmp_path / "b")}))
    assert isinstance(local, LocalBlobStore)
    assert local.root == tmp_path / "b"
    assert isinstance(open_blob_store(Settings.from_env({})), LocalBlobStore)
    s3 = open_blob_store(
        Settings.from_env({"SPOOL_BLOB_BUCKET": BUCKET, "SPOOL_BLOB_PREFIX": "x/"})
    )
    assert isinstance(s3, S3BlobStore)
    s3.put("k", b"v")
    assert s3.get("k") == b"v"
    assert s3.prefix == "x/"
