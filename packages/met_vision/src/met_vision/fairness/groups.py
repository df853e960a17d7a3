"""Gender groups of objects, for the bias audit and for group-balanced training.

Two groupings are read from the mirror (read-only):

- ``depicted``: from tags. A configurable vocabulary maps tag terms to groups; the default maps
  ``Women``/``Girls`` to ``female`` and ``Men``/``Boys`` to ``male``. An object may be in both
  groups (a tag of each) or in neither.
- ``artist``: from ``objects.artist_gender`` and the constituents' ``gender``. The Met records
  ``Female`` or nothing, so the groups are ``female`` and ``unspecified`` (not "male").

Mitigation helpers turn a membership matrix into per-object sampling or loss weights that make
every (group, label) cell weigh the same, so that no label is more frequent in one group than
in another in the weighted training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

DEFAULT_GENDER_VOCAB: dict[str, str] = {
    "Women": "female",
    "Girls": "female",
    "Men": "male",
    "Boys": "male",
}
ARTIST_GROUPS: tuple[str, str] = ("female", "unspecified")
GroupBalance = Literal["none", "sampler", "reweight"]
GROUP_BALANCE_MODES: tuple[str, ...] = ("none", "sampler", "reweight")


def parse_gender_vocab(text: str | Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """Reads a vocabulary like ``"Women=female,Girls=female,Men=male,Boys=male"``.

    A bare term (``"Women"``) is its own group. ``None`` gives :data:`DEFAULT_GENDER_VOCAB`.

    Raises:
        ValueError: on an empty vocabulary or an empty term.
    """
    if text is None:
        return dict(DEFAULT_GENDER_VOCAB)
    if isinstance(text, Mapping):
        vocab = {str(k).strip(): str(v).strip() for k, v in text.items()}
    else:
        items = text.split(",") if isinstance(text, str) else list(text)
        vocab = {}
        for item in items:
            term, _, group = str(item).partition("=")
            term, group = term.strip(), (group.strip() or term.strip())
            if not term:
                raise ValueError(f"empty term in gender vocabulary {text!r}")
            vocab[term] = group
    if not vocab:
        raise ValueError("the gender vocabulary is empty; give terms like 'Women=female,Men=male'")
    return vocab


def group_names(vocab: Mapping[str, str]) -> list[str]:
    """The distinct groups of a vocabulary, sorted."""
    return sorted(set(vocab.values()))


def depicted_membership(
    tags: Iterable[Sequence[str]], vocab: Mapping[str, str]
) -> tuple[NDArray[np.bool_], list[str]]:
    """``(n, G)`` membership from each object's tags, and the group names."""
    names = group_names(vocab)
    index = {name: i for i, name in enumerate(names)}
    rows = []
    for terms in tags:
        row = np.zeros(len(names), dtype=bool)
        for term in terms:
            group = vocab.get(term)
            if group is not None:
                row[index[group]] = True
        rows.append(row)
    matrix = np.array(rows, dtype=bool).reshape(len(rows), len(names))
    return matrix, names


def artist_membership(
    artist_gender: Iterable[str], constituent_genders: Iterable[Sequence[str]]
) -> tuple[NDArray[np.bool_], list[str]]:
    """``(n, 2)`` membership ``female`` / ``unspecified`` from the artist and constituents."""
    rows = []
    for own, others in zip(artist_gender, constituent_genders, strict=True):
        values = [str(own or "")] + [str(g or "") for g in others]
        female = any("female" in v.lower() for v in values)
        rows.append((female, not female))
    return np.array(rows, dtype=bool).reshape(len(rows), 2), list(ARTIST_GROUPS)


def membership_from_records(
    records: pd.DataFrame, grouping: Literal["depicted", "artist"], vocab: Mapping[str, str]
) -> tuple[NDArray[np.bool_], list[str]]:
    """Membership for rows of :func:`met_vision.data.mirror.load_records` (``tags``, gender columns)."""
    if grouping == "depicted":
        return depicted_membership(records["tags"], vocab)
    if grouping == "artist":
        genders = (
            records["constituent_genders"]
            if "constituent_genders" in records
            else [[]] * len(records)
        )
        return artist_membership(records["artist_gender"].fillna(""), genders)
    raise ValueError(f"grouping must be 'depicted' or 'artist', got {grouping!r}")


def cell_balance_weights(
    membership: NDArray[np.bool_],
    labels: NDArray[np.generic],
    *,
    max_weight: float = 10.0,
    iterations: int = 50,
) -> NDArray[np.float64]:
    """Per-object weights that give every group the same mass of each label.

    Iterative proportional fitting (raking): for each label o, the objects of each group g
    that carry o are rescaled so that every group present for o holds the mean mass
    ``mean_g' m(g', o)``; this is repeated until the masses agree, which also handles objects
    in several groups or with several labels. Afterwards group/label co-occurrence carries no
    signal in the weighted data. Objects in no group, or with no label, keep weight 1; weights
    are clipped to ``[1/max_weight, max_weight]`` and rescaled to mean 1. For disjoint cells
    this is one step: ``w(g, o) = mean_g' c(g', o) / c(g, o)``.

    Args:
        membership: ``(n, G)`` group membership.
        labels: ``(n, C)`` multi-hot labels, or ``(n,)`` class indices.
        max_weight: clip for rare cells.
        iterations: raking sweeps over the labels.
    """
    groups = np.asarray(membership, dtype=bool)
    y = np.asarray(labels)
    if y.ndim == 1:
        hot = np.zeros((len(y), int(y.max()) + 1 if len(y) else 0), dtype=bool)
        hot[np.arange(len(y)), y.astype(int)] = True
        y = hot
    y = y.astype(bool)
    weights = np.ones(len(groups))
    for _ in range(iterations):
        largest_change = 0.0
        for c in range(y.shape[1]):
            cells = groups & y[:, c : c + 1]  # (n, G): objects of group g with label c
            mass = weights @ cells
            present = np.flatnonzero(mass > 0)
            if len(present) < 2:
                continue
            target = mass[present].mean()
            for g in present:
                factor = target / mass[g]
                weights[cells[:, g]] *= factor
                largest_change = max(largest_change, abs(factor - 1.0))
        if largest_change < 1e-9:
            break
    weights = np.clip(weights, 1.0 / max_weight, max_weight)
    return weights / weights.mean() if len(weights) else weights


def group_balance_weights(
    records: pd.DataFrame,
    labels: NDArray[np.generic],
    *,
    vocab: Mapping[str, str] | None = None,
    grouping: Literal["depicted", "artist"] = "depicted",
    exclude_group_labels: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> NDArray[np.float64]:
    """Weights for training rows of the mirror, balancing gender groups per label.

    The gender tags themselves (``exclude_group_labels``, default: the vocabulary's terms) are
    not balanced against their own groups: they define the groups.
    """
    vocab = dict(vocab or DEFAULT_GENDER_VOCAB)
    membership, _ = membership_from_records(records, grouping, vocab)
    y = np.asarray(labels)
    if y.ndim == 2 and label_names is not None:
        skip = set(exclude_group_labels if exclude_group_labels is not None else vocab)
        keep = np.array([name not in skip for name in label_names], dtype=bool)
        y = y[:, keep]
    return cell_balance_weights(membership, y)


# --- image attributes -------------------------------------------------------------------------

WARM_THRESHOLD = 0.2
IMAGE_ATTRIBUTES: tuple[str, ...] = ("warm",)


def image_stats(path: str, border: float = 0.1, side: int = 64) -> dict[str, float]:
    """Colour statistics of an image, robust to objects in the middle.

    ``warmth`` is the median of (R - B) / 255 over the outer frame (``border`` of each side),
    where backgrounds show; ``brightness`` the mean luminance / 255 of the whole image.
    """
    from PIL import Image

    from met_vision.data.images import open_rgb

    with open_rgb(path, min_size=side) as image:
        small = image.resize((side, side), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    edge = max(1, round(side * border))
    frame = np.ones((side, side), dtype=bool)
    frame[edge:-edge, edge:-edge] = False
    warmth = float(np.median(rgb[..., 0][frame] - rgb[..., 2][frame]))
    brightness = float((rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
    return {"warmth": warmth, "brightness": brightness}


def warm_membership(
    warmth: Sequence[float] | NDArray[np.floating], threshold: float = WARM_THRESHOLD
) -> tuple[NDArray[np.bool_], list[str]]:
    """``(n, 2)`` membership ``warm`` / ``not warm`` from border warmth values."""
    warm = np.asarray(warmth, dtype=float) > threshold
    return np.stack([warm, ~warm], axis=1), ["warm background", "other background"]


def training_weights(
    records: pd.DataFrame,
    labels: NDArray[np.generic],
    *,
    grouping: Literal["depicted", "artist"] = "depicted",
    attribute: str | None = None,
    vocab: Mapping[str, str] | None = None,
    label_names: Sequence[str] | None = None,
    warm_threshold: float = WARM_THRESHOLD,
) -> NDArray[np.float64]:
    """Per-object weights for group-balanced training (sampling or loss weights).

    Without ``attribute`` every (gender group, label) cell is equalised within each label (see
    :func:`group_balance_weights`). With ``attribute="warm"`` every (gender tag, background
    warmth) cell is equalised within each gender tag (for ``depicted``: each vocabulary term,
    e.g. ``Women``; objects with none form their own cell), so the image attribute carries no
    information about the gender labels in the weighted data.
    ``records`` needs ``tags``/gender columns and, for the attribute, ``path`` (an image file).
    """
    vocab = dict(vocab or DEFAULT_GENDER_VOCAB)
    if attribute is None:
        return group_balance_weights(
            records, labels, vocab=vocab, grouping=grouping, label_names=label_names
        )
    if attribute != "warm":
        raise ValueError(f"unknown image attribute {attribute!r}; choose one of {IMAGE_ATTRIBUTES}")
    if grouping == "depicted":  # one cell per gender tag: a bias can sit on one term only
        membership, _ = depicted_membership(records["tags"], {term: term for term in vocab})
    else:
        membership, _ = membership_from_records(records, grouping, vocab)
    gender_cells = np.concatenate([membership, ~membership.any(axis=1, keepdims=True)], axis=1)
    warmth = [image_stats(str(p))["warmth"] for p in records["path"]]
    attribute_bins, _ = warm_membership(warmth, warm_threshold)
    return cell_balance_weights(attribute_bins, gender_cells)


def datamodule_train_weights(dm: Any) -> NDArray[np.float64]:
    """Group-balance weights of a set-up ``MetDataModule``'s training rows (in dataset order).

    Reads ``group_balance_by``, ``group_balance_attribute`` and ``gender_vocab`` from the data
    module's hyperparameters; the gender columns come read-only from the mirror.
    """
    from met_vision.data.mirror import load_records_as_trained

    hp = dm.hparams
    frame = dm.frame
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    records = load_records_as_trained(dm.data_dir, hp, check_blobs=False)
    meta = records[["object_id", "tags", "artist_gender", "constituent_genders"]]
    merged = train.merge(meta, on="object_id", how="left", validate="one_to_one")
    merged["tags"] = [t if isinstance(t, list) else [] for t in merged["tags"]]
    merged["artist_gender"] = merged["artist_gender"].fillna("")
    merged["constituent_genders"] = [
        g if isinstance(g, list) else [] for g in merged["constituent_genders"]
    ]
    names = list(dm.label_names)
    if dm.task == "multiclass":
        labels: NDArray[np.generic] = np.asarray(merged["target"], dtype=np.int64)
    else:
        labels = np.zeros((len(merged), len(names)), dtype=bool)
        for row, target in enumerate(merged["target"]):
            labels[row, np.asarray(target, dtype=np.int64)] = True
    return training_weights(
        merged,
        labels,
        grouping=hp.get("group_balance_by", "depicted"),
        attribute=hp.get("group_balance_attribute"),
        vocab=parse_gender_vocab(hp.get("gender_vocab")),
        label_names=names,
    )
