"""How much work one resize_image job may ask for: source, each output, all outputs.

The source limit alone is not enough: a 70-byte 1x1 PNG with `widths: [10000]`
and `upscale: true` asks for a 100-megapixel output (seconds of CPU and ~800 MB
per output), and a 1x10000 source scaled to width 10000 would ask for 10^12.
So each output and the sum of a job's outputs have limits of their own, and so
does the number of outputs.

What the payload alone decides is refused at enqueue (422): too many outputs,
and, with upscale, boxes (width and height both given) whose area is over the
limits, since the job asks for images that big. What depends on the source's
shape (a width alone, with upscale) is checked when the job runs, from the
header, before any pixel is decoded; a failure there is permanent (dead, not
retried), as the same bytes would fail the same way again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chalicelib.config import Settings

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_OUTPUT_PIXELS = 40_000_000
DEFAULT_MAX_TOTAL_PIXELS = 100_000_000
DEFAULT_MAX_BYTES = 40 * 1024 * 1024
MAX_OUTPUTS = 20  # the payload model's ceiling; SPOOL_IMAGE_MAX_OUTPUTS may only lower it
# A JPEG decoder passes over the whole image once per scan, and a scan may be a few
# dozen bytes: the pixel and byte limits alone let a 90 KB file cost seconds of CPU
# and a 40 MB one hours. Encoders write 1 (baseline) to ~20 (progressive).
MAX_JPEG_SCANS = 100
_SOS = b"\xff\xda"  # start of scan


class LimitExceeded(ValueError):
    """The job asks for more than the limits allow (a 422 at enqueue, dead at run time)."""


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS  # the source's width x height
    max_bytes: int = DEFAULT_MAX_BYTES  # the source file
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS  # each output's width x height
    max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS  # all of a job's outputs together
    max_outputs: int = MAX_OUTPUTS  # entries in widths + sizes

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """Read the SPOOL_IMAGE_* settings; ValueError naming the variable if one is bad."""
        return cls(
            settings.integer("SPOOL_IMAGE_MAX_PIXELS", DEFAULT_MAX_PIXELS, minimum=1),
            settings.integer("SPOOL_IMAGE_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=1),
            settings.integer("SPOOL_IMAGE_MAX_OUTPUT_PIXELS", DEFAULT_MAX_OUTPUT_PIXELS, minimum=1),
            settings.integer("SPOOL_IMAGE_MAX_TOTAL_PIXELS", DEFAULT_MAX_TOTAL_PIXELS, minimum=1),
            settings.integer(
                "SPOOL_IMAGE_MAX_OUTPUTS", MAX_OUTPUTS, minimum=1, maximum=MAX_OUTPUTS
            ),
        )

    def check_request(self, boxes: Sequence[tuple[int | None, int | None]], upscale: bool) -> None:
        """What the payload alone decides: the number of outputs, and upscaled boxes' areas."""
        if len(boxes) > self.max_outputs:
            raise LimitExceeded(
                f"{len(boxes)} sizes asked for; at most {self.max_outputs} per job "
                "(SPOOL_IMAGE_MAX_OUTPUTS)"
            )
        if not upscale:
            return  # every output is at most the source, which has its own limit
        areas = {(w, h): w * h for w, h in boxes if w is not None and h is not None}
        for (w, h), area in areas.items():
            if area > self.max_output_pixels:
                raise LimitExceeded(
                    f"an upscaled {w}x{h} box allows {area} pixels, over the per-output "
                    f"limit of {self.max_output_pixels} (SPOOL_IMAGE_MAX_OUTPUT_PIXELS)"
                )
        total = sum(areas.values())
        if total > self.max_total_pixels:
            raise LimitExceeded(
                f"the upscaled boxes allow {total} pixels in all, over the per-job limit "
                f"of {self.max_total_pixels} (SPOOL_IMAGE_MAX_TOTAL_PIXELS)"
            )

    def check_source(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise LimitExceeded(
                f"image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{self.max_pixels} (a decompression bomb, or simply too big)"
            )

    @staticmethod
    def check_jpeg_scans(data: bytes) -> None:
        """Refuse a JPEG with more than MAX_JPEG_SCANS scans, before decoding it.

        Every start-of-scan marker is the bytes FF DA, which coded data never holds
        (an FF there is followed by 00 or a restart marker): counting the pair may
        count one inside metadata (an EXIF thumbnail's own scan), never miss a scan."""
        scans = data.count(_SOS)
        if scans > MAX_JPEG_SCANS:
            raise LimitExceeded(
                f"the JPEG has {scans} start-of-scan markers, more than {MAX_JPEG_SCANS} "
                "scans: each scan costs a pass over the whole image (a decompression bomb)"
            )

    def check_outputs(self, sizes: Iterable[tuple[int, int]]) -> None:
        """The real output sizes, known once the source's header is read."""
        distinct = set(sizes)
        if len(distinct) > self.max_outputs:
            raise LimitExceeded(
                f"{len(distinct)} outputs; at most {self.max_outputs} per job "
                "(SPOOL_IMAGE_MAX_OUTPUTS)"
            )
        for w, h in sorted(distinct):
            if w * h > self.max_output_pixels:
                raise LimitExceeded(
                    f"output {w}x{h} would be {w * h} pixels, over the per-output limit "
                    f"of {self.max_output_pixels} (SPOOL_IMAGE_MAX_OUTPUT_PIXELS)"
                )
        total = sum(w * h for w, h in distinct)
        if total > self.max_total_pixels:
            raise LimitExceeded(
                f"the outputs would be {total} pixels in all, over the per-job limit of "
                f"{self.max_total_pixels} (SPOOL_IMAGE_MAX_TOTAL_PIXELS)"
            )
