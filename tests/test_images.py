"""resize_image with real Pillow encodes and decodes, on a local folder and on S3 (moto)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from chalicelib import blobs
from chalicelib.blobs import LocalBlobStore
from chalicelib.builtin import images
from chalicelib.builtin.images import Limits, ResizePayload, resize
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError
from chalicelib.handlers import registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(width: int = 800, height: int = 600) -> Image.Image:
    """A gradient, so encoders have real content to work on."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image.paste((200, 30, 30), (0, 0, width // 4, height // 4))
    return image


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def run(store: blobs.BlobStore, limits: Limits | None = None, **fields: Any) -> dict[str, Any]:
    return resize(store, ResizePayload.model_validate(fields), limits or Limits())


def decoded(store: blobs.BlobStore, key: str) -> Image.Image:
    return Image.open(io.BytesIO(store.get(key)))


def test_widths_keep_the_aspect_ratio_and_results_describe_the_outputs(
    store: LocalBlobStore,
) -> None:
    store.put("t1/photos/cat.jpg", encode(photo(), "JPEG"))
    result = run(store, key="t1/photos/cat.jpg", widths=[320, 100])
    assert result["source"] == {
        "key": "t1/photos/cat.jpg",
        "format": "jpeg",
        "width": 800,
        "height": 600,
        "bytes": len(store.get("t1/photos/cat.jpg")),
    }
    outputs = {o["key"]: o for o in result["outputs"]}
    # The default output folder keeps the key's first segment (its tenant) in front.
    assert set(outputs) == {
        "t1/resized/photos/cat/320x240.jpg",
        "t1/resized/photos/cat/100x75.jpg",
    }
    for key, output in outputs.items():
        image = decoded(store, key)
        assert image.format == "JPEG"
        assert image.size == (output["width"], output["height"])
        assert output["bytes"] == len(store.get(key))
        assert output["content_type"] == "image/jpeg"


def test_boxes_contain_or_cover_and_never_upscale_unless_asked(store: LocalBlobStore) -> None:
    store.put("a.png", encode(photo(), "PNG"))
    contained = run(store, key="a.png", sizes=[{"width": 200, "height": 200}])
    assert [(o["width"], o["height"]) for o in contained["outputs"]] == [(200, 150)]
    covered = run(store, key="a.png", sizes=[{"width": 200, "height": 200}], fit="cover")
    assert decoded(store, covered["outputs"][0]["key"]).size == (200, 200)
    by_height = run(store, key="a.png", sizes=[{"height": 60}])
    assert (by_height["outputs"][0]["width"], by_height["outputs"][0]["height"]) == (80, 60)
    capped = run(store, key="a.png", widths=[2000])
    assert (capped["outputs"][0]["width"], capped["outputs"][0]["height"]) == (800, 600)
    grown = run(store, key="a.png", widths=[2000], upscale=True)
    assert decoded(store, grown["outputs"][0]["key"]).size == (2000, 1500)


def test_format_conversion_flattens_transparency_for_jpeg(store: LocalBlobStore) -> None:
    rgba = Image.new("RGBA", (40, 20), (0, 0, 255, 0))  # fully transparent blue
    store.put("t.png", encode(rgba, "PNG"))
    result = run(store, key="t.png", widths=[20], format="jpg", output_prefix="out/")
    assert result["outputs"][0]["key"] == "out/20x10.jpg"
    flattened = decoded(store, "out/20x10.jpg").convert("RGB")
    assert flattened.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)
    webp = run(store, key="t.png", widths=[20], format="webp")
    image = decoded(store, webp["outputs"][0]["key"])
    assert image.format == "WEBP"
    assert image.mode == "RGBA"


def test_exif_orientation_is_applied_and_metadata_is_not_copied(store: LocalBlobStore) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "SecretCam"
    store.put("r.jpg", encode(photo(600, 400), "JPEG", exif=exif.tobytes()))
    result = run(store, key="r.jpg", widths=[200])
    assert (result["source"]["width"], result["source"]["height"]) == (400, 600)
    output = decoded(store, result["outputs"][0]["key"])
    assert output.size == (200, 300)
    assert 0x010F not in output.getexif()


def test_an_animated_gif_uses_its_first_frame(store: LocalBlobStore) -> None:
    frames = [Image.new("P", (60, 30), i) for i in (1, 2)]
    store.put("a.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    result = run(store, key="a.gif", widths=[30])
    assert result["outputs"][0]["key"] == "resized/a/30x15.png"  # a one-segment key
    assert decoded(store, "resized/a/30x15.png").size == (30, 15)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: a few bytes that would decode to gigabytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"this is not an image at all", "not an image"),
        (encode(Image.new("RGB", (16, 16)), "ICO"), "not an image"),
        (encode(photo(), "JPEG")[:600], "corrupt or truncated"),
        (_png_header_only(100_000, 100_000), "decompression bomb"),
        (_png_header_only(8000, 6000), "over the limit"),
    ],
    ids=["text", "unsupported-ico", "truncated-jpeg", "bomb-header", "over-pixel-limit"],
)
def test_bad_images_are_permanent_errors(store: LocalBlobStore, blob: bytes, message: str) -> None:
    store.put("bad", blob)
    with pytest.raises(PermanentError, match=message):
        run(store, key="bad", widths=[10])
    assert not store.exists("resized/bad/10x8.png")


def test_missing_and_oversized_sources_are_permanent_errors(store: LocalBlobStore) -> None:
    with pytest.raises(PermanentError, match="not found"):
        run(store, key="missing.png", widths=[10])
    store.put("big.png", encode(photo(), "PNG"))
    with pytest.raises(PermanentError, match="larger than 100 bytes"):
        run(store, Limits(max_bytes=100), key="big.png", widths=[10])
    with pytest.raises(PermanentError, match="over the limit"):
        run(store, Limits(max_pixels=1000), key="big.png", widths=[10])


@pytest.mark.parametrize(
    "fields",
    [
        {"key": "../etc/passwd", "widths": [10]},
        {"key": "/abs.png", "widths": [10]},
        {"key": "a.png"},
        {"key": "a.png", "widths": [0]},
        {"key": "a.png", "widths": [10_001]},
        {"key": "a.png", "widths": [10] * 21},
        {"key": "a.png", "sizes": [{}]},
        {"key": "a.png", "widths": [10], "format": "gif"},
        {"key": "a.png", "widths": [10], "output_prefix": "../x/"},
        {"key": "a.png", "widths": [10], "surprise": 1},
    ],
)
def test_bad_payloads_are_refused_at_enqueue_time(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ResizePayload.model_validate(fields)


def test_through_the_worker_a_bad_image_goes_dead_once_and_a_good_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    folder = LocalBlobStore(tmp_path / "blobs")
    folder.put("t1/good.jpg", encode(photo(), "JPEG"))
    folder.put("t1/bad.jpg", b"GIF89a but not really")
    store = MemoryStore(clock)
    good, bad = Service(store, registry).enqueue(
        [
            EnqueueRequest(type="resize_image", payload={"key": "t1/good.jpg", "widths": [64]}),
            EnqueueRequest(type="resize_image", payload={"key": "t1/bad.jpg", "widths": [64]}),
        ],
        tenant="t1",
    )
    Worker(store, registry, WorkerConfig(concurrency=2)).drain()
    done, dead = store.get(good.job.id), store.get(bad.job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    result: Any = done.result
    assert result["outputs"][0]["key"] == "t1/resized/good/64x48.jpg"
    assert folder.exists("t1/resized/good/64x48.jpg")
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.attempts == 1
    assert "not an image" in (dead.last_error or "")


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from moto import mock_aws

    monkeypatch.setattr(blobs, "_clients", {})
    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="images")
        monkeypatch.setenv("SPOOL_BLOB_BUCKET", "images")
        monkeypatch.setenv("SPOOL_BLOB_PREFIX", "media/")
        yield client


def test_the_handler_reads_and_writes_s3_when_a_bucket_is_set(
    s3_env: Any, clock: FakeClock
) -> None:
    s3_env.put_object(Bucket="images", Key="media/default/in/p.png", Body=encode(photo(), "PNG"))
    result = images.resize_image(
        ResizePayload(key="default/in/p.png", widths=[100], format="webp"), _ctx(clock)
    )
    output = result["outputs"][0]
    assert output["key"] == "default/resized/in/p/100x75.webp"
    head = s3_env.head_object(Bucket="images", Key="media/default/resized/in/p/100x75.webp")
    assert head["ContentType"] == "image/webp"
    assert head["ContentLength"] == output["bytes"]


def _ctx(clock: FakeClock) -> Any:
    import time

    from chalicelib.handlers import JobContext
    from chalicelib.ids import new_job_id
    from chalicelib.models import Job

    now = clock.now()
    job = Job(id=new_job_id(), type="resize_image", run_at=now, created_at=now, updated_at=now)
    return JobContext(job, time.monotonic() + 60)
