"""resize_image and outputs wider than the output format can hold.

A source within every pixel limit can keep a side no WebP (16383) or JPEG (65500)
encoder accepts: a 20000x100 PNG asked for `sizes: [{"height": 100}]` as WebP.
The encoder's ValueError ("encoding error 5") was no PermanentError, so the job
was retried, decoding the source again each time, to fail the same way. The
sides are now checked against the format when the outputs are planned, before
any pixel is decoded: dead at once, with the limit named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from chalicelib.blobs import LocalBlobStore
from chalicelib.builtin.image_limits import MAX_JPEG_SCANS
from chalicelib.clock import FakeClock
from chalicelib.errors import PermanentError
from chalicelib.handlers import registry
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from chalicelib.worker import Worker, WorkerConfig
from tests.test_attack_s50a_jpeg_scans import many_scans
from tests.test_images import encode, run


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.mark.parametrize(
    ("size", "fmt", "limit"),
    [((20000, 100), "webp", 16383), ((100, 20000), "webp", 16383), ((65501, 1), "jpeg", 65500)],
)
def test_an_output_side_over_the_format_s_limit_is_permanent(
    store: LocalBlobStore, tmp_path: Path, size: tuple[int, int], fmt: str, limit: int
) -> None:
    store.put("t1/long.png", encode(Image.new("L", size), "PNG"))
    box = {"height": size[1]} if size[0] > size[1] else {"width": size[0]}
    with pytest.raises(PermanentError, match=f"{limit}"):
        run(store, key="t1/long.png", sizes=[box], format=fmt)
    assert not (tmp_path / "blobs" / "t1" / "resized").exists()  # nothing half written


def test_the_same_output_as_png_is_written(store: LocalBlobStore) -> None:
    store.put("t1/long.png", encode(Image.new("L", (20000, 100)), "PNG"))
    result = run(store, key="t1/long.png", sizes=[{"height": 100}], format="png")
    assert (result["outputs"][0]["width"], result["outputs"][0]["height"]) == (20000, 100)


def test_a_webp_output_at_the_limit_is_written(store: LocalBlobStore) -> None:
    store.put("t1/edge.png", encode(Image.new("L", (16383, 10)), "PNG"))
    result = run(store, key="t1/edge.png", sizes=[{"height": 10}], format="webp")
    assert result["outputs"][0]["width"] == 16383


def test_through_the_worker_both_image_bombs_go_dead_on_the_first_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """The wide WebP output and the JPEG of many scans: dead once, not retried."""
    monkeypatch.setenv("SPOOL_BLOB_DIR", str(tmp_path / "blobs"))
    folder = LocalBlobStore(tmp_path / "blobs")
    folder.put("t1/long.png", encode(Image.new("L", (20000, 100)), "PNG"))
    folder.put("t1/scans.jpg", many_scans(MAX_JPEG_SCANS + 1, side=64))
    store = MemoryStore(clock)
    wide, scans = Service(store, registry).enqueue(
        [
            EnqueueRequest(
                type="resize_image",
                payload={"key": "t1/long.png", "sizes": [{"height": 100}], "format": "webp"},
            ),
            EnqueueRequest(type="resize_image", payload={"key": "t1/scans.jpg", "widths": [32]}),
        ],
        tenant="t1",
    )
    Worker(store, registry, WorkerConfig(concurrency=2)).drain()
    for added, reason in ((wide, "16383"), (scans, "scans")):
        job = store.get(added.job.id)
        assert job is not None and job.state is JobState.DEAD
        assert job.attempts == 1 and reason in (job.last_error or "")
