"""Data: mirror access, label spaces, splits, datasets, the DataModule, samplers, transforms."""

from __future__ import annotations

from typing import Any

_DATAMODULE_NAMES = ("BadImageError", "MetDataModule", "MetImageDataset")


def __getattr__(name: str) -> Any:
    """`from met_vision.data import MetDataModule` without importing the DataModule eagerly."""
    if name in _DATAMODULE_NAMES:
        from met_vision.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'met_vision.data' has no attribute {name!r}")
