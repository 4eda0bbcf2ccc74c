"""`resize_image`: read an image from the blob store, write resized versions.

Bad input (not an image, a format outside the list, a truncated file, a
decompression bomb, a missing key) raises PermanentError, so the job goes to
dead with the reason at once instead of failing the same way on every retry.
Store hiccups (S3 throttling, a dropped connection) are retried.

Tenancy: the source key, the output prefix and every output key must lie in
the job's tenant's namespace (chalicelib.blob_tenancy): checked at enqueue by
`admit_resize` (422), again when the job runs (a stored job is dead, not
retried), and by the tenant view of the store on every read and write. The
default output folder is `<namespace>/resized/<rest of the key, no extension>/`,
inside the same namespace as the source.

Output keys depend only on the payload, so a retried or re-run job overwrites
the same objects: the handler is idempotent without looking at the job id.
Metadata (EXIF, including GPS position) is not copied to the outputs; the
orientation it records is applied first.

Settings: the blob store's (see chalicelib.blobs) and the limits, read in
chalicelib.builtin.image_limits: SPOOL_IMAGE_MAX_PIXELS, SPOOL_IMAGE_MAX_BYTES,
SPOOL_IMAGE_MAX_OUTPUT_PIXELS, SPOOL_IMAGE_MAX_TOTAL_PIXELS and
SPOOL_IMAGE_MAX_OUTPUTS. Pillow is imported when a job runs, never at start-up.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib import blobs
from chalicelib.blob_tenancy import TenantBlobStore, check_tenant_key, check_tenant_prefix
from chalicelib.blobs import (
    MAX_KEY_BYTES,
    BlobConfigError,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidKey,
    check_folder,
    check_key,
)
from chalicelib.blobs import open_blob_store as _open_blob_store
from chalicelib.builtin.image_limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    MAX_OUTPUTS,
    LimitExceeded,
    Limits,
)
from chalicelib.config import Settings
from chalicelib.errors import Misconfigured, PermanentError
from chalicelib.handlers import JobContext, handler

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "Limits", "ResizePayload", "resize"]

# The operator's lines (never a job's log_tail, which its tenant reads).
log = logging.getLogger("spool.handlers.resize_image")

MAX_SIDE = 10_000
# Room kept after an output prefix for "<W>x<H>.<ext>"; sides are bounded by the pixel limits.
OUTPUT_NAME_ROOM = 40
# Formats Pillow may parse here; anything else is refused before a decoder runs.
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
OUTPUT_FORMATS = {
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "png": ("PNG", "png", "image/png"),
    "webp": ("WEBP", "webp", "image/webp"),
}
# The longest side each output format's encoder takes. Boxes stop at MAX_SIDE, but a
# side the aspect ratio keeps from the source (a 20000x100 PNG at height 100) does not.
FORMAT_MAX_SIDE = {"jpeg": 65_500, "webp": 16_383}
SOURCE_TO_OUTPUT = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}
ORIENTATION_TAG = 0x0112


class Box(BaseModel):
    """A bounding box; giving one side scales by it, giving both fits inside (or covers)."""

    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(default=None, ge=1, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_SIDE)

    @model_validator(mode="after")
    def _one_side(self) -> Box:
        if self.width is None and self.height is None:
            raise ValueError("a size needs a width, a height or both")
        return self


class ResizePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=1024)
    widths: list[int] = Field(default_factory=list, max_length=MAX_OUTPUTS)
    sizes: list[Box] = Field(default_factory=list, max_length=MAX_OUTPUTS)
    format: Literal["jpeg", "png", "webp"] | None = None  # default: the source's, else png
    quality: int = Field(default=85, ge=1, le=100)
    fit: Literal["contain", "cover"] = "contain"
    upscale: bool = False
    output_prefix: str | None = Field(default=None, max_length=900)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "jpeg" if value == "jpg" else value
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _safe_key(value)

    @field_validator("widths")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if not all(1 <= w <= MAX_SIDE for w in value):
            raise ValueError(f"widths must be between 1 and {MAX_SIDE}")
        return value

    @field_validator("output_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_folder(value)
            except InvalidKey as exc:
                raise ValueError(str(exc)) from None
            if value == "":
                raise ValueError("output_prefix may not be empty")
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> ResizePayload:
        count = len(self.widths) + len(self.sizes)
        if count == 0:
            raise ValueError("give at least one of widths or sizes")
        if count > MAX_OUTPUTS:
            raise ValueError(f"at most {MAX_OUTPUTS} sizes per job")
        if len(self.prefix().encode("utf-8")) + OUTPUT_NAME_ROOM > MAX_KEY_BYTES:
            raise ValueError(
                f"the output prefix {self.prefix()!r} leaves no room for output names "
                f"within {MAX_KEY_BYTES} bytes"
            )
        return self

    def boxes(self) -> list[Box]:
        return [Box(width=w) for w in self.widths] + list(self.sizes)

    def prefix(self) -> str:
        """Where outputs go: output_prefix, else `<first segment>/resized/<rest, no extension>/`.

        Keeping the key's first segment (its tenant namespace) in front is what keeps
        default outputs inside the tenant's namespace.
        """
        if self.output_prefix is not None:
            return self.output_prefix
        head, sep, rest = self.key.partition("/")
        if not sep:
            return f"resized/{_stem(head)}/"
        return f"{head}/resized/{_stem(rest)}/"


def _stem(path: str) -> str:
    """The path without the last segment's extension (".hidden" has none)."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return path[: len(path) - len(name) + dot] if dot > 0 else path


def admit_resize(payload: ResizePayload, tenant: str) -> None:
    """Enqueue-time check (the handler's admit hook): the tenant's blobs only, within limits.

    Raises ValueError (a 422 for the client): a key or output folder outside the
    tenant's namespace, or more work than the SPOOL_IMAGE_* limits allow;
    Misconfigured (a 503) when a SPOOL_IMAGE_* setting is malformed.
    """
    _check_tenancy(payload, tenant)
    try:
        limits = Limits.from_settings(Settings.from_env())
    except ValueError as exc:  # a setting no payload can mend: the server's to fix
        raise Misconfigured.setting(f"resize_image is misconfigured: {exc}") from None
    limits.check_request([(b.width, b.height) for b in payload.boxes()], payload.upscale)


def _check_tenancy(payload: ResizePayload, tenant: str) -> None:
    check_tenant_key(payload.key, tenant)
    check_tenant_prefix(payload.prefix(), tenant)


def _safe_key(value: str) -> str:
    try:
        return check_key(value)
    except InvalidKey as exc:
        raise ValueError(str(exc)) from None


def target_size(source: tuple[int, int], box: Box, fit: str, upscale: bool) -> tuple[int, int]:
    """The output's size: aspect ratio kept, never larger than the source unless upscale."""
    width, height = source
    scales = []
    if box.width is not None:
        scales.append(box.width / width)
    if box.height is not None:
        scales.append(box.height / height)
    if fit == "cover" and box.width is not None and box.height is not None:
        if upscale or (box.width <= width and box.height <= height):
            return box.width, box.height
        scale = min(scales)  # cannot cover without upscaling: fall back to contain
    else:
        scale = min(scales)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(
    store: BlobStore,
    payload: ResizePayload,
    limits: Limits,
    ctx: JobContext | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Read, resize, write. With a tenant, every key is held to its namespace first,
    and all I/O goes through the tenant's view of the store."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    if tenant is not None:
        try:
            _check_tenancy(payload, tenant)
        except InvalidKey as exc:
            raise PermanentError(f"refused: {exc}") from None
        store = TenantBlobStore(store, tenant)
    try:
        limits.check_request([(b.width, b.height) for b in payload.boxes()], payload.upscale)
    except LimitExceeded as exc:
        raise PermanentError(str(exc)) from None
    try:
        data = store.get(payload.key, max_bytes=limits.max_bytes)
    except BlobNotFound:
        where = blobs.location(store)
        if where is not None:  # the operator's: the tenant's error names no server path
            log.warning(
                "resize_image job %s: no blob %r in %s",
                ctx.job.id if ctx is not None else "-",
                payload.key,
                where,
            )
        said = " (the worker's log names where it looked)" if where is not None else ""
        raise PermanentError(
            f"source image {payload.key!r} not found in the blob store{said}"
        ) from None
    except BlobTooLarge:
        raise PermanentError(
            f"source image {payload.key!r} is larger than {limits.max_bytes} bytes"
        ) from None
    except InvalidKey as exc:
        raise PermanentError(str(exc)) from None
    boxes = payload.boxes()
    try:
        with PILImage.open(io.BytesIO(data), formats=INPUT_FORMATS) as opened:
            source_format = opened.format or "unknown"
            width, height = opened.size
            limits.check_source(width, height)
            if source_format in ("JPEG", "MPO"):  # MPO: JPEG frames, opened by the JPEG plugin
                limits.check_jpeg_scans(data)
            # Sizes come from the upright source, as the EXIF orientation shows it.
            turned = opened.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
            upright = (height, width) if turned else (width, height)
            sizes = [target_size(upright, b, payload.fit, payload.upscale) for b in boxes]
            # Before a pixel is decoded: no output, and not all of them, may be a bomb.
            limits.check_outputs(sizes)
            plan = _plan(payload, sizes, source_format, tenant)
            if source_format == "JPEG":
                # Let libjpeg decode at a reduced scale when every output is much smaller.
                side = max(max(size) for size in sizes)
                opened.draft("RGB", (side, side))
            opened.load()
            # In place: without it Pillow returns a full copy even when there is no
            # orientation to apply, and both stayed alive (twice the decoded size).
            ImageOps.exif_transpose(opened, in_place=True)
            image = opened
    except LimitExceeded as exc:
        raise PermanentError(str(exc)) from None
    except PermanentError:
        raise
    except UnidentifiedImageError:
        raise PermanentError(
            f"{payload.key!r} is not an image in a supported format ({', '.join(INPUT_FORMATS)})"
        ) from None
    except PILImage.DecompressionBombError as exc:
        raise PermanentError(f"image refused as a decompression bomb: {exc}") from None
    except Exception as exc:
        # Decoding depends only on the bytes: the same failure would repeat on every retry.
        raise PermanentError(f"image {payload.key!r} is corrupt or truncated: {exc}") from None
    fmt = plan.fmt
    pil_format, _, content_type = OUTPUT_FORMATS[fmt]
    outputs: list[dict[str, Any]] = []
    for size, key in plan.outputs:
        if ctx is not None and ctx.cancelled.is_set():
            raise TimeoutError("attempt abandoned by the worker")
        encoded = _encode(_scaled(image, size, payload.fit), pil_format, payload.quality)
        try:
            store.put(key, encoded, content_type)
        except InvalidKey as exc:
            raise PermanentError(f"output key {key!r} is invalid: {exc}") from None
        outputs.append(
            {
                "key": key,
                "width": size[0],
                "height": size[1],
                "bytes": len(encoded),
                "format": fmt,
                "content_type": content_type,
            }
        )
    return {
        "source": {
            "key": payload.key,
            "format": source_format.lower(),
            "width": upright[0],
            "height": upright[1],
            "bytes": len(data),
        },
        "outputs": outputs,
    }


@dataclass(frozen=True)
class _Plan:
    fmt: str
    extension: str
    outputs: list[tuple[tuple[int, int], str]]  # (size, key), one per distinct key


def _plan(
    payload: ResizePayload, sizes: list[tuple[int, int]], source_format: str, tenant: str | None
) -> _Plan:
    """Every output's key, each checked before anything is decoded or written, so a
    bad key never leaves some outputs written and the job half done."""
    fmt = payload.format or SOURCE_TO_OUTPUT.get(source_format, "png")
    extension = OUTPUT_FORMATS[fmt][1]
    _check_sides(fmt, sizes)
    prefix = payload.prefix()
    outputs: dict[str, tuple[int, int]] = {}
    for size in sizes:
        key = f"{prefix}{size[0]}x{size[1]}.{extension}"
        try:
            check_key(key) if tenant is None else check_tenant_key(key, tenant)
        except InvalidKey as exc:
            raise PermanentError(f"output key {key!r} is invalid: {exc}") from None
        outputs.setdefault(key, size)
    return _Plan(fmt, extension, [(size, key) for key, size in outputs.items()])


def _check_sides(fmt: str, sizes: list[tuple[int, int]]) -> None:
    """Refuse (permanently) an output side the format cannot encode: the encoder's
    own error came only after the decode, and was retried as if it might pass."""
    longest = FORMAT_MAX_SIDE.get(fmt)
    if longest is None:
        return
    for width, height in sizes:
        if max(width, height) > longest:
            raise PermanentError(
                f"output {width}x{height} cannot be written as {fmt}: its sides are at most "
                f"{longest} pixels; ask for a smaller size or another format (png)"
            )


def _scaled(image: Image, size: tuple[int, int], fit: str) -> Image:
    from PIL import Image as PILImage
    from PIL import ImageOps

    if fit == "cover" and (size[0] / size[1]) != (image.size[0] / image.size[1]):
        return ImageOps.fit(image, size, PILImage.Resampling.LANCZOS)
    if image.size == size:
        return image.copy()
    return image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(image: Image, pil_format: str, quality: int) -> bytes:
    from PIL import Image as PILImage

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if pil_format == "JPEG":
        if has_alpha:
            rgba = image.convert("RGBA")
            flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    out = io.BytesIO()
    if pil_format == "JPEG":
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
    elif pil_format == "WEBP":
        image.save(out, "WEBP", quality=quality, method=4)
    else:
        image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def open_blob_store(settings: Settings) -> BlobStore:
    """The handler's store; a module attribute so tests and embedders can swap it."""
    return _open_blob_store(settings)


@handler(
    "resize_image",
    payload=ResizePayload,
    max_attempts=3,
    backoff=(2.0, 60.0),
    timeout=60,
    admit=admit_resize,
)
def resize_image(payload: ResizePayload, ctx: JobContext) -> dict[str, Any]:
    settings = Settings.from_env()
    try:
        limits = Limits.from_settings(settings)
        store = open_blob_store(settings)
    except (ValueError, BlobConfigError) as exc:
        raise PermanentError(f"resize_image is misconfigured: {exc}") from None
    return resize(store, payload, limits, ctx, tenant=ctx.job.tenant)
