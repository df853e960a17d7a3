"""The preprocessing half of ``ClassificationTask``: the exact data config a model is trained
with, uint8 batches normalised on their device, and both (with the label manifest) carried in
every checkpoint.

``PreprocessingHooks`` is the LightningModule base of ``ClassificationTask``; it reads the
task's ``hparams`` (``data_config``) and its ``model`` and owns ``_input_norm``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn

from met_vision.data.transforms import normalize_images
from met_vision.trainers.backbones import data_config


class PreprocessingHooks(pl.LightningModule):
    """Data config, input normalisation and their checkpoint round trip (see the module)."""

    model: nn.Module
    _channels_last: bool
    _input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None

    @property
    def data_config(self) -> dict[str, Any]:
        """The preprocessing the model was trained with (timm form: ``input_size`` (3, H, W),
        ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``); before training,
        the backbone's pretrained defaults."""
        stored = self.hparams.get("data_config")
        return dict(stored) if stored else data_config(self.model)

    @property
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) applied to uint8 images: the data module's, else the checkpoint's,
        else the backbone's timm config."""
        if self._input_norm is None:
            config = self.data_config
            self._input_norm = (tuple(config["mean"]), tuple(config["std"]))
        return self._input_norm

    def take_data_config(self, datamodule: Any) -> None:
        """Adopt the data module's data config (kept in ``hparams`` unless one is stored) and
        its normalisation."""
        config: Any = getattr(datamodule, "data_config", None)
        if self.hparams.get("data_config") is None and hasattr(config, "to_dict"):
            self.hparams["data_config"] = config.to_dict()
        if config is not None and hasattr(config, "mean"):
            self._input_norm = (tuple(config.mean), tuple(config.std))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the batch's device: uint8 images -> normalised float32 (channels-last when the
        model is). Float images pass unchanged. Needs no trainer (inference calls it too)."""
        if isinstance(batch, dict) and "jpeg" in batch:  # met_vision.data.device_decode
            from met_vision.data.device_decode import decode_batch

            batch = dict(batch)
            batch["image"] = decode_batch(batch.pop("jpeg"), batch.pop("crop"), self.device)
        if isinstance(batch, dict) and isinstance(batch.get("image"), Tensor):
            mean, std = self.input_normalization
            image = normalize_images(batch["image"], mean, std, channels_last=self._channels_last)
            batch = {**batch, "image": image}
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the manifest and make the checkpoint loadable offline (no hub, no weights file)."""
        hp = checkpoint.setdefault("hyper_parameters", {})
        hp["pretrained"] = False
        hp["pretrained_path"] = None
        hp["labels"] = self.hparams.get("labels")
        hp["data_config"] = self.hparams.get("data_config")
        checkpoint["label_manifest"] = self.hparams.get("labels")
        mean, std = self.input_normalization
        checkpoint["input_normalization"] = {"mean": list(mean), "std": list(std)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the input normalisation the model was trained with."""
        norm = checkpoint.get("input_normalization")
        if norm:
            self._input_norm = (tuple(norm["mean"]), tuple(norm["std"]))
