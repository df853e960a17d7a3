"""met_vision: train, explain and audit image classifiers on a met_harvester mirror.

The public API::

    from met_vision import MetDataModule, ClassificationTask, Predictor, LabelSpace

- :class:`MetDataModule`: labelled images of a mirror for Lightning (label space, splits,
  prepared cache, samplers, transforms).
- :class:`ClassificationTask`: the LightningModule (any timm backbone, multiclass or
  multilabel); its checkpoints carry the label manifest, the data config and tuned thresholds.
- :class:`Predictor`: ``Predictor.from_checkpoint(path, device="auto").predict(images)`` for PIL
  images, files, folders or object ids of a mirror.
- :class:`LabelSpace` / :class:`LabelSpaceConfig`: which labels a model predicts.
- :class:`DataConfig`: input size, mean, std, interpolation and crop of a model.

Names are imported on first use, so ``import met_vision`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MetDataModule": "met_vision.data.datamodule",
    "MetImageDataset": "met_vision.data.datasets",
    "LabelSpace": "met_vision.data.labels",
    "LabelSpaceConfig": "met_vision.data.labels",
    "DataConfig": "met_vision.data.transforms",
    "load_records": "met_vision.data.mirror",
    "ClassificationTask": "met_vision.trainers.classification",
    "Predictor": "met_vision.inference.predictor",
    "InputError": "met_vision.inference.inputs",
}
__all__ = [
    "ClassificationTask",
    "DataConfig",
    "InputError",
    "LabelSpace",
    "LabelSpaceConfig",
    "MetDataModule",
    "MetImageDataset",
    "Predictor",
    "__version__",
    "load_records",
]

if TYPE_CHECKING:
    from met_vision.data.datamodule import MetDataModule
    from met_vision.data.datasets import MetImageDataset
    from met_vision.data.labels import LabelSpace, LabelSpaceConfig
    from met_vision.data.mirror import load_records
    from met_vision.data.transforms import DataConfig
    from met_vision.inference.inputs import InputError
    from met_vision.inference.predictor import Predictor
    from met_vision.trainers.classification import ClassificationTask


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'met_vision' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
