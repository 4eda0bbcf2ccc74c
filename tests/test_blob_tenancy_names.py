"""Tenant namespaces for odd tenant names, the tenant view of each store, and the
S3 prefix settings that decide where a namespace lands in the bucket."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import app as spool_app
from chalicelib import blobs
from chalicelib.blob_tenancy import TenantBlobStore, check_tenant_key, tenant_namespace
from chalicelib.blobs import (
    BlobConfigError,
    BlobStore,
    InvalidKey,
    LocalBlobStore,
    S3BlobStore,
    check_key,
    open_blob_store,
)
from chalicelib.config import Settings
from chalicelib.models import JobState
from chalicelib.service import NAME_PATTERN
from local.emulator import context, scheduled_event
from tests.apikit import Api, installed, settings_for

BUCKET = "tenancy-test"


@pytest.mark.parametrize(
    ("tenant", "namespace"),
    [
        ("tenant-a", "tenant-a"),
        ("t_1.v2", "t_1.v2"),
        ("Acme", "~41cme"),
        ("acme", "acme"),
        (".", "~2e"),
        ("..", "~2e."),
        (".hidden", "~2ehidden"),
        ("a:b", "a~3ab"),
        ("a/b", "a~2fb"),  # the CLI's --tenant takes any string
        ("caf\u00e9", "caf~c3~a9"),
    ],
)
def test_tenant_names_become_one_safe_lowercase_segment(tenant: str, namespace: str) -> None:
    assert tenant_namespace(tenant) == namespace
    check_key(namespace)  # a valid key, so a valid single path segment
    assert "/" not in namespace


def test_a_job_without_a_tenant_has_no_namespace() -> None:
    with pytest.raises(InvalidKey, match="without a tenant"):
        tenant_namespace("")


API_TENANT = st.from_regex(NAME_PATTERN, fullmatch=True)


@given(st.lists(API_TENANT, min_size=2, max_size=2, unique=True))
def test_different_tenants_never_share_a_namespace_even_ignoring_case(pair: list[str]) -> None:
    first, second = (tenant_namespace(t) for t in pair)
    assert first.casefold() != second.casefold()
    assert first == first.lower() and first.isascii()


@given(API_TENANT, st.text(min_size=1, max_size=30))
def test_a_key_in_one_namespace_is_never_in_another(tenant: str, rest: str) -> None:
    key = f"{tenant_namespace(tenant)}/{rest}"
    try:
        check_tenant_key(key, tenant)
    except InvalidKey:
        return  # the rest was not a safe key: refused for every tenant
    for other in (tenant.upper(), tenant.lower(), tenant + "b", tenant[:-1] or "x"):
        if other != tenant:
            with pytest.raises(InvalidKey):
                check_tenant_key(key, other)


def test_odd_tenant_names_from_api_keys_each_get_their_own_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    folder = LocalBlobStore(tmp_path / "blobs")
    tenants = {"key-dots-0123456": "..", "key-upper-012345": "Acme", "key-lower-012345": "acme"}
    for tenant in tenants.values():
        folder.put(f"{tenant_namespace(tenant)}/in.png", _png())
    keys = ",".join(f"{k}={t}" for k, t in tenants.items())
    with (
        installed(settings_for(tmp_path, api_keys=keys)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        api = Api(client)
        refused = [
            ("key-dots-0123456", "../x.png"),
            ("key-dots-0123456", "~2e./../acme/in.png"),
            ("key-upper-012345", "acme/in.png"),
            ("key-upper-012345", "Acme/in.png"),
            ("key-lower-012345", "~41cme/in.png"),
            ("key-lower-012345", "Acme/in.png"),
        ]
        for api_key, blob in refused:
            reply = api.post("/enqueue", _job(blob), key=api_key)
            assert reply.status == 422, (api_key, blob, reply.body)
        ids = [
            api.enqueue(_job(f"{tenant_namespace(t)}/in.png"), key=k) for k, t in tenants.items()
        ]
        spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain"))
        for job_id in ids:
            job = rt.store.get(job_id)
            assert job is not None and job.state is JobState.SUCCEEDED, job
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == ["acme", "~2e.", "~41cme"]
    assert folder.exists("~2e./resized/in/2x2.png")
    assert not (tmp_path / "in.png").exists()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def _job(key: str) -> dict[str, Any]:
    return {"type": "resize_image", "payload": {"key": key, "widths": [2]}}


# -- the tenant view, on both stores --------------------------------------------------------------


@pytest.fixture
def s3_client() -> Iterator[Any]:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(params=["folder", "s3"])
def raw_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "folder":
        return LocalBlobStore(tmp_path / "blobs")
    return S3BlobStore(request.getfixturevalue("s3_client"), BUCKET, "p")


@pytest.mark.parametrize("key", ["tenant-a/secret", "tenant-ab/x", "x/tenant-b/y", "tenant-b"])
def test_the_tenant_view_refuses_every_operation_outside_the_namespace(
    raw_store: BlobStore, key: str
) -> None:
    raw_store.put("tenant-a/secret", b"A")
    view = TenantBlobStore(raw_store, "tenant-b")
    for operation in (
        lambda: view.get(key),
        lambda: view.put(key, b"B"),
        lambda: view.exists(key),
        lambda: view.delete(key),
    ):
        with pytest.raises(InvalidKey, match="outside this tenant's namespace"):
            operation()
    assert raw_store.get("tenant-a/secret") == b"A"


def test_the_tenant_view_works_inside_the_namespace(raw_store: BlobStore) -> None:
    view = TenantBlobStore(raw_store, "tenant-b")
    view.put("tenant-b/x/y.bin", b"mine", "application/octet-stream")
    assert view.exists("tenant-b/x/y.bin")
    assert view.get("tenant-b/x/y.bin") == b"mine"
    assert raw_store.get("tenant-b/x/y.bin") == b"mine"
    view.delete("tenant-b/x/y.bin")
    assert not raw_store.exists("tenant-b/x/y.bin")


# -- S3 prefix settings ---------------------------------------------------------------------------


def test_an_s3_prefix_is_a_folder_so_no_tenant_reaches_a_sibling(s3_client: Any) -> None:
    s3_client.put_object(Bucket=BUCKET, Key="media-archive/secret", Body=b"archive")
    store = S3BlobStore(s3_client, BUCKET, "media")
    assert store.prefix == "media/"
    # Tenant "-archive" has namespace "-archive": with a bare "media" prefix its key
    # "-archive/secret" would have been the object "media-archive/secret".
    view = TenantBlobStore(store, "-archive")
    with pytest.raises(blobs.BlobNotFound):
        view.get("-archive/secret")
    view.put("-archive/secret", b"planted")
    body = s3_client.get_object(Bucket=BUCKET, Key="media-archive/secret")["Body"].read()
    assert body == b"archive"
    assert s3_client.get_object(Bucket=BUCKET, Key="media/-archive/secret")["Body"].read() == (
        b"planted"
    )


@pytest.mark.parametrize("prefix", ["../up", "/abs/", "a//", "a/../b/", "%2e%2e/"])
def test_an_unusable_s3_prefix_is_a_configuration_error(s3_client: Any, prefix: str) -> None:
    with pytest.raises(BlobConfigError, match="SPOOL_BLOB_PREFIX"):
        open_blob_store(
            Settings.from_env({"SPOOL_BLOB_BUCKET": BUCKET, "SPOOL_BLOB_PREFIX": prefix})
        )
    with pytest.raises(BlobConfigError):
        S3BlobStore(s3_client, BUCKET, prefix)


JOB_STORE = f"dynamodb://jobs?queue=jobs&bucket={BUCKET}"


@pytest.mark.parametrize("prefix", ["", "spool", "spool/", "spool/payloads/"])
def test_the_job_stores_bucket_is_shared_only_in_a_folder_apart(prefix: str) -> None:
    """With no prefix, tenant "spool" would name Spool's own offloaded payloads."""
    env = {"SPOOL_STORE_URL": JOB_STORE, "SPOOL_BLOB_BUCKET": BUCKET, "SPOOL_BLOB_PREFIX": prefix}
    with pytest.raises(BlobConfigError, match="apart from Spool's own 'spool/'"):
        open_blob_store(Settings.from_env(env))


def test_a_folder_apart_or_another_bucket_is_fine(
    s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "_clients", {})
    apart = {"SPOOL_STORE_URL": JOB_STORE, "SPOOL_BLOB_BUCKET": BUCKET}
    store = open_blob_store(Settings.from_env({**apart, "SPOOL_BLOB_PREFIX": "blobs/"}))
    assert isinstance(store, S3BlobStore) and store.prefix == "blobs/"
    other = {"SPOOL_STORE_URL": JOB_STORE.replace(BUCKET, "payloads"), "SPOOL_BLOB_BUCKET": BUCKET}
    assert isinstance(open_blob_store(Settings.from_env(other)), S3BlobStore)


def test_a_handler_on_a_misconfigured_blob_store_dies_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_client: Any
) -> None:
    monkeypatch.setattr(blobs, "_clients", {})  # moto's, should the check ever not fire
    monkeypatch.setenv("SPOOL_BLOB_BUCKET", BUCKET)
    monkeypatch.setenv("SPOOL_BLOB_PREFIX", "../elsewhere")
    with (
        installed(settings_for(tmp_path)) as rt,
        Client(spool_app.app, stage_name="local") as client,
    ):
        job_id = Api(client).enqueue(_job("tenant-a/in.png"))
        spool_app.app.handler_map["drain_due"](scheduled_event(spool_app.app), context("drain"))
        job = rt.store.get(job_id)
    assert job is not None and job.state is JobState.DEAD and job.attempts == 1
    assert "misconfigured" in (job.last_error or "")
    assert "SPOOL_BLOB_PREFIX" in (job.last_error or "")
