"""What inference reads: images given as PIL images, files, folders or mirror object ids, decoded
in DataLoader workers with the checkpoint's evaluation transform.

An unreadable file does not stop a batch: its item carries ``ok=False`` and the error, and the
batch goes on without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from met_vision.data.images import open_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
ImageInput = Image.Image | str | Path


class InputError(ValueError):
    """Bad user input (a missing checkpoint, an unknown object id or label); one-line message."""


def parse_object_ids(text: str | Iterable[int | str]) -> list[int]:
    """Object ids from ``"1,2, 3"`` or an iterable of ints/strings (the one parser of ids).

    Raises:
        InputError: when an id is not a positive integer.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    ids: list[int] = []
    for part in parts:
        item = str(part).strip()
        if not item:
            continue
        if not item.isdigit() or int(item) <= 0:
            raise InputError(f"object ids must be positive integers, got {item!r}")
        ids.append(int(item))
    return ids


def expand_images(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """A flat list of PIL images and files: a folder becomes its image files (sorted).

    Raises:
        InputError: when a path does not exist.
    """
    items = [images] if isinstance(images, Image.Image | str | Path) else list(images)
    out: list[ImageInput] = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            out.append(str(path))
        else:
            raise InputError(f"image file or folder {str(path)!r} not found")
    return out


class ImageInputs(Dataset):
    """Items ``{image, position, ok, error}``; ``image`` is the transformed tensor (zeros and
    ``ok=False`` for an input that cannot be decoded)."""

    def __init__(
        self,
        items: Sequence[ImageInput],
        transform: Callable[[Image.Image], torch.Tensor],
        decode_size: int,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.decode_size = decode_size
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, item: ImageInput) -> Image.Image:
        if isinstance(item, Image.Image):
            return item.convert("RGB") if item.mode != "RGB" else item
        return open_rgb(item, min_size=self.decode_size)

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        try:
            image = self.transform(self._decode(item))
        except DECODE_ERRORS as exc:
            if self._blank is None:
                self._blank = self.transform(Image.new("RGB", (8, 8)))
            return {
                "image": torch.zeros_like(self._blank),
                "position": position,
                "ok": False,
                "error": f"cannot read image {item}: {exc}",
            }
        return {"image": image, "position": position, "ok": True, "error": ""}


def image_loader(
    dataset: ImageInputs, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """Ordered batches of ``dataset`` decoded by ``num_workers`` worker processes."""
    has_pil = any(isinstance(item, Image.Image) for item in dataset.items)
    workers = 0 if has_pil else max(0, num_workers)  # PIL images stay in this process
    return DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
