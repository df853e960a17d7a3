"""What the bias audit looks at: its options, the model's predictions and the image statistics
of the audited objects, the training split it takes the reference bias from, and the group
membership of every analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from met_vision.fairness import groups
from met_vision.inference.mirror import mirror_frame
from met_vision.inference.predictor import (
    InputError,
    LoadedModel,
    decisions,
    predict_paths,
    targets_matrix,
)


@dataclass(frozen=True)
class AuditOptions:
    """Knobs of the audit (see the command-line help)."""

    split: str = "heldout"
    reference: str = "train"  # where the reference bias comes from: "train" or "audited"
    decisions: str = "rate"  # what counts as predicted: "rate" or "model" (fairness.decisions)
    vocab: tuple[tuple[str, str], ...] = tuple(groups.DEFAULT_GENDER_VOCAB.items())
    ba_threshold: float = 0.02
    min_support: int = 10
    n_boot: int = 1000
    alpha: float = 0.05  # of the two-sided bootstrap interval shown beside each BA
    fdr_q: float = 0.05  # Benjamini-Hochberg false-discovery rate over every pair tested
    reference_max: int = 20000  # training objects sampled for the reference (image statistics)
    warm_threshold: float = groups.WARM_THRESHOLD
    cam_samples: int = 120
    cam_method: str = "gradcam"
    target_layer: str | None = None
    border: float = 0.15
    seed: int = 0


@dataclass
class AuditData:
    """What the model saw and said on the audited objects."""

    frame: pd.DataFrame
    names: list[str]
    truth: np.ndarray  # (n, C) bool
    probs: np.ndarray  # (n, C)
    preds: np.ndarray  # (n, C) bool
    warmth: np.ndarray  # (n,)
    brightness: np.ndarray  # (n,)
    predictive: np.ndarray | None = None  # (C,) labels tested for amplification (skill test)


def _in_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    if split == "heldout":
        frame = frame[frame["split"].isin(["val", "test"])]
    elif split != "all":
        frame = frame[frame["split"] == split]
    return frame.reset_index(drop=True)


def collect(loaded: LoadedModel, data_dir: str | Path, split: str) -> AuditData:
    """Predictions, truth and image statistics of one split (``heldout`` = val + test)."""
    frame = _in_split(mirror_frame(loaded, data_dir), split)
    if frame.empty:
        raise InputError(f"no labelled objects with images in split {split!r} of {data_dir}")
    ok, probs, _errors = predict_paths(loaded, list(frame["path"]))
    frame, probs = frame[ok].reset_index(drop=True), probs[ok]
    stats = [groups.image_stats(str(p)) for p in frame["path"]]
    return AuditData(
        frame=frame,
        names=list(loaded.names),
        truth=targets_matrix(frame["target_names"], loaded.names),
        probs=probs,
        preds=decisions(loaded, probs),
        warmth=np.array([s["warmth"] for s in stats]),
        brightness=np.array([s["brightness"] for s in stats]),
    )


@dataclass
class Reference:
    """The labelled objects the reference bias is counted on (Zhao et al.: the training set)."""

    frame: pd.DataFrame
    truth: np.ndarray  # (n, C) bool
    warmth: np.ndarray  # (n,)


def collect_reference(
    loaded: LoadedModel, data_dir: str | Path, options: AuditOptions
) -> Reference:
    """The training split's truth and image statistics (a seeded sample above reference_max)."""
    frame = _in_split(mirror_frame(loaded, data_dir), "train")
    if frame.empty:
        raise InputError(f"no labelled training objects in {data_dir} for the reference bias")
    if len(frame) > options.reference_max:
        frame = frame.sample(options.reference_max, random_state=options.seed)
        frame = frame.reset_index(drop=True)
    warmth = np.array([groups.image_stats(str(p))["warmth"] for p in frame["path"]])
    return Reference(frame, targets_matrix(frame["target_names"], loaded.names), warmth)


def training_truth(loaded: LoadedModel, data_dir: str | Path) -> np.ndarray:
    """The training split's labels (for the training rates of the audit's decisions)."""
    frame = _in_split(mirror_frame(loaded, data_dir), "train")
    return targets_matrix(frame["target_names"], loaded.names)


def memberships(
    frame: pd.DataFrame, warmth: np.ndarray, vocab: dict[str, str], options: AuditOptions
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Group membership of every analysis for the objects of ``frame``."""
    return {
        "depicted": groups.depicted_membership(frame["tags"], vocab),
        "artist": groups.artist_membership(
            frame["artist_gender"].fillna(""), frame["constituent_genders"]
        ),
        "background": groups.warm_membership(warmth, options.warm_threshold),
    }
