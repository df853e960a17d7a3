"""Optional JPEG decoding on the device for the raw path (`--data.device_decode true`).

Reading raw originals (no prepared cache), a CPU worker spends most of its time decoding multi-MB
JPEGs. With device decoding the workers only read the file bytes (`EncodedImageDataset`); the
batch carries the encoded images and the crop spec, and
`ClassificationTask.on_after_batch_transfer` decodes them with `torchvision.io.decode_jpeg` on the
batch's device (nvJPEG on CUDA), then crops and resizes there to the same uint8 batch the CPU
transforms make (resize + centre crop for evaluation; RandomResizedCrop + flip for training).
A non-JPEG original is decoded in the worker and handed on as a lossless-quality JPEG.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import RandomResizedCrop

from met_vision.data.datasets import MetImageDataset
from met_vision.data.images import open_rgb

JPEG_MAGIC = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class CropSpec:
    """How encoded images become model input: size, crop and augmentation of one stage."""

    size: int
    train: bool
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    crop_scale: tuple[float, float] = (0.35, 1.0)


def encoded_bytes(source: Any) -> bytes:
    """The JPEG bytes of an image source (path, member address or file object); other formats
    are decoded here and re-encoded as JPEG (quality 100)."""
    if hasattr(source, "read"):
        data = source.read()
    else:
        with open(str(source), "rb") as handle:
            data = handle.read()
    if data[:2] == JPEG_MAGIC:
        return bytes(data)
    buffer = io.BytesIO()
    open_rgb(io.BytesIO(data)).save(buffer, "JPEG", quality=100)
    return buffer.getvalue()


class EncodedImageDataset(MetImageDataset):
    """`MetImageDataset` whose items hold the JPEG bytes (`jpeg`, a uint8 numpy array, which
    Lightning leaves on the host) instead of a decoded `image`. A truncated JPEG (no end-of-image
    marker) counts as unreadable in the worker, as with CPU decoding."""

    def _decode(self, i: int) -> bytes:
        data = encoded_bytes(self._source(i))
        if data.rstrip(b"\0")[-2:] != JPEG_EOI:
            raise OSError("truncated JPEG (no end-of-image marker)")
        return data

    def _sample(self, i: int, decoded: Any) -> dict[str, Any]:
        return {
            "jpeg": np.frombuffer(decoded, dtype=np.uint8),
            "label": self.encode(self.targets[i]),
            "object_id": torch.tensor(self.object_ids[i], dtype=torch.long),
        }


class EncodedCollate:
    """collate_fn of encoded items: {"jpeg": [arrays], "label", "object_id", "crop": spec}."""

    def __init__(self, spec: CropSpec) -> None:
        self.spec = spec

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_encoded(items, self.spec)


def collate_encoded(items: list[dict[str, Any]], spec: CropSpec) -> dict[str, Any]:
    """Batch of encoded images: {"jpeg": [uint8 arrays], "label", "object_id", "crop": spec}."""
    return {
        "jpeg": [item["jpeg"] for item in items],
        "label": torch.stack([item["label"] for item in items]),
        "object_id": torch.stack([item["object_id"] for item in items]),
        "crop": asdict(spec),
    }


def _crop_box(height: int, width: int, spec: CropSpec) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the region that becomes the `size` square."""
    if spec.train:
        probe = torch.empty(1, height, width)
        top, left, h, w = RandomResizedCrop.get_params(probe, list(spec.crop_scale), [3 / 4, 4 / 3])  # type: ignore[arg-type]
        return top, left, h, w
    side = round(spec.size * min(height, width) / math.floor(spec.size / spec.crop_pct))
    return (height - side) // 2, (width - side) // 2, side, side


def decode_batch(
    jpegs: list[np.ndarray], crop: dict[str, Any], device: torch.device | str
) -> torch.Tensor:
    """Decode, crop and resize on `device`: uint8 ``[B, 3, size, size]``."""
    spec = CropSpec(**{**crop, "crop_scale": tuple(crop.get("crop_scale", (0.35, 1.0)))})
    encoded = [torch.from_numpy(np.array(j, dtype=np.uint8)) for j in jpegs]
    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    mode = "bilinear" if spec.train else spec.interpolation
    out = []
    for image in images if isinstance(images, list) else [images]:
        top, left, h, w = _crop_box(image.shape[1], image.shape[2], spec)
        region = image[:, top : top + h, left : left + w].unsqueeze(0).float()
        resized = functional.interpolate(
            region, size=(spec.size, spec.size), mode=mode, antialias=True, align_corners=False
        )
        if spec.train and torch.rand(1).item() < 0.5:
            resized = resized.flip(-1)
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
