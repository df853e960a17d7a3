"""Is a downloaded file a whole, sane image? Checked before it may become a blob.

Pillow identifies the format from the header only (a short list of raster formats; never EPS
or other formats that run external programs), the dimensions are checked against the pixel
cap *before* any decoding (decompression bombs), and then completeness is proven cheaply:

- JPEG: the end-of-image marker (FF D9) must follow the start of the scan data. Entropy-coded
  data stuffs every FF byte, so no FF D9 can occur inside it: a body cut anywhere lacks it.
  Found with `rfind` on a read-only mmap, so a 100 MB file costs a few pages, not a decode.
- PNG: `verify()` checks every chunk's CRC, and the file must end with the IEND chunk.
- GIF, WebP, TIFF: `verify()` and a decode of the first frame only (rare on the Met's image
  host), within limits: at most `MAX_FRAMES` frames, a decoded frame of at most
  `MAX_DECODE_BYTES`, and at most `DECODE_SLOTS` such decodes at once in the process.

Nothing is decoded for JPEG and PNG, so memory and CPU do not grow with the pixel count. Pillow's own
decompression-bomb guard (an error above 2 x `Image.MAX_IMAGE_PIXELS`) still applies on top of
`max_pixels`; this module never changes that process-wide setting.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import (  # the plugins of ALLOWED_FORMATS, so that Pillow never loads all the others
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF")
_PLUGINS = (JpegImagePlugin, PngImagePlugin, GifImagePlugin, WebPImagePlugin, TiffImagePlugin)
MAX_SIDE = 1 << 16
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
MAX_FRAMES = 1_000
"""Most frames (animation, pages) a GIF / WebP / TIFF may declare."""
MAX_DECODE_BYTES = 128 * 1024 * 1024
"""Largest decoded frame (width x height x bytes per pixel) of a format that is decoded."""
DECODE_SLOTS = 2
"""Full decodes running at once, whatever the download concurrency (bounds peak memory)."""
_DECODES = threading.BoundedSemaphore(DECODE_SLOTS)
_MARKUP_STARTS = (b"<", b"{", b"[")


class InvalidImage(ValueError):
    """The bytes are not a whole, sane image; the message is the reason recorded."""


@dataclass(frozen=True)
class ImageInfo:
    """What Pillow found: format, mode and size."""

    format: str
    mode: str
    width: int
    height: int


def looks_like_markup(head: bytes) -> bool:
    """Whether the first bytes of a body look like HTML/XML/JSON rather than an image."""
    start = head.lstrip()[:16].lower()
    return start.startswith(_MARKUP_STARTS)


def validate_image(source: Path | int, *, max_pixels: int) -> ImageInfo:
    """Identify and check the image at `source`, or raise `InvalidImage` with the reason.

    Args:
        source: a complete downloaded file: its path, or a file descriptor open for reading
            (left open; its offset moves).
        max_pixels: the largest width x height accepted.
    """
    if isinstance(source, int):
        with open(source, "rb", buffering=1 << 16, closefd=False) as fh:
            return _validate(fh, max_pixels)
    with source.open("rb", buffering=1 << 16) as fh:
        return _validate(fh, max_pixels)


def _validate(fh: BinaryIO, max_pixels: int) -> ImageInfo:
    fh.seek(0)
    head = fh.read(64)
    if not head:
        raise InvalidImage("empty body")
    if looks_like_markup(head):
        raise InvalidImage("not an image: body is HTML/XML/JSON")
    try:
        return _check(fh, max_pixels)
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            raise InvalidImage(f"truncated image data ({text})") from None
        raise InvalidImage(f"broken image data ({text})") from None


def _check(fh: BinaryIO, max_pixels: int) -> ImageInfo:
    fh.seek(0)
    with Image.open(fh, formats=ALLOWED_FORMATS) as img:
        info = ImageInfo(img.format or "?", img.mode, img.width, img.height)
        _check_dimensions(info, max_pixels)
        # After open, a JPEG's file position is just past the first SOS header.
        scan_start = fh.tell() if info.format == "JPEG" else 0
        img.verify()
    if info.format == "JPEG":
        _check_jpeg_end(fh.fileno(), scan_start)
    elif info.format == "PNG":
        _check_png_end(fh)
    else:
        _decode_first_frame(fh, info)
    return info


def _frame_bytes(mode: str, width: int, height: int) -> int:
    try:
        bands = Image.getmodebands(mode)
    except (KeyError, ValueError):
        bands = 4
    depth = 4 if mode in ("I", "F") else 2 if "16" in mode else 1
    return width * height * bands * depth


def _decode_first_frame(fh: BinaryIO, info: ImageInfo) -> None:
    """Decode frame 0 of a GIF / WebP / TIFF within the frame, memory and concurrency limits."""
    needed = _frame_bytes(info.mode, info.width, info.height)
    if needed > MAX_DECODE_BYTES:
        raise InvalidImage(
            f"decoding {info.width}x{info.height} {info.mode} needs {needed:,} bytes, over the "
            f"{MAX_DECODE_BYTES:,}-byte decode limit"
        )
    fh.seek(0)
    with _DECODES, Image.open(fh, formats=ALLOWED_FORMATS) as img:
        frames = getattr(img, "n_frames", 1)
        if frames > MAX_FRAMES:
            raise InvalidImage(f"{frames} frames, over the limit of {MAX_FRAMES}")
        img.seek(0)
        img.load()


def _check_jpeg_end(fd: int, scan_start: int) -> None:
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
        if scan_start <= 0 or mm.rfind(b"\xff\xd9", scan_start) < 0:
            raise InvalidImage("truncated image data (JPEG without end-of-image marker)")


def _check_dimensions(info: ImageInfo, max_pixels: int) -> None:
    if info.width < 1 or info.height < 1:
        raise InvalidImage(f"bad dimensions {info.width}x{info.height}")
    if info.width > MAX_SIDE or info.height > MAX_SIDE:
        raise InvalidImage(f"dimensions {info.width}x{info.height} exceed {MAX_SIDE} per side")
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise InvalidImage(
            f"decompression bomb: {info.width}x{info.height} = {pixels} pixels "
            f"exceeds the cap of {max_pixels}"
        )


def _check_png_end(fh: BinaryIO) -> None:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - 4096))
    tail = fh.read()
    if PNG_IEND not in tail:
        raise InvalidImage("truncated image data (PNG without IEND chunk)")
