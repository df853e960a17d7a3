"""Decode limits for every allowed format: pixels (all), frames and memory (GIF, WebP, TIFF,
which are decoded), checked on real files written by Pillow."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from met_harvester.images import validate
from met_harvester.images.validate import InvalidImage, validate_image


def _save(path: Path, fmt: str, size: tuple[int, int], frames: int = 1) -> Path:
    images = [Image.new("RGB", size, (i * 20 % 256, 255 - i * 20 % 256, 0)) for i in range(frames)]
    extra = {"save_all": True, "append_images": images[1:]} if frames > 1 else {}
    images[0].save(path, fmt, **extra)
    return path


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF", "PNG", "JPEG"])
def test_pixel_cap_applies_to_every_format(tmp_path: Path, fmt: str) -> None:
    path = _save(tmp_path / f"a.{fmt.lower()}", fmt, (300, 200))
    assert validate_image(path, max_pixels=60_000).format == fmt
    with pytest.raises(InvalidImage, match="exceeds the cap of 59999"):
        validate_image(path, max_pixels=59_999)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_frame_and_memory_limits_of_decoded_formats(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    animated = _save(tmp_path / f"many.{fmt.lower()}", fmt, (8, 8), frames=12)
    assert validate_image(animated, max_pixels=10_000).width == 8
    monkeypatch.setattr(validate, "MAX_FRAMES", 10)
    with pytest.raises(InvalidImage, match="12 frames, over the limit of 10"):
        validate_image(animated, max_pixels=10_000)
    big = _save(tmp_path / f"big.{fmt.lower()}", fmt, (200, 100))
    frame_bytes = 200 * 100 * (1 if fmt == "GIF" else 3)  # GIF decodes to one byte a pixel
    monkeypatch.setattr(validate, "MAX_DECODE_BYTES", frame_bytes)
    assert validate_image(big, max_pixels=10**6).height == 100
    monkeypatch.setattr(validate, "MAX_DECODE_BYTES", frame_bytes - 1)
    with pytest.raises(InvalidImage, match=f"over the {frame_bytes - 1:,}-byte decode limit"):
        validate_image(big, max_pixels=10**6)
