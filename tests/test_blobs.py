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
    check_folder,
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
    # Safe as written, unsafe once a later layer decodes or normalises the name:
    "%2e%2e/outside",
    "a/%2E%2E/%2e%2e/outside",
    "a%2f..%2f..%2foutside",
    "a/..%252f..%252foutside",  # percent-encoded twice
    "%2fetc/passwd",
    "a%00b",
    "a%5c..%5cb",
    "a/\u2025/b",  # TWO DOT LEADER: '..' under NFKC
    "\uff0e\uff0e/outside",  # FULLWIDTH FULL STOPs
    "a\uff0f\uff0fb",  # FULLWIDTH SOLIDUS: 'a//b'
    # Control and separator characters outside ASCII:
    "a\u0085b",  # NEXT LINE (C1)
    "a\u2028b",  # LINE SEPARATOR
    "a\u2029b",  # PARAGRAPH SEPARATOR
    "a\ud800b",  # a lone surrogate
    "/".join(["\u00e9" * 120] * 5),  # 600 characters, 1204 bytes
    "a/" + "\u00e9" * 128,  # a 256-byte segment: too long a file name for most disks
]

GOOD_KEYS = [
    "caf\u00e9/na\u00efve.jpg",
    "100%.png",
    "a%20b/50%25.png",
    "emoji/\U0001f431.png",
    "x.../..y",
    "/".join(["\u00e9" * 127] * 4),  # 1019 bytes, no segment over 255
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_unusual_but_safe_keys_are_kept_as_written(blob_store: BlobStore, key: str) -> None:
    blob_store.put(key, b"ok")
    assert blob_store.get(key) == b"ok"


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


def test_a_confined_local_store_stays_inside_its_folder_through_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    LocalBlobStore(root).put("a/secret", b"A")
    (root / "b").mkdir()
    (root / "b" / "to-a").symlink_to(root / "a", target_is_directory=True)
    assert LocalBlobStore(root).get("b/to-a/secret") == b"A"  # inside the root: allowed
    confined = LocalBlobStore(root, confine_to="b")
    with pytest.raises(InvalidKey, match="outside the folder 'b/'"):
        confined.get("b/to-a/secret")
    with pytest.raises(InvalidKey, match="outside the folder 'b/'"):
        confined.put("a/planted", b"x")
    confined.put("b/mine", b"B")
    assert confined.get("b/mine") == b"B"


@pytest.mark.parametrize(
    ("prefix", "folder"), [("", ""), ("media", "media/"), ("media/", "media/"), ("a/b", "a/b/")]
)
def test_prefixes_are_folders(prefix: str, folder: str) -> None:
    assert check_folder(prefix) == folder


@pytest.mark.parametrize("prefix", ["/", "a//", "../a/", "a/./b", "%2e%2e/"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        check_folder(prefix)
