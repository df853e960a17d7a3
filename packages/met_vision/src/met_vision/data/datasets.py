"""`MetImageDataset`: the labelled images of a frame (files or tar-shard members) as tensors.

Items are dicts `{image, label, object_id}`; an undecodable image is skipped with a warning,
and too many in a row raise `BadImageError`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from met_vision.data.images import open_rgb
from met_vision.data.shards import ShardReader

log = logging.getLogger("met_vision.data")


class BadImageError(RuntimeError):
    """Too many undecodable images in a row: the data, not one file, is broken."""


class MetImageDataset(Dataset):
    """Images with their labels; items are dicts {image, label, object_id}.

    With a `reader`, the images are read from tar shards at the frame's shard/offset/size
    columns instead of from the files at `path`.

    A file that cannot be decoded is skipped (the next one is returned in its place) with a
    warning and counted in `bad_images`; `max_consecutive_bad` failures in a row raise
    `BadImageError`.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        task: str,
        num_classes: int,
        transform: Callable[[Image.Image], torch.Tensor],
        decode_size: int | None = None,
        max_consecutive_bad: int = 20,
        reader: ShardReader | None = None,
    ) -> None:
        self.paths = np.array(frame["path"].tolist(), dtype=object)
        self.reader = reader
        if reader is not None:
            self.shards = np.array(frame["shard"].tolist(), dtype=object)
            self.offsets = frame["offset"].to_numpy(dtype=np.int64)
            self.sizes = frame["size"].to_numpy(dtype=np.int64)
        self.object_ids = frame["object_id"].to_numpy(dtype=np.int64)
        self.targets = list(frame["target"])
        self.task = task
        self.num_classes = num_classes
        self.transform = transform
        self.decode_size = decode_size
        self.max_consecutive_bad = max_consecutive_bad
        self.bad_images = 0
        self._bad_in_a_row = 0
        self.collate: Callable[[list[dict[str, Any]]], Any] | None = None  # None: default

    def __len__(self) -> int:
        return len(self.paths)

    def encode(self, target: Any) -> torch.Tensor:
        """The label tensor: long scalar (multiclass) or float multi-hot (multilabel)."""
        if self.task == "multiclass":
            return torch.tensor(int(target), dtype=torch.long)
        label = torch.zeros(self.num_classes, dtype=torch.float32)
        if len(target):
            label[torch.as_tensor(np.asarray(target, dtype=np.int64))] = 1.0
        return label

    def _source(self, i: int) -> str | io.BytesIO:
        if self.reader is None:
            return str(self.paths[i])
        return io.BytesIO(
            self.reader.read(self.shards[i], int(self.offsets[i]), int(self.sizes[i]))
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                decoded = self._decode(i)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self.bad_images += 1
                self._bad_in_a_row += 1
                message = f"skipping unreadable image of object {self.object_ids[i]} ({self.paths[i]}): {exc}"
                log.warning(message, extra={"object_id": int(self.object_ids[i])})
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                if self._bad_in_a_row >= self.max_consecutive_bad:
                    raise BadImageError(
                        f"{self._bad_in_a_row} unreadable images in a row (last: {self.paths[i]}); "
                        "check the image store or re-run `python -m met_vision.prepare`"
                    ) from exc
                continue
            self._bad_in_a_row = 0
            return self._sample(i, decoded)
        raise BadImageError("no readable image in the dataset")

    def _decode(self, i: int) -> Any:
        return open_rgb(self._source(i), min_size=self.decode_size)

    def _sample(self, i: int, decoded: Any) -> dict[str, Any]:
        return {
            "image": self.transform(decoded),
            "label": self.encode(self.targets[i]),
            "object_id": torch.tensor(self.object_ids[i], dtype=torch.long),
        }
