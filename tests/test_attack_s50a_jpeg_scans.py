"""resize_image and JPEGs built of many scans.

A progressive JPEG's decoder goes over every coefficient of the image once per
scan, and a scan can be a few dozen bytes: a 3000x3000 JPEG with its last
refinement scan repeated 1000 times is ~90 KB, within every pixel and byte
limit, and took libjpeg ~6 s of CPU (a 40 MB file holds ~700 000 such scans:
hours, on a worker thread that the job's timeout cannot stop). The scans are
now counted before a pixel is decoded; past MAX_JPEG_SCANS the job is dead at
once, as the same bytes would cost the same on every retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.blobs import LocalBlobStore
from chalicelib.builtin.image_limits import MAX_JPEG_SCANS
from chalicelib.errors import PermanentError
from tests.test_images import encode, photo, run

EOI = b"\xff\xd9"
SOS = b"\xff\xda"


def many_scans(extra: int, side: int = 3000) -> bytes:
    """A valid progressive JPEG whose last scan (a refinement one) is repeated."""
    data = encode(photo(side, side), "JPEG", quality=30, progressive=True)
    assert data.endswith(EOI)
    last = data[data.rfind(SOS) : -len(EOI)]
    return data[: -len(EOI)] + last * extra + EOI


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.mark.timeout(60)
def test_a_jpeg_of_many_scans_is_refused_before_decoding(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    store.put("t1/scans.jpg", many_scans(1000))
    with pytest.raises(PermanentError, match=f"more than {MAX_JPEG_SCANS} scans"):
        run(store, key="t1/scans.jpg", widths=[100])
    assert not (tmp_path / "blobs" / "t1" / "resized").exists()


def test_ordinary_progressive_and_baseline_jpegs_still_resize(store: LocalBlobStore) -> None:
    store.put("t1/p.jpg", encode(photo(), "JPEG", progressive=True))
    store.put("t1/b.jpg", encode(photo(), "JPEG"))
    for key in ("t1/p.jpg", "t1/b.jpg"):
        assert run(store, key=key, widths=[100])["outputs"][0]["width"] == 100


def test_a_few_repeated_scans_are_within_the_limit(store: LocalBlobStore) -> None:
    store.put("t1/some.jpg", many_scans(MAX_JPEG_SCANS // 2, side=200))
    assert run(store, key="t1/some.jpg", widths=[50])["outputs"][0]["width"] == 50
