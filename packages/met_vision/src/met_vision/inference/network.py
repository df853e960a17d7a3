"""A trained classifier for inference, rebuilt from a checkpoint without Lightning.

:class:`TrainedNetwork` holds what inference needs of a
:class:`~met_vision.trainers.classification.ClassificationTask` checkpoint: the timm backbone
(created by :func:`~met_vision.trainers.backbones.create_backbone` from the stored
hyperparameters, then loaded with the stored weights), the tuned thresholds, the input
normalisation and the memory layout. Building it imports torch and timm but neither Lightning
nor torchmetrics, which the training task needs and which take seconds to import: that is the
start-up of every ``predict`` run. The forward pass, the scores and the normalisation are the
task's (same modules, same weights, same order of operations), so the outputs are the same.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from met_vision.data.transforms import normalize_images
from met_vision.trainers.backbones import create_backbone, data_config

log = logging.getLogger(__name__)

TASKS = ("multiclass", "multilabel")
THRESHOLDS = ("thr_f1", "thr_f2", "thr_f1_class", "thr_f2_class")


def fold_batch_norm(model: nn.Module) -> nn.Module | None:
    """An inference copy of ``model`` with every BatchNorm that follows a convolution folded
    into that convolution's weights (``torch.fx``'s ``fuse``: one pass over the activations
    fewer per layer; the same scores up to float rounding), or None when the model cannot be
    traced. The original is left as it is (Grad-CAM hooks its named layers)."""
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    try:
        return fuse(model.eval(), inplace=False)
    except Exception as exc:  # any tracing failure: run the model unfolded
        log.debug(
            "BatchNorm not folded (%s: %s); inference runs the model as it is",
            type(exc).__name__,
            exc,
        )
        return None
    finally:
        model.train(was_training)


def head_size(hparams: dict[str, Any]) -> int:
    """Outputs of the checkpoint's head: ``num_classes``, else the manifest's label count.

    Raises:
        ValueError: for an unknown task or when neither gives a size.
    """
    if hparams.get("task") not in TASKS:
        raise ValueError(f"task must be 'multiclass' or 'multilabel', not {hparams.get('task')!r}")
    size = hparams.get("num_classes") or len((hparams.get("labels") or {}).get("names") or [])
    if not size:
        raise ValueError("num_classes is not set and no label manifest gives it")
    return int(size)


class TrainedNetwork(nn.Module):
    """The network of a ``ClassificationTask`` checkpoint, its thresholds and preprocessing.

    Attributes:
        hparams: the task's hyperparameters as stored in the checkpoint.
        task: ``multiclass`` or ``multilabel``.
        model: the timm backbone (returns logits).
        channels_last: the forward pass runs in NHWC layout.
    """

    thr_f1: Tensor
    thr_f2: Tensor
    thr_f1_class: Tensor
    thr_f2_class: Tensor

    def __init__(self, hparams: dict[str, Any], channels_last: bool) -> None:
        super().__init__()
        self.hparams = dict(hparams)
        self.task = str(hparams["task"])
        size = head_size(self.hparams)
        self.model: nn.Module = create_backbone(
            str(hparams["backbone"]),
            size,
            drop_rate=float(hparams.get("drop_rate") or 0.0),
            global_pool=hparams.get("global_pool"),
        )
        for name in THRESHOLDS:
            shape = (size,) if name.endswith("_class") else ()
            self.register_buffer(name, torch.full(shape, 0.5))
        self.channels_last = channels_last
        self._folded: dict[tuple[str, str], nn.Module | None] = {}  # by device and dtype
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        stored = hparams.get("data_config") or data_config(self.model)
        self.mean: tuple[float, ...] = tuple(stored["mean"])
        self.std: tuple[float, ...] = tuple(stored["std"])

    @classmethod
    def from_checkpoint(cls, raw: dict[str, Any]) -> TrainedNetwork:
        """Rebuild from a checkpoint read as plain data; CPU weights, eval mode.

        The layout is the checkpoint's ``channels_last`` where it set one, else NHWC (faster
        convolutions on GPUs and on CPUs alike, through oneDNN; same results up to rounding).

        Raises:
            ValueError, RuntimeError: when the hyperparameters do not describe a model, or when
                the weights do not fit it (missing, unexpected or differently shaped keys).
        """
        hparams = dict(raw["hyper_parameters"])
        layout = hparams.get("channels_last")
        network = cls(hparams, channels_last=True if layout is None else bool(layout))
        state = raw["state_dict"]
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        network.model.load_state_dict(weights)  # strict: every key, every shape
        for name in THRESHOLDS:
            if name in state:
                getattr(network, name).copy_(state[name])
        norm = raw.get("input_normalization")
        if norm:
            network.mean, network.std = tuple(norm["mean"]), tuple(norm["std"])
        return network.eval()

    @property
    def label_names(self) -> list[str]:
        """Class names from the manifest, or ``class_<i>`` when there is none."""
        names = (self.hparams.get("labels") or {}).get("names")
        size = len(self.thr_f1_class)
        if names and len(names) == size:
            return [str(n) for n in names]
        return [f"class_{i}" for i in range(size)]

    @property
    def label_manifest(self) -> dict[str, Any] | None:
        """The label manifest stored with the model."""
        return self.hparams.get("labels")

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images on the model's device -> normalised float32 in the model's layout."""
        return normalize_images(images, self.mean, self.std, channels_last=self.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, C]`` of normalised images ``[B, 3, H, W]``."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)  # type: ignore[no-any-return]

    def inference_logits(self, images: Tensor) -> Tensor:
        """Logits like :meth:`forward`, for inference without gradients: through a copy of the
        network with BatchNorm folded into the convolutions (:func:`fold_batch_norm`, made once
        per device and dtype), or the network itself where it cannot be folded or gradients
        are wanted."""
        if torch.is_grad_enabled() or self.training:
            return self(images)
        weight = next(self.model.parameters())
        key = (str(weight.device), str(weight.dtype))
        if key not in self._folded:
            folded = fold_batch_norm(self.model)
            if folded is not None and self.channels_last:
                folded.to(memory_format=torch.channels_last)
            self._folded[key] = folded
        folded = self._folded[key]
        if folded is None:
            return self(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return folded(images)  # type: ignore[no-any-return]

    def probs(self, logits: Tensor) -> Tensor:
        """Softmax (multiclass) or sigmoid (multilabel) scores."""
        logits = logits.float()
        return logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()
