"""Evaluation metrics for the classification task (torchmetrics, synced across DDP ranks).

Per split the task keeps an ``EvalMetrics`` pair:

* ``scalars``: a ``MetricCollection`` of torchmetrics classes (multiclass top-1/top-5 accuracy,
  macro-F1, per-class F1, confusion matrix; multilabel macro average precision over the
  classes present in the truth, micro average precision).
* ``scores``: ``ScoreStore``, every probability and target of the epoch gathered from all ranks,
  used for threshold tuning, F1/F2 at the tuned thresholds, precision@k and PR curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAveragePrecision,
)
from torchmetrics.utilities import dim_zero_cat

THRESHOLD_GRID = torch.linspace(0.02, 0.98, 49)


class ScoreStore(Metric):
    """Keeps all probabilities and targets of an epoch; ``compute`` returns them (DDP-gathered)."""

    full_state_update = False
    probs: list[Tensor]
    target: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add a batch of probabilities ``[B, C]`` and targets (``[B]`` or ``[B, C]``)."""
        self.probs.append(probs.detach().float())
        self.target.append(target.detach())

    def compute(self) -> tuple[Tensor, Tensor]:
        """All probabilities and targets seen (from every rank after sync)."""
        return dim_zero_cat(self.probs), dim_zero_cat(self.target)


class PresentClassAP(MultilabelAveragePrecision):
    """Per-class average precision, NaN for a class without a positive in the truth.

    Such a class has no defined AP (recall 0/0); torchmetrics reports 0 for it, which would
    drag a macro mean down for a split that merely lacks a rare class.
    """

    def __init__(self, num_labels: int, **kwargs: Any) -> None:
        super().__init__(num_labels, average=None, **kwargs)

    def compute(self) -> Tensor:  # type: ignore[override]
        """The APs of the epoch (DDP-gathered), NaN where undefined."""
        probs = dim_zero_cat(self.preds)  # type: ignore[arg-type]
        return ap_per_class(probs, dim_zero_cat(self.target))  # type: ignore[arg-type]


class PresentClassMacroAP(PresentClassAP):
    """The one macro mAP of met_vision: the mean AP over the classes with at least one positive
    in the truth (the absent ones are left out, like :func:`macro_fbeta` leaves out classes
    that never occur). Training logs it as ``map_macro``; the audit uses :func:`map_macro`.
    NaN when no class has a positive."""

    def compute(self) -> Tensor:  # type: ignore[override]
        """The mean of the defined per-class APs."""
        return torch.nanmean(super().compute())


def ap_per_class(probs: Tensor, target: Tensor) -> Tensor:
    """Average precision of each class of scores ``(N, C)`` against 0/1 truth ``(N, C)``
    (torchmetrics), NaN for a class without a positive."""
    from torchmetrics.functional.classification import (
        binary_average_precision,
        multilabel_average_precision,
    )

    probs, target = torch.as_tensor(probs).float(), torch.as_tensor(target).long()
    out = torch.full((probs.shape[1],), float("nan"), device=probs.device)
    present = (target == 1).sum(dim=0) > 0
    if int(present.sum()) == 1:  # the multilabel form needs two labels or more
        out[present] = binary_average_precision(probs[:, present][:, 0], target[:, present][:, 0])
    elif bool(present.any()):
        out[present] = multilabel_average_precision(
            probs[:, present], target[:, present], num_labels=int(present.sum()), average=None
        )
    return out


def map_macro(probs: Tensor, target: Tensor) -> float:
    """:class:`PresentClassMacroAP` of scores ``(N, C)`` against 0/1 truth ``(N, C)``."""
    return float(torch.nanmean(ap_per_class(probs, target)))


def f1_micro(preds: Tensor, target: Tensor) -> float:
    """Micro F1 of boolean decisions ``(N, C)`` against the truth (torchmetrics)."""
    from torchmetrics.functional.classification import multilabel_f1_score

    preds, target = torch.as_tensor(preds).float(), torch.as_tensor(target).long()
    return float(multilabel_f1_score(preds, target, num_labels=preds.shape[1], average="micro"))


def scalar_collection(task: str, num_classes: int) -> MetricCollection:
    """The torchmetrics collection for ``task`` (see module docstring)."""
    if task == "multiclass":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                # balanced accuracy: the mean per-class recall
                "acc_balanced": MulticlassAccuracy(num_classes, top_k=1, average="macro"),
                "acc_top5": MulticlassAccuracy(
                    num_classes, top_k=min(5, num_classes), average="micro"
                ),
                "f1_macro": MulticlassF1Score(num_classes, average="macro"),
                "f1_per_class": MulticlassF1Score(num_classes, average=None),
                "confusion_matrix": MulticlassConfusionMatrix(num_classes),
            },
            compute_groups=False,
        )
    return MetricCollection(
        {
            "map_macro": PresentClassMacroAP(num_classes),
            "map_micro": MultilabelAveragePrecision(num_classes, average="micro"),
            "ap_per_class": PresentClassAP(num_classes),
        },
        compute_groups=False,
    )


@dataclass
class FbetaCounts:
    """True positives, false positives and false negatives per (threshold, class)."""

    tp: Tensor
    fp: Tensor
    fn: Tensor


def _counts(probs: Tensor, target: Tensor, thresholds: Tensor) -> FbetaCounts:
    """Counts for each threshold in ``thresholds`` (``[T]`` or ``[T, C]``): tensors ``[T, C]``."""
    target = target.bool()
    tps, fps, fns = [], [], []
    for thr in thresholds:
        pred = probs >= thr
        tps.append((pred & target).sum(0))
        fps.append((pred & ~target).sum(0))
        fns.append((~pred & target).sum(0))
    return FbetaCounts(
        torch.stack(tps).double(), torch.stack(fps).double(), torch.stack(fns).double()
    )


def _fbeta(tp: Tensor, fp: Tensor, fn: Tensor, beta: float) -> Tensor:
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    return torch.where(denom > 0, (1 + b2) * tp / denom.clamp(min=1e-12), torch.zeros_like(tp))


def tune_thresholds(probs: Tensor, target: Tensor, beta: float = 1.0) -> tuple[float, Tensor]:
    """Thresholds maximising F-beta on ``(probs, target)``.

    Returns:
        ``(global_threshold, per_class_thresholds)``: the single threshold maximising micro
        F-beta over all labels, and for each class the threshold maximising its own F-beta
        (the global one for a class with no positives).
    """
    grid = THRESHOLD_GRID.to(probs.device)
    c = _counts(probs, target, grid)
    micro = _fbeta(c.tp.sum(1), c.fp.sum(1), c.fn.sum(1), beta)
    global_thr = grid[int(torch.argmax(micro))]
    per_class = _fbeta(c.tp, c.fp, c.fn, beta)  # [T, C]
    best = grid[torch.argmax(per_class, dim=0)]
    has_pos = target.bool().any(0)
    per_class_thr = torch.where(has_pos, best, global_thr)
    return float(global_thr), per_class_thr.float()


def macro_fbeta(tp: Tensor, fp: Tensor, fn: Tensor, beta: float = 1.0) -> float:
    """The one macro F-beta of met_vision (training, compare and the audit report it).

    The mean of the per-class F-beta over the classes that occur in the truth or in the
    decisions (``tp + fp + fn > 0``). A class absent from both has no defined F-beta (0/0) and
    is left out rather than counted as 0 or 1: a split that happens to lack a rare class neither
    drags the score down nor inflates it. This is torchmetrics' rule for multiclass macro F1
    (``MulticlassF1Score(average="macro")``), applied to multilabel decisions too. NaN when no
    class occurs at all.
    """
    occurs = (tp + fp + fn) > 0
    if not bool(occurs.any()):
        return float("nan")
    return float(_fbeta(tp.double(), fp.double(), fn.double(), beta)[occurs].mean())


def macro_f1(preds: Tensor, target: Tensor) -> float:
    """:func:`macro_fbeta` (beta 1) of boolean decisions ``(N, C)`` against the truth ``(N, C)``,
    counted with torchmetrics' ``multilabel_stat_scores``."""
    from torchmetrics.functional.classification import multilabel_stat_scores

    preds, target = torch.as_tensor(preds).int(), torch.as_tensor(target).int()
    stats = multilabel_stat_scores(preds, target, num_labels=preds.shape[1], average=None)
    tp, fp, fn = stats[:, 0], stats[:, 1], stats[:, 3]
    return macro_fbeta(tp, fp, fn, 1.0)


def fbeta_at(
    probs: Tensor, target: Tensor, thresholds: Tensor | float, beta: float
) -> dict[str, Any]:
    """Micro, macro and per-class F-beta at a global or per-class threshold."""
    thr = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)
    pred = probs >= thr
    t = target.bool()
    tp = (pred & t).sum(0).double()
    fp = (pred & ~t).sum(0).double()
    fn = (~pred & t).sum(0).double()
    per_class = _fbeta(tp, fp, fn, beta)
    micro = _fbeta(tp.sum(), fp.sum(), fn.sum(), beta)
    macro = macro_fbeta(tp, fp, fn, beta)
    return {"micro": float(micro), "macro": macro, "per_class": per_class}


def precision_at_k(probs: Tensor, target: Tensor, k: int) -> float:
    """Mean over samples of the share of the top-``k`` scored labels that are true."""
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    return float(target.float().gather(1, top).mean())


def multilabel_threshold_metrics(
    probs: Tensor,
    target: Tensor,
    thresholds: dict[str, Any],
    ks: tuple[int, ...] = (1, 3),
) -> dict[str, Any]:
    """F1/F2 at tuned thresholds and precision@k.

    Args:
        probs: ``[N, C]`` sigmoid scores.
        target: ``[N, C]`` multi-hot targets.
        thresholds: ``{"f1": float, "f2": float, "f1_per_class": Tensor, "f2_per_class": Tensor}``.
        ks: the ``k`` of precision@k.

    Returns:
        Scalars ``f1_micro``, ``f1_macro``, ``f2_micro``, ``f2_macro`` (global thresholds),
        ``f1_macro_class_thr``, ``f2_macro_class_thr`` (per-class thresholds), ``precision_at_<k>``,
        and the per-class tensors ``f1_per_class`` and ``f2_per_class`` (per-class thresholds).
    """
    out: dict[str, Any] = {}
    for beta, name in ((1.0, "f1"), (2.0, "f2")):
        at_global = fbeta_at(probs, target, thresholds[name], beta)
        at_class = fbeta_at(probs, target, thresholds[f"{name}_per_class"], beta)
        out[f"{name}_micro"] = at_global["micro"]
        out[f"{name}_macro"] = at_global["macro"]
        out[f"{name}_macro_class_thr"] = at_class["macro"]
        out[f"{name}_per_class"] = at_class["per_class"]
    for k in ks:
        out[f"precision_at_{k}"] = precision_at_k(probs, target, k)
    return out


def pr_curves(
    probs: Tensor, target: Tensor, task: str, max_curves: int = 20
) -> dict[str, dict[str, list[float]]]:
    """Precision-recall curves per class (one-vs-rest for multiclass) plus the micro average.

    Returns ``{"micro": {"precision": [...], "recall": [...]}, "<class index>": {...}}`` for the
    ``max_curves`` classes with the most positives.
    """
    from torchmetrics.functional.classification import binary_precision_recall_curve

    num_classes = probs.shape[1]
    if task == "multiclass":
        onehot = torch.nn.functional.one_hot(target.long(), num_classes).int()
    else:
        onehot = target.int()
    curves: dict[str, dict[str, list[float]]] = {}

    def _curve(p: Tensor, t: Tensor) -> dict[str, list[float]]:
        precision, recall, _ = binary_precision_recall_curve(p, t, thresholds=101)
        return {"precision": precision.tolist(), "recall": recall.tolist()}

    curves["micro"] = _curve(probs.flatten(), onehot.flatten())
    positives = onehot.sum(0)
    for idx in torch.argsort(positives, descending=True)[:max_curves].tolist():
        if positives[idx] > 0:
            curves[str(idx)] = _curve(probs[:, idx], onehot[:, idx])
    return curves
