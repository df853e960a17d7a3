"""The one inference path of predict, explain, audit and embed: :class:`Predictor`.

``Predictor.from_checkpoint(path, device="auto")`` rebuilds the network of a
:class:`~met_vision.trainers.classification.ClassificationTask` checkpoint (read with
``torch.load(weights_only=True)``: no pickled objects run) as a
:class:`~met_vision.inference.network.TrainedNetwork`, without importing Lightning, with its
label manifest, a stable model id, the exact preprocessing it was trained with and its tuned
thresholds. Every batch goes through a DataLoader (workers decode and transform to uint8) and is
normalised on the model's device before the forward pass.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from met_vision.data.labels import LabelSpace
from met_vision.data.transforms import DataConfig, build_transform, resolve_data_config
from met_vision.inference.inputs import (
    ImageInput,
    ImageInputs,
    InputError,
    expand_images,
    image_loader,
    parse_object_ids,
)
from met_vision.inference.network import TrainedNetwork

__all__ = ["InputError", "LoadedModel", "Predictor", "load_model"]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} asked for, but no CUDA device is visible")
    return resolved


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint as plain data (``weights_only=True``: tensors, dicts, numbers)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, refused globals, damaged zip
        raise InputError(f"cannot load {str(path)!r} as a met_vision checkpoint: {exc}") from exc
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        raise InputError(f"{str(path)!r} is not a met_vision ClassificationTask checkpoint")
    return raw


class Predictor:
    """A trained model ready for inference, and what is needed to describe its outputs.

    Build one with :meth:`from_checkpoint`; :meth:`predict` takes PIL images, image files,
    folders, or object ids with ``data_dir``.
    """

    def __init__(
        self,
        task: TrainedNetwork,
        ckpt_path: Path,
        *,
        datamodule_hparams: dict[str, Any] | None = None,
        model_id: str = "",
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        self.task = task
        self.ckpt_path = Path(ckpt_path)
        self.datamodule_hparams = dict(datamodule_hparams or {})
        self.model_id = model_id
        self.batch_size = batch_size
        self.num_workers = num_workers
        manifest = task.label_manifest
        self.label_space: LabelSpace | None = (
            LabelSpace.from_manifest(manifest) if manifest else None
        )
        self.names: list[str] = list(task.label_names)
        self.task_type: str = str(task.task)
        self.manifest_hash = self.label_space.definition_hash if self.label_space else ""
        stored = task.hparams.get("data_config")
        if stored:
            self.data_config = DataConfig.from_dict(stored)
        else:  # a checkpoint from before data configs were stored
            hp = self.datamodule_hparams
            name = hp.get("model_name") or str(task.hparams["backbone"])
            self.data_config = resolve_data_config(name, hp.get("image_size"))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        *,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> Predictor:
        """Load a ``ClassificationTask`` checkpoint for inference on ``device`` (without
        Lightning: see :class:`~met_vision.inference.network.TrainedNetwork`).

        The model id is ``<backbone>-<first 12 hex of the checkpoint's sha256>``: the same file
        always gets the same id, a retrained model a new one.

        Raises:
            InputError: when the file is missing or is not a ClassificationTask checkpoint.
        """
        ckpt = Path(path)
        if not ckpt.is_file():
            raise InputError(f"checkpoint {str(ckpt)!r} does not exist")
        target = resolve_device(device)
        raw = read_checkpoint(ckpt)
        try:
            task = TrainedNetwork.from_checkpoint(raw)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot rebuild the model of {str(ckpt)!r}: {exc}") from exc
        task.to(target)
        hparams = task.hparams
        return cls(
            task,
            ckpt,
            datamodule_hparams=dict(raw.get("datamodule_hyper_parameters") or {}),
            model_id=f"{hparams['backbone']}-{file_sha256(ckpt)[:12]}",
            batch_size=batch_size,
            num_workers=num_workers,
        )

    # ----------------------------------------------------------------- description
    @property
    def label_names(self) -> list[str]:
        """Label names, indexed like the model's outputs."""
        return self.names

    @property
    def network(self) -> torch.nn.Module:
        """The timm backbone (returns logits)."""
        return self.task.model

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.task.parameters()).device

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The evaluation transform of the checkpoint's data config (resize, centre crop)."""
        return build_transform(self.data_config, train=False)

    def thresholds(self) -> np.ndarray:
        """Decision threshold per label: multilabel, the F1 thresholds tuned per class on
        validation (the global one for classes without validation positives); multiclass 0.5
        (the argmax decides)."""
        n = len(self.names)
        per_class = self.task.thr_f1_class
        if self.task_type != "multilabel" or per_class.numel() != n:
            return np.full(n, 0.5)
        return per_class.detach().cpu().numpy().astype(np.float64)

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """Boolean predictions: argmax (multiclass) or scores at/above the thresholds."""
        if self.task_type == "multiclass":
            out = np.zeros_like(probs, dtype=bool)
            if len(probs):
                out[np.arange(len(probs)), np.nanargmax(probs, axis=1)] = True
            return out
        return probs >= self.thresholds()[None, :]

    # ----------------------------------------------------------------- batches
    def batches(
        self, items: Sequence[ImageInput], batch_size: int | None = None
    ) -> Iterator[tuple[list[int], torch.Tensor, list[str]]]:
        """``(positions, images on the model's device, errors)`` per batch of ``items``;
        unreadable items are left out and reported as ``"<position>: <error>"``."""
        config = self.data_config
        dataset = ImageInputs(items, self.transform(), config.input_size)
        pin = self.device.type == "cuda"
        loader = image_loader(dataset, batch_size or self.batch_size, self.num_workers, pin)
        for batch in loader:
            ok = batch["ok"].bool()
            positions = [int(p) for p in batch["position"][ok]]
            errors = [
                f"{int(p)}: {e}"
                for p, e, good in zip(batch["position"], batch["error"], ok, strict=True)
                if not good
            ]
            for error in errors:
                warnings.warn(error.split(": ", 1)[1], RuntimeWarning, stacklevel=2)
            images = batch["image"][ok].to(self.device, non_blocking=pin)
            yield positions, self.task.normalize(images), errors

    @torch.inference_mode()
    def probs_of(self, images: torch.Tensor) -> np.ndarray:
        """Softmax / sigmoid scores ``(N, C)`` of a batch already on the device."""
        return self.task.probs(self.task.inference_logits(images)).cpu().numpy()  # type: ignore[no-any-return]

    @torch.inference_mode()
    def features_of(self, images: torch.Tensor) -> np.ndarray:
        """Pooled pre-logits features ``(N, D)`` of a batch already on the device."""
        net: Any = self.network
        if self.task.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pooled = net.forward_head(net.forward_features(images), pre_logits=True)
        return pooled.reshape(len(images), -1).float().cpu().numpy()  # type: ignore[no-any-return]

    def scores(
        self, items: Sequence[ImageInput], batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(ok (N,), probs (N, C) with NaN rows for unreadable items, errors)``."""
        probs = np.full((len(items), len(self.names)), np.nan, dtype=np.float32)
        ok = np.zeros(len(items), dtype=bool)
        errors: list[str] = []
        for positions, images, errs in self.batches(items, batch_size):
            errors.extend(errs)
            if positions:
                probs[positions] = self.probs_of(images)
                ok[positions] = True
        return ok, probs, errors

    # ----------------------------------------------------------------- the public call
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput] | int | Sequence[int],
        *,
        data_dir: str | Path | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Labels, scores and decisions of images, one row per image.

        Args:
            images: a PIL image, an image file, a folder (its image files), a list of these;
                or object ids (ints, or a ``"1,2"`` string with ``data_dir``).
            data_dir: the harvester data dir that object ids are looked up in.
            batch_size: images per forward pass (default: the predictor's).

        Returns:
            Columns ``object_id`` (NA for files and PIL images), ``image``, ``label`` and
            ``score`` (the top label), ``labels`` (the decided labels: argmax, or every label at
            or above its tuned threshold), ``scores`` (label -> score) and ``error`` (empty, or
            why the image could not be read; its scores are then missing).
        """
        object_ids: list[int | None]
        if data_dir is not None and not isinstance(images, Image.Image | Path):
            from met_vision.inference.mirror import mirror_images

            wanted = parse_object_ids(images if isinstance(images, str) else _as_list(images))
            frame = mirror_images(self, data_dir, object_ids=wanted)
            items: list[ImageInput] = list(frame["path"])
            object_ids = [int(i) for i in frame["object_id"]]
        else:
            items = expand_images(images)  # type: ignore[arg-type]
            object_ids = [None] * len(items)
        ok, probs, errors = self.scores(items, batch_size)
        return self._table(items, object_ids, ok, probs, errors)

    def _table(
        self,
        items: Sequence[ImageInput],
        object_ids: Sequence[int | None],
        ok: np.ndarray,
        probs: np.ndarray,
        errors: Sequence[str],
    ) -> pd.DataFrame:
        chosen = self.decisions(np.nan_to_num(probs, nan=-1.0))
        why = {int(e.split(": ", 1)[0]): e.split(": ", 1)[1] for e in errors}
        rows: list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            name = f"<PIL image {i}>" if isinstance(item, Image.Image) else str(item)
            if not ok[i]:
                rows.append((object_ids[i], name, None, np.nan, [], {}, why.get(i, "unreadable")))
                continue
            top = int(np.argmax(probs[i]))
            labels = [self.names[c] for c in np.flatnonzero(chosen[i])]
            scores = {n: float(s) for n, s in zip(self.names, probs[i], strict=True)}
            rows.append(
                (object_ids[i], name, self.names[top], float(probs[i, top]), labels, scores, "")
            )
        columns = ["object_id", "image", "label", "score", "labels", "scores", "error"]
        table = pd.DataFrame(rows, columns=columns)
        table["object_id"] = table["object_id"].astype("Int64")
        return table


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, int | str) else list(value)


# The names explain, audit and embed use (one path: everything below calls Predictor).
LoadedModel = Predictor


def load_model(
    ckpt: str | Path, device: str = "cpu", *, num_workers: int = 0, batch_size: int = 64
) -> Predictor:
    """``Predictor.from_checkpoint`` (for the commands)."""
    return Predictor.from_checkpoint(ckpt, device, num_workers=num_workers, batch_size=batch_size)


def iter_batches(
    paths: Sequence[str], loaded: Predictor, batch_size: int = 64
) -> Iterator[tuple[list[int], torch.Tensor, list[str]]]:
    """:meth:`Predictor.batches` over image files."""
    return loaded.batches(paths, batch_size)


def forward_probs(loaded: Predictor, images: torch.Tensor) -> np.ndarray:
    """Softmax / sigmoid scores ``(N, C)`` of a batch."""
    return loaded.probs_of(images.to(loaded.device))


def predict_paths(
    loaded: Predictor, paths: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scores of image files: ``(ok_mask (N,), probs (N, C) with NaN rows for failures, errors)``."""
    return loaded.scores(paths, batch_size)


def decisions(loaded: Predictor, probs: np.ndarray) -> np.ndarray:
    """:meth:`Predictor.decisions`."""
    return loaded.decisions(probs)


def denormalize(images: torch.Tensor, config: DataConfig) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` tensors back to RGB floats ``(N, H, W, 3)`` in 0..1."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (images.detach().float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def targets_matrix(target_names: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """Multi-hot ``(n, C)`` ground truth in the model's label order."""
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(target_names), len(names)), dtype=bool)
    for row, labels in enumerate(target_names):
        for label in labels:
            if label in index:
                out[row, index[label]] = True
    return out
