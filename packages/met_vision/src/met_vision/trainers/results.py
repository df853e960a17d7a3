"""What ``ClassificationTask`` outputs, scores and reports: the head's size, the score metric
and the test results.

``report_results`` turns one split's computed metrics into the plain-JSON form that
``metrics.json`` and the result plots read (scalars, per-class values, PR curves, thresholds).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from met_vision.trainers.metrics import multilabel_threshold_metrics, pr_curves

SPLITS = ("val", "test")
SCORE_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("f1_macro", "acc_balanced", "acc"),
    "multilabel": ("map_macro", "map_micro"),
}
DEFAULT_SCORE = {"multiclass": "f1_macro", "multilabel": "map_macro"}
# computed values that are not logged as scalars
UNLOGGED = ("probs", "target", "confusion_matrix")


def num_classes_for(task: str, num_classes: int | None, labels: dict[str, Any] | None) -> int:
    """The head's size: ``num_classes``, or the number of names in the label manifest."""
    if task not in ("multiclass", "multilabel"):
        raise ValueError(f"task must be 'multiclass' or 'multilabel', not {task!r}")
    if num_classes is None:
        names = (labels or {}).get("names")
        if not names:
            raise ValueError("num_classes is not set and no label manifest gives it")
        num_classes = len(names)
    if num_classes < 2 and task == "multiclass":
        raise ValueError(f"a multiclass task needs at least 2 classes, got {num_classes}")
    return int(num_classes)


def manifest_of(datamodule: Any, num_classes: int) -> dict[str, Any] | None:
    """The label manifest of a data module's ``label_space`` (None without one); it must have
    as many classes as the head."""
    space = getattr(datamodule, "label_space", None)
    if space is None or not hasattr(space, "manifest"):
        return None
    manifest: dict[str, Any] = space.manifest()
    n = len(manifest.get("names", []))
    if n and n != num_classes:
        raise ValueError(
            f"the data has {n} classes but the model head has {num_classes}; "
            "do not set model.num_classes by hand (met_vision.fit links it from the data)"
        )
    return manifest


def score_metric_for(task: str, score_metric: str | None) -> str:
    """The metric logged as ``val/score``: ``score_metric``, or the task's default."""
    name = score_metric or DEFAULT_SCORE[task]
    if name not in SCORE_METRICS[task]:
        raise ValueError(
            f"score_metric {name!r} is not a {task} metric; use one of "
            f"{', '.join(SCORE_METRICS[task])}"
        )
    return name


def epoch_metrics(
    values: dict[str, Any],
    probs: Tensor,
    target: Tensor,
    score_metric: str,
    thresholds: dict[str, Any] | None,
    precision_at_k: tuple[int, ...],
) -> dict[str, Any]:
    """One split's metrics: the scalar collection's ``values``, the scores, and for multilabel
    (``thresholds`` given) F1/F2 at the tuned thresholds and precision@k; ``score`` is
    ``score_metric``'s value."""
    out: dict[str, Any] = {"probs": probs, "target": target, **values}
    if thresholds is not None:
        out.update(multilabel_threshold_metrics(probs, target, thresholds, precision_at_k))
    out["score"] = values[score_metric]
    return out


def report_results(
    out: dict[str, Any],
    names: list[str],
    task: str,
    thresholds: dict[str, Any] | None,
    with_curves: bool,
) -> dict[str, Any]:
    """Scalars, per-class values by class name, confusion matrix, PR curves (``with_curves``)
    and the multilabel thresholds (``thresholds``) of one split's computed metrics."""
    scalars = {
        k: float(v)
        for k, v in out.items()
        if k not in ("probs", "target") and (not isinstance(v, Tensor) or v.numel() == 1)
    }
    per_class: dict[str, dict[str, float]] = {}
    for key in ("f1_per_class", "f2_per_class", "ap_per_class"):
        if key in out:
            per_class[key.removesuffix("_per_class")] = dict(
                zip(names, [float(v) for v in out[key].tolist()], strict=True)
            )
    probs, target = out["probs"], out["target"]
    results: dict[str, Any] = {
        "metrics": scalars,
        "per_class": per_class,
        "num_samples": len(probs),
    }
    if with_curves:
        curves = pr_curves(probs.cpu(), target.cpu(), task)
        results["pr_curves"] = {
            ("micro" if k == "micro" else names[int(k)]): v for k, v in curves.items()
        }
    if "confusion_matrix" in out:
        results["confusion_matrix"] = out["confusion_matrix"].int().tolist()
    if thresholds is not None:
        results["thresholds"] = {
            "f1": thresholds["f1"],
            "f2": thresholds["f2"],
            "f1_per_class": dict(zip(names, thresholds["f1_per_class"].tolist(), strict=True)),
            "f2_per_class": dict(zip(names, thresholds["f2_per_class"].tolist(), strict=True)),
        }
    return results
