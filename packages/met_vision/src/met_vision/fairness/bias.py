"""Pure metric functions for the gender-label bias audit.

Every function takes plain numpy arrays, so the audit command, the tests and a notebook can use
them alike. Conventions:

- ``labels`` / ``preds``: ``(n, C)`` binary (0/1) arrays, one column per label.
- ``groups``: ``(n, G)`` binary membership; an object may be in several groups or in none.

References:
- Zhao et al. 2017, "Men Also Like Shopping: Reducing Gender Bias Amplification using
  Corpus-level Constraints" (bias score and bias amplification).
- Wang & Russakovsky 2021, "Directional Bias Amplification" (BiasAmp->).
- Fairlearn's ``MetricFrame`` (``by_group``, ``difference``, ``ratio``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def _binary(array: NDArray[np.generic], name: str) -> NDArray[np.bool_]:
    values = np.asarray(array)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, k) array, got shape {values.shape}")
    return values.astype(bool)


def one_hot(indices: NDArray[np.integer], num_classes: int) -> NDArray[np.bool_]:
    """Turns multiclass indices ``(n,)`` into a ``(n, num_classes)`` boolean matrix."""
    out = np.zeros((len(indices), num_classes), dtype=bool)
    out[np.arange(len(indices)), np.asarray(indices, dtype=int)] = True
    return out


def _safe_divide(num: FloatArray, den: FloatArray) -> FloatArray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --- per-group performance (the MetricFrame idea) -------------------------------------------


@dataclass(frozen=True)
class GroupMetrics:
    """Per-group, per-label precision/recall/F1 and the gaps between groups.

    Arrays have shape ``(G, C)``; ``difference`` and ``ratio`` have shape ``(C,)`` and compare
    the best and worst group for each label (NaN groups are ignored).
    """

    precision: FloatArray
    recall: FloatArray
    f1: FloatArray
    support: NDArray[np.int64]  # positives in the ground truth per group and label
    count: NDArray[np.int64]  # objects per group

    def difference(self, metric: str) -> FloatArray:
        """Largest minus smallest value across groups, per label."""
        values = getattr(self, metric)
        with np.errstate(all="ignore"):
            return np.nanmax(values, axis=0) - np.nanmin(values, axis=0)

    def ratio(self, metric: str) -> FloatArray:
        """Smallest over largest value across groups, per label (1 = parity)."""
        values = getattr(self, metric)
        with np.errstate(all="ignore"):
            return _safe_divide(np.nanmin(values, axis=0), np.nanmax(values, axis=0))


def group_metrics(
    labels: NDArray[np.generic], preds: NDArray[np.generic], groups: NDArray[np.generic]
) -> GroupMetrics:
    """Precision, recall and F1 of every label within every group.

    Args:
        labels: ground truth ``(n, C)``.
        preds: predictions ``(n, C)``.
        groups: membership ``(n, G)``.
    """
    y = _binary(labels, "labels")
    p = _binary(preds, "preds")
    g = _binary(groups, "groups").astype(float)
    tp = g.T @ (y & p).astype(float)
    fp = g.T @ (~y & p).astype(float)
    fn = g.T @ (y & ~p).astype(float)
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    return GroupMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        support=(tp + fn).astype(np.int64),
        count=g.sum(axis=0).astype(np.int64),
    )


# --- co-occurrence and bias scores (Zhao et al. 2017) ---------------------------------------


def cooccurrence(labels: NDArray[np.generic], groups: NDArray[np.generic]) -> FloatArray:
    """Counts ``c(g, o)`` of objects in group g carrying label o, shape ``(G, C)``."""
    y = _binary(labels, "labels").astype(float)
    g = _binary(groups, "groups").astype(float)
    return g.T @ y


def conditional_rates(labels: NDArray[np.generic], groups: NDArray[np.generic]) -> FloatArray:
    """``P(label o | group g)``, shape ``(G, C)``."""
    counts = cooccurrence(labels, groups)
    sizes = _binary(groups, "groups").sum(axis=0).astype(float)
    return _safe_divide(counts, sizes[:, None])


def bias_scores(labels: NDArray[np.generic], groups: NDArray[np.generic]) -> FloatArray:
    """Zhao's bias score ``b(o, g) = c(g, o) / sum_g' c(g', o)``, shape ``(G, C)``.

    NaN where label o never occurs with any group.
    """
    counts = cooccurrence(labels, groups)
    return _safe_divide(counts, counts.sum(axis=0, keepdims=True))


@dataclass(frozen=True)
class BiasAmplification:
    """Bias amplification of every (group, label) pair and its mean.

    ``per_pair[g, o] = b_pred(o, g) - b_ref(o, g)`` where the reference is biased toward g
    (``b_ref > 1/G``), NaN elsewhere. ``value`` is Zhao's mean over labels of the summed pairs.
    """

    per_pair: FloatArray
    reference_bias: FloatArray
    predicted_bias: FloatArray
    value: float


def bias_amplification(
    ref_labels: NDArray[np.generic],
    ref_groups: NDArray[np.generic],
    pred_labels: NDArray[np.generic],
    pred_groups: NDArray[np.generic],
) -> BiasAmplification:
    """Bias amplification (Zhao et al. 2017).

    The reference bias comes from ``(ref_labels, ref_groups)`` (the training set in the paper, or
    the ground truth of the evaluated split); the predicted bias from the model's labels on the
    evaluated objects and their groups. Zero when predictions reproduce the reference
    co-occurrence; positive when they exaggerate it.
    """
    ref = bias_scores(ref_labels, ref_groups)
    pred = bias_scores(pred_labels, pred_groups)
    n_groups = ref.shape[0]
    toward = ref > 1.0 / n_groups
    per_pair = np.where(toward & ~np.isnan(pred), pred - ref, np.nan)
    counted = ~np.all(np.isnan(per_pair), axis=0)
    summed = np.nansum(per_pair, axis=0)
    value = float(summed[counted].mean()) if counted.any() else 0.0
    return BiasAmplification(
        per_pair=per_pair, reference_bias=ref, predicted_bias=pred, value=value
    )


# --- directional bias amplification (Wang & Russakovsky 2021) -------------------------------


@dataclass(frozen=True)
class DirectionalBiasAmplification:
    """BiasAmp-> per (attribute, task) pair and its mean.

    ``per_pair[a, t] = y_at * delta_at + (1 - y_at) * (-delta_at)``.
    """

    per_pair: FloatArray
    positively_correlated: NDArray[np.bool_]
    delta: FloatArray
    value: float


def directional_bias_amplification(
    attributes: NDArray[np.generic],
    tasks: NDArray[np.generic],
    predictions: NDArray[np.generic],
    direction: Literal["A->T", "T->A"] = "A->T",
    reference_attributes: NDArray[np.generic] | None = None,
    reference_tasks: NDArray[np.generic] | None = None,
) -> DirectionalBiasAmplification:
    """Directional bias amplification (Wang & Russakovsky 2021).

    Args:
        attributes: ground-truth attributes ``A`` (here gender groups), ``(n, |A|)``.
        tasks: ground-truth tasks ``T`` (labels), ``(n, |T|)``.
        predictions: predicted tasks ``T_hat`` for "A->T", or predicted attributes ``A_hat``
            for "T->A".
        direction: "A->T": ``delta = P(T_hat=1 | A=1) - P(T=1 | A=1)``;
            "T->A": ``delta = P(A_hat=1 | T=1) - P(A=1 | T=1)``.
        reference_attributes: data for ``y_at`` (which pairs are positively correlated);
            defaults to ``attributes``.
        reference_tasks: likewise for tasks.
    """
    a = _binary(attributes, "attributes").astype(float)
    t = _binary(tasks, "tasks").astype(float)
    hat = _binary(predictions, "predictions").astype(float)
    ra = (
        a
        if reference_attributes is None
        else _binary(reference_attributes, "attributes").astype(float)
    )
    rt = t if reference_tasks is None else _binary(reference_tasks, "tasks").astype(float)
    n_ref = float(len(ra))
    joint = (ra.T @ rt) / n_ref
    product = np.outer(ra.mean(axis=0), rt.mean(axis=0))
    positive = joint > product
    if direction == "A->T":
        if hat.shape != t.shape:
            raise ValueError(f"A->T needs predicted tasks of shape {t.shape}, got {hat.shape}")
        a_count = a.sum(axis=0)[:, None]
        delta = _safe_divide(a.T @ hat, a_count) - _safe_divide(a.T @ t, a_count)
    elif direction == "T->A":
        if hat.shape != a.shape:
            raise ValueError(f"T->A needs predicted attributes of shape {a.shape}, got {hat.shape}")
        t_count = t.sum(axis=0)[None, :]
        delta = _safe_divide(hat.T @ t, t_count) - _safe_divide(a.T @ t, t_count)
    else:
        raise ValueError(f"direction must be 'A->T' or 'T->A', got {direction!r}")
    per_pair = np.where(positive, delta, -delta)
    value = float(np.nanmean(per_pair)) if np.isfinite(per_pair).any() else 0.0
    return DirectionalBiasAmplification(
        per_pair=per_pair, positively_correlated=positive, delta=delta, value=value
    )


# --- bootstrap guard ------------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[[NDArray[np.int64]], FloatArray],
    n: int,
    *,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """Percentile bootstrap interval of an array-valued statistic of resampled row indices.

    Args:
        statistic: maps an index array (rows drawn with replacement) to an array of values.
        n: number of rows.
        n_boot: resamples.
        alpha: 1 - confidence level.
        seed: random seed (results are deterministic).

    Returns:
        ``(low, high)`` arrays shaped like the statistic (NaN-aware).
    """
    rng = np.random.default_rng(seed)
    draws = np.stack([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low = np.nanpercentile(draws, 100 * alpha / 2, axis=0)
            high = np.nanpercentile(draws, 100 * (1 - alpha / 2), axis=0)
    return low, high


# --- saliency: border against centre --------------------------------------------------------


def border_mask(height: int, width: int, border: float = 0.15) -> NDArray[np.bool_]:
    """Boolean mask of the outer frame that is ``border`` of each side wide."""
    if not 0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    mask = np.zeros((height, width), dtype=bool)
    bh = max(1, round(height * border))
    bw = max(1, round(width * border))
    mask[:bh, :] = True
    mask[-bh:, :] = True
    mask[:, :bw] = True
    mask[:, -bw:] = True
    return mask


def saliency_border_stats(
    cams: NDArray[np.floating], border: float = 0.15
) -> dict[str, FloatArray]:
    """Share of CAM energy on the border frame and in the centre, per image.

    Args:
        cams: ``(n, H, W)`` non-negative saliency maps.
        border: frame width as a fraction of each side.

    Returns:
        ``border_share`` and ``centre_share`` (fractions of total energy, summing to 1),
        ``border_area`` (the frame's share of pixels, the value a uniform map would give) and
        ``border_to_centre`` (mean saliency per border pixel over mean per centre pixel).
    """
    maps = np.clip(np.asarray(cams, dtype=float), 0, None)
    if maps.ndim != 3:
        raise ValueError(f"cams must be (n, H, W), got shape {maps.shape}")
    mask = border_mask(maps.shape[1], maps.shape[2], border)
    total = maps.sum(axis=(1, 2))
    on_border = maps[:, mask].sum(axis=1)
    border_share = _safe_divide(on_border, total)
    area = float(mask.mean())
    border_mean = maps[:, mask].mean(axis=1)
    centre_mean = maps[:, ~mask].mean(axis=1)
    return {
        "border_share": border_share,
        "centre_share": 1.0 - border_share,
        "border_area": np.full(len(maps), area),
        "border_to_centre": _safe_divide(border_mean, centre_mean),
    }


# --- explanation scoring against boxes --------------------------------------------------------


def box_mask(height: int, width: int, box: tuple[float, float, float, float]) -> NDArray[np.bool_]:
    """Pixels inside a normalised ``(x0, y0, x1, y1)`` box (at least one pixel)."""
    x0, y0, x1, y1 = box
    c0 = min(width - 1, max(0, int(np.floor(x0 * width))))
    r0 = min(height - 1, max(0, int(np.floor(y0 * height))))
    c1 = max(c0 + 1, min(width, int(np.ceil(x1 * width))))
    r1 = max(r0 + 1, min(height, int(np.ceil(y1 * height))))
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def pointing_hit(
    cam: NDArray[np.floating], box: tuple[float, float, float, float], tolerance: int = 0
) -> bool:
    """Pointing game: is the CAM's maximum inside the box (grown by ``tolerance`` pixels)?"""
    height, width = cam.shape
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    mask = box_mask(height, width, box)
    if tolerance > 0:
        r0, r1 = max(0, row - tolerance), min(height, row + tolerance + 1)
        c0, c1 = max(0, col - tolerance), min(width, col + tolerance + 1)
        return bool(mask[r0:r1, c0:c1].any())
    return bool(mask[row, col])


def energy_in_box(cam: NDArray[np.floating], box: tuple[float, float, float, float]) -> float:
    """Share of the (non-negative) CAM energy that falls inside the box."""
    values = np.clip(np.asarray(cam, dtype=float), 0, None)
    total = values.sum()
    if total <= 0:
        return 0.0
    height, width = values.shape
    return float(values[box_mask(height, width, box)].sum() / total)
