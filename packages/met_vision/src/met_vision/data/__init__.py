"""Data: mirror access, label spaces, splits, datasets, the DataModule, samplers, transforms."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BadImageError": "datasets",
    "MetImageDataset": "datasets",
    "MetDataModule": "datamodule",
}


def __getattr__(name: str) -> Any:
    """`from met_vision.data import MetDataModule` without importing the DataModule eagerly."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"met_vision.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'met_vision.data' has no attribute {name!r}")
