"""resize_image holds one decoded copy of the source, not two.

ImageOps.exif_transpose returned a full copy even with no orientation tag, and the
source stayed alive beside it: a 6300x6300 PNG peaked at ~500 MB per job."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chalicelib.blobs import LocalBlobStore
from tests.test_images import decoded, encode, photo, run


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_an_image_without_orientation_is_not_copied_whole(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("t1/big.png", encode(photo(1200, 900), "PNG"))
    whole: list[str] = []
    for name in ("copy", "transpose"):
        original = getattr(Image.Image, name)

        def spy(self: Image.Image, *args: Any, _name: str = name, _f: Any = original) -> Any:
            if self.size == (1200, 900):
                whole.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(Image.Image, name, spy)
    result = run(store, key="t1/big.png", widths=[120])
    assert result["outputs"][0]["width"] == 120
    assert whole == []


@pytest.mark.parametrize(("orientation", "red_at"), [(1, (0, 0)), (3, (99, 74)), (2, (99, 0))])
def test_orientation_is_still_applied(
    store: LocalBlobStore, orientation: int, red_at: tuple[int, int]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    store.put("t1/o.png", encode(photo(800, 600), "PNG", exif=exif.tobytes()))
    result = run(store, key="t1/o.png", widths=[100])
    output = decoded(store, result["outputs"][0]["key"]).convert("RGB")
    assert output.size == (100, 75)
    pixel = output.getpixel(red_at)  # photo() paints its top-left quarter red
    assert isinstance(pixel, tuple)
    r, g, b = pixel
    assert r > 150 and g < 80 and b < 80, (orientation, output.getpixel(red_at))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM (Linux)")
def test_peak_memory_is_one_decoded_copy(store: LocalBlobStore, tmp_path: Path) -> None:
    """In a fresh process: the rise in peak RSS over a resize of a 4000x3000 RGB PNG
    (46 MiB decoded, 4 bytes a pixel) stays well under two decoded copies."""
    image = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    store.put("t1/big.png", encode(image, "PNG", compress_level=1))
    small = Image.new("RGB", (64, 48))
    store.put("t1/small.png", encode(small, "PNG"))
    del image
    script = textwrap.dedent(
        f"""
        def peak():  # VmHWM: the process's own high-water mark (ru_maxrss survives exec)
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        from chalicelib.blobs import LocalBlobStore
        from chalicelib.builtin.images import Limits, ResizePayload, resize
        store = LocalBlobStore({str(tmp_path / "blobs")!r})
        # A small resize first: imports and codecs, not the big decode.
        resize(store, ResizePayload(key="t1/small.png", widths=[32]), Limits())
        before = peak()
        resize(store, ResizePayload(key="t1/big.png", widths=[200]), Limits())
        after = peak()
        print((after - before) // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    rise_mb = int(done.stdout.split()[-1])
    decoded_mb = 4000 * 3000 * 4 // 2**20
    assert rise_mb < 1.5 * decoded_mb, f"peak rose {rise_mb} MB for a {decoded_mb} MB image"
