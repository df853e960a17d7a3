"""Shared plumbing of explain / audit / predict / embed: a trained model and the data it saw.

``load_model`` rebuilds a :class:`~met_vision.trainers.classification.ClassificationTask` from a checkpoint (no data
module needed) with its label manifest, a stable model id and the evaluation transform.
``mirror_frame`` lists the mirror's labelled objects the way training saw them (same label space,
split options and prepared cache), joined with the metadata the audit needs (tags, genders).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from met_vision.data.labels import LabelSpace
from met_vision.data.transforms import DataConfig, build_transform, resolve_data_config
from met_vision.prepare import open_rgb

log = logging.getLogger("met_vision.inference.predictor")


class InputError(ValueError):
    """Bad user input (a missing checkpoint, an unknown object id or label); one-line message."""


@dataclass
class LoadedModel:
    """A model ready for inference and what is needed to describe its outputs."""

    task: Any  # ClassificationTask (imported lazily: Lightning is slow to import)
    names: list[str]
    task_type: str
    model_id: str
    manifest_hash: str
    data_config: DataConfig
    ckpt_path: Path
    label_space: LabelSpace | None = None
    datamodule_hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def network(self) -> torch.nn.Module:
        """The timm backbone (returns logits)."""
        return self.task.model

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Evaluation transform: resize, centre crop, normalise."""
        return build_transform(self.data_config, train=False, normalize=True)

    def thresholds(self) -> np.ndarray:
        """Per-label decision thresholds (multilabel: tuned F1 thresholds; else 0.5)."""
        n = len(self.names)
        if self.task_type != "multilabel":
            return np.full(n, 0.5)
        thr = getattr(self.task, "thr_f1", None)
        value = float(thr) if thr is not None else 0.5
        return np.full(n, value)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(ckpt: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a ClassificationTask checkpoint for inference.

    The model id is ``<backbone>-<first 12 hex of the checkpoint's sha256>``: the same file
    always gets the same id, a retrained model a new one.

    Raises:
        InputError: when the file is missing or is not a ClassificationTask checkpoint.
    """
    path = Path(ckpt)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist")
    from met_vision.trainers.classification import ClassificationTask

    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
        task = ClassificationTask.load_from_checkpoint(path, map_location=device)
    except Exception as exc:  # unpickling / state-dict errors
        raise InputError(f"cannot load {str(path)!r} as a met_vision checkpoint: {exc}") from exc
    task.eval()
    manifest = task.label_manifest
    space = LabelSpace.from_manifest(manifest) if manifest else None
    names = task.label_names
    dm_hparams = dict(raw.get("datamodule_hyper_parameters") or {})
    backbone = str(task.hparams["backbone"])
    image_size = dm_hparams.get("image_size")
    data_config = resolve_data_config(dm_hparams.get("model_name") or backbone, image_size)
    return LoadedModel(
        task=task,
        names=names,
        task_type=task.task,
        model_id=f"{backbone}-{file_sha256(path)[:12]}",
        manifest_hash=space.definition_hash if space is not None else "",
        data_config=data_config,
        ckpt_path=path,
        label_space=space,
        datamodule_hparams=dm_hparams,
    )


def load_tensor(
    path: str | Path, transform: Callable[[Image.Image], torch.Tensor], size: int
) -> torch.Tensor:
    """Decode one image file to a normalised tensor."""
    return transform(open_rgb(path, min_size=size))


def denormalize(images: torch.Tensor, config: DataConfig) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` tensors back to RGB floats ``(N, H, W, 3)`` in 0..1."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (images.detach().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def iter_batches(
    paths: Sequence[str], loaded: LoadedModel, batch_size: int = 64
) -> Iterator[tuple[list[int], torch.Tensor, list[str]]]:
    """Yields (positions, normalised batch, errors) over image files; unreadable ones are skipped
    with a warning and reported as ``"<position>: <error>"``."""
    transform = loaded.transform()
    size = loaded.data_config.input_size
    for start in range(0, len(paths), batch_size):
        positions, tensors, errors = [], [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                tensors.append(load_tensor(paths[i], transform, size))
                positions.append(i)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                message = f"cannot read image {paths[i]}: {exc}"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                errors.append(f"{i}: {message}")
        batch = torch.stack(tensors) if tensors else torch.zeros(0, 3, size, size)
        yield positions, batch, errors


@torch.no_grad()
def forward_probs(loaded: LoadedModel, images: torch.Tensor) -> np.ndarray:
    """Softmax / sigmoid scores ``(N, C)`` of a batch."""
    task = loaded.task
    logits = task(images.to(task.device))
    return task.predict_probs(logits).cpu().numpy()


def predict_paths(
    loaded: LoadedModel, paths: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scores of image files: ``(ok_mask (N,), probs (N, C) with NaN rows for failures, errors)``."""
    probs = np.full((len(paths), len(loaded.names)), np.nan, dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    for positions, batch, errs in iter_batches(paths, loaded, batch_size):
        errors.extend(errs)
        if positions:
            probs[positions] = forward_probs(loaded, batch)
            ok[positions] = True
    return ok, probs, errors


def datamodule_for(loaded: LoadedModel, data_dir: str | Path) -> Any:
    """A MetDataModule with the checkpoint's data options (label space, split, image size),
    reading ``data_dir`` (which replaces the training machine's path)."""
    from met_vision.data.datamodule import MetDataModule

    hp = dict(loaded.datamodule_hparams)
    if not hp and loaded.label_space is not None:
        cfg = loaded.label_space.config
        hp = {
            "task": cfg.task,
            "label_column": cfg.column,
            "tag_group": cfg.tag_group,
            "top_k": cfg.top_k,
            "min_count": cfg.min_count,
            "other": cfg.other,
            "include": cfg.include,
            "exclude": cfg.exclude,
            "model_name": str(loaded.task.hparams["backbone"]),
        }
    known = set(MetDataModule.__init__.__code__.co_varnames)
    hp = {k: v for k, v in hp.items() if k in known}
    hp.update(data_dir=str(data_dir), num_workers=0, persistent_workers=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return MetDataModule(**hp)


def mirror_frame(loaded: LoadedModel, data_dir: str | Path) -> pd.DataFrame:
    """Labelled objects of the mirror as training saw them, with metadata for groups.

    Columns: object_id, path, split, target_names (list of label names), tags, artist_gender,
    constituent_genders, classification.
    """
    from met_vision.data.mirror import load_records_as_trained

    dm = datamodule_for(loaded, data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frame = dm.frame.copy()
        names = dm.label_names
    if names != loaded.names:
        log.warning("the mirror's label space differs from the checkpoint's; matching by name")

    def to_names(target: Any) -> list[str]:
        if dm.task == "multiclass":
            return [names[int(target)]]
        return [names[int(i)] for i in target]

    frame["target_names"] = [to_names(t) for t in frame["target"]]
    records = load_records_as_trained(data_dir, dm.hparams, check_blobs=False)
    meta = records[["object_id", "tags", "artist_gender", "constituent_genders", "classification"]]
    return frame.drop(columns=["target"]).merge(meta, on="object_id", how="left")


def targets_matrix(target_names: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """Multi-hot ``(n, C)`` ground truth in the model's label order."""
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(target_names), len(names)), dtype=bool)
    for row, labels in enumerate(target_names):
        for label in labels:
            if label in index:
                out[row, index[label]] = True
    return out


def decisions(loaded: LoadedModel, probs: np.ndarray) -> np.ndarray:
    """Boolean predictions: argmax (multiclass) or scores at/above the thresholds (multilabel)."""
    if loaded.task_type == "multiclass":
        out = np.zeros_like(probs, dtype=bool)
        if len(probs):
            out[np.arange(len(probs)), np.nanargmax(probs, axis=1)] = True
        return out
    return probs >= loaded.thresholds()[None, :]
