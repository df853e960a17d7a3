"""Decoding and resizing images for the prepared cache: any Pillow mode to RGB, JPEG draft
decoding of large originals, the resized JPEG copy of a blob and where it lives in the cache."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps

from met_vision.data.shards import read_member

JPEG_QUALITY = 90
# Met originals can be very large; decoding goes through draft(), so allow big declared sizes.
MAX_IMAGE_PIXELS = 500_000_000
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image to RGB: CMYK, L, P, 16-bit; alpha is composited over white."""
    if image.mode == "RGB":
        image.load()
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(
    path: Path | str | IO[bytes], min_size: int | None = None, *, exif: bool = False
) -> Image.Image:
    """Decode an image file to RGB.

    Args:
        path: the file, an open binary file, or a shard member address
            (`met_vision.data.shards.member_address`).
        min_size: a JPEG is DCT-downscaled on decode (`draft`) to no less than this short side.
        exif: apply the EXIF orientation.

    Raises:
        OSError, ValueError, SyntaxError: undecodable or truncated input.
    """
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    if isinstance(path, str):
        path = read_member(path) or path
    with Image.open(path) as image:
        if min_size and image.format == "JPEG":
            width, height = image.size
            scale = min(width, height) / min_size
            if scale >= 2:
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        if exif and image.getexif().get(0x0112, 1) != 1:
            return to_rgb(ImageOps.exif_transpose(image))
        return to_rgb(image)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the short side is `size`; smaller images are kept as they are (no upscaling)."""
    width, height = image.size
    short = min(width, height)
    if short <= size:
        return image
    scale = size / short
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)


def cache_path(cache_dir: Path, sha256: str) -> Path:
    """Where the resized copy of the blob `sha256` lives in a cache of one size."""
    return cache_dir / sha256[:2] / f"{sha256}.jpg"


DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def resized_jpeg(source: str, size: int, quality: int = JPEG_QUALITY) -> bytes:
    """The cached form of one blob: RGB, short side `size` (never upscaled), JPEG bytes.

    Raises:
        OSError, ValueError, SyntaxError, DecompressionBombError: undecodable input.
    """
    image = resize_short_side(open_rgb(source, min_size=size, exif=True), size)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_cached_copy(
    source: str, target: str, size: int, quality: int = JPEG_QUALITY
) -> tuple[str, str | None]:
    """Resize one blob into the cache (worker function). Returns (source, error or None)."""
    try:
        data = resized_jpeg(source, size, quality)
        out = Path(target)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except DECODE_ERRORS as exc:
        return source, f"{type(exc).__name__}: {exc}"
    return source, None
