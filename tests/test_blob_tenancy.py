"""Tenants and blobs through the real HTTP path: tenant B can neither read nor
overwrite tenant A's blobs, on a local folder and on S3 (moto).

Refused at enqueue (422, nothing stored) when the payload shows it; refused when
the job runs (dead on the first attempt, nothing written) for a job that was
stored some other way; and refused by the store view for what only the store sees
(a symlink inside the folder).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import app as spool_app
from chalicelib import blobs
from chalicelib.blobs import BlobStore, LocalBlobStore, S3BlobStore
from chalicelib.ids import new_job_id
from chalicelib.models import Job, JobQuery, JobState, NewJob
from chalicelib.runtime import Runtime
from local.emulator import context, scheduled_event
from tests.apikit import KEY_B, TENANT_B, Api

PASSPORT = "tenant-a/private/passport.jpg"
A_THUMB = "tenant-a/resized/private/passport/1x1.jpg"


def jpeg(width: int = 40, height: int = 30, colour: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG")
    return out.getvalue()


@dataclass
class Blobs:
    """The blob store the handler will open, seen from outside Spool (no tenant view)."""

    store: BlobStore
    kind: str


@pytest.fixture(params=["folder", "s3"])
def blob_area(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Blobs]:
    """Each store in turn; tests whose point is before any store is used take `folder_area`."""
    if request.param == "folder":
        monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
        yield Blobs(LocalBlobStore(tmp_path / "blobs"), "folder")
        return
    from moto import mock_aws

    monkeypatch.setattr(blobs, "_clients", {})
    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="media-bucket")
        monkeypatch.setenv("SPOOL_BLOB_BUCKET", "media-bucket")
        monkeypatch.setenv("SPOOL_BLOB_PREFIX", "media")  # no '/': still a folder
        yield Blobs(S3BlobStore(client, "media-bucket", "media/"), "s3")


@pytest.fixture
def folder_area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Blobs:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    return seed(Blobs(LocalBlobStore(tmp_path / "blobs"), "folder"))


@pytest.fixture
def seeded(blob_area: Blobs) -> Blobs:
    return seed(blob_area)


def seed(area: Blobs) -> Blobs:
    """Tenant A's private image and thumbnail, and an image of tenant B's own."""
    area.store.put(PASSPORT, jpeg(colour=(200, 10, 10)))
    area.store.put(A_THUMB, b"A's thumbnail")
    area.store.put("tenant-b/photos/cat.jpg", jpeg())
    return area


def drain() -> None:
    handler = spool_app.app.handler_map["drain_due"]
    handler(scheduled_event(spool_app.app), context("drain_due"))


def resize_job(**payload: Any) -> dict[str, Any]:
    return {"type": "resize_image", "payload": payload}


def assert_a_untouched(blob_area: Blobs) -> None:
    assert blob_area.store.get(A_THUMB) == b"A's thumbnail"
    assert blob_area.store.get(PASSPORT) == jpeg(colour=(200, 10, 10))


# -- refused at enqueue ---------------------------------------------------------------------------

OTHER_TENANTS_KEYS = [
    PASSPORT,  # the reported exploit
    "tenant-bb/x.jpg",  # a namespace that merely starts with B's name
    "tenant-b",  # the namespace itself, no '/'
    "Tenant-b/photos/cat.jpg",  # case: the same folder on a case-insensitive disk
    "TENANT-A/private/passport.jpg",
    "resized/tenant-a/private/passport.jpg",
    "tenant-b/%2e%2e/tenant-a/private/passport.jpg",  # percent-encoded ..
    "tenant-b/..%252ftenant-a/private/passport.jpg",  # encoded twice
    "tenant-b/x%2f..%2f..%2ftenant-a/private/passport.jpg",
    "tenant-b/\u2025/tenant-a/private/passport.jpg",  # TWO DOT LEADER: '..' under NFKC
    "tenant-b\uff0f..\uff0ftenant-a/private/passport.jpg",  # FULLWIDTH SOLIDUS: '/' under NFKC
    "tenant-b/\u0085/x.jpg",  # a C1 control character
]


@pytest.mark.parametrize("key", OTHER_TENANTS_KEYS)
def test_a_source_key_outside_the_tenants_namespace_is_refused_at_enqueue(
    api: Api, rt: Runtime, folder_area: Blobs, key: str
) -> None:
    reply = api.post("/enqueue", resize_job(key=key, widths=[1]), key=KEY_B)
    assert reply.status == 422, reply.body
    assert reply.error_code == "validation_error"
    assert rt.store.list_jobs(JobQuery()).jobs == []
    drain()
    assert_a_untouched(folder_area)


@pytest.mark.parametrize(
    "prefix",
    [
        "resized/tenant-a/private/passport/",  # the reported exploit
        "tenant-a/resized/private/passport/",
        "tenant-a/",
        "tenant-b",  # outputs would be "tenant-b1x1.jpg": in nobody's namespace
        "tenant-bb/",
        "tenant-b//",
        "tenant-b/%2e%2e/tenant-a/",
    ],
)
def test_an_output_prefix_outside_the_tenants_namespace_is_refused_at_enqueue(
    api: Api, rt: Runtime, seeded: Blobs, prefix: str
) -> None:
    job = resize_job(key="tenant-b/photos/cat.jpg", widths=[1], output_prefix=prefix)
    reply = api.post("/enqueue", job, key=KEY_B)
    assert reply.status == 422, reply.body
    assert rt.store.list_jobs(JobQuery()).jobs == []
    drain()
    assert_a_untouched(seeded)


def test_the_refusal_names_the_namespace_the_tenant_may_use(api: Api, folder_area: Blobs) -> None:
    reply = api.post("/enqueue", resize_job(key=PASSPORT, widths=[1]), key=KEY_B)
    message = reply.json["error"]["message"]
    assert "outside this tenant's namespace" in message
    assert "'tenant-b/'" in message
    assert "tenant-a" in message  # the key it refused, so the client sees which one


def test_a_tenant_resizes_its_own_images_and_outputs_stay_in_its_namespace(
    api: Api, rt: Runtime, seeded: Blobs
) -> None:
    job_id = api.enqueue(resize_job(key="tenant-b/photos/cat.jpg", widths=[20, 10]), key=KEY_B)
    own_prefix = resize_job(
        key="tenant-b/photos/cat.jpg", widths=[8], output_prefix="tenant-b/thumbs/"
    )
    prefixed_id = api.enqueue(own_prefix, key=KEY_B)
    drain()
    done = api.get(f"/status/{job_id}", key=KEY_B).json
    assert done["state"] == "succeeded", done
    keys = sorted(o["key"] for o in done["result"]["outputs"])
    assert keys == [
        "tenant-b/resized/photos/cat/10x8.jpg",
        "tenant-b/resized/photos/cat/20x15.jpg",
    ]
    for key in keys:
        assert Image.open(io.BytesIO(seeded.store.get(key))).format == "JPEG"
    other = api.get(f"/status/{prefixed_id}", key=KEY_B).json
    assert other["state"] == "succeeded", other
    assert seeded.store.exists("tenant-b/thumbs/8x6.jpg")
    assert_a_untouched(seeded)


# -- refused when the job runs --------------------------------------------------------------------


def stored_without_admission(rt: Runtime, tenant: str, payload: dict[str, Any]) -> str:
    """A job stored before the namespace rule existed (or by any path that skips admit)."""
    now = rt.store.clock.now()
    job = NewJob(new_job_id(), "resize_image", payload, now, tenant=tenant, max_attempts=3)
    rt.store.add([job])
    return job.id


@pytest.mark.parametrize(
    "payload",
    [
        {"key": PASSPORT, "widths": [1]},
        {"key": "tenant-b/photos/cat.jpg", "widths": [1], "output_prefix": "tenant-a/resized/"},
        {
            "key": "tenant-b/photos/cat.jpg",
            "widths": [1],
            "output_prefix": "resized/tenant-a/private/passport/",
        },
    ],
    ids=["reads-a", "writes-a", "writes-a-old-layout"],
)
def test_a_stored_job_reaching_another_namespace_dies_at_once_without_touching_it(
    rt: Runtime, seeded: Blobs, payload: dict[str, Any]
) -> None:
    job_id = stored_without_admission(rt, TENANT_B, payload)
    drain()
    job = rt.store.get(job_id)
    assert job is not None and job.state is JobState.DEAD
    assert job.attempts == 1  # permanent: not retried
    assert "outside this tenant's namespace" in (job.last_error or "")
    assert "'tenant-b/'" in (job.last_error or "")
    assert_a_untouched(seeded)
    assert not seeded.store.exists("tenant-a/resized/1x1.jpg")


def test_a_symlink_inside_the_folder_cannot_lead_into_another_namespace(
    api: Api, rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    folder = LocalBlobStore(tmp_path / "blobs")
    folder.put(PASSPORT, jpeg())
    folder.put("tenant-b/placeholder", b"")
    (tmp_path / "blobs" / "tenant-b" / "link").symlink_to(
        tmp_path / "blobs" / "tenant-a", target_is_directory=True
    )
    # The key is B's by name, so enqueue accepts it; only the store sees where it leads.
    job_id = api.enqueue(
        resize_job(key="tenant-b/link/private/passport.jpg", widths=[1]), key=KEY_B
    )
    drain()
    job: Job | None = rt.store.get(job_id)
    assert job is not None and job.state is JobState.DEAD
    assert "resolves outside the folder 'tenant-b/'" in (job.last_error or "")
    assert not (tmp_path / "blobs" / "tenant-a" / "resized").exists()
