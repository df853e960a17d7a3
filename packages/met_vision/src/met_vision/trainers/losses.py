"""Classification losses for single-label and multi-label training.

``build_loss`` turns the task's loss options into an ``nn.Module`` taking ``(logits, target)``:

* multiclass: ``target`` is ``long[B]``; losses ``ce`` (label smoothing, class weights) and
  ``focal`` (gamma, class weights as alpha).
* multilabel: ``target`` is ``float[B, C]`` multi-hot; losses ``bce`` (``pos_weight``),
  ``focal`` (sigmoid focal, Lin et al. 2017) and ``asl`` (asymmetric loss, Ridnik et al. 2021).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TaskName = Literal["multiclass", "multilabel"]
LOSSES: dict[str, tuple[str, ...]] = {
    "multiclass": ("ce", "focal"),
    "multilabel": ("bce", "focal", "asl"),
}


class FocalLoss(nn.Module):
    """Focal loss ``(1 - p_t)^gamma * CE`` for multiclass or multilabel logits.

    Args:
        task: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per label).
        gamma: focusing parameter; 0 gives plain cross-entropy.
        weight: per-class weights (multiclass: like CE's ``weight``; multilabel: scales each label).
        alpha: multilabel only, weight of positives (negatives get ``1 - alpha``); None for none.
    """

    def __init__(
        self,
        task: TaskName,
        gamma: float = 2.0,
        weight: Tensor | None = None,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("weight", weight)
        self.weight: Tensor | None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean focal loss over the batch (and labels for multilabel)."""
        if self.task == "multiclass":
            log_p = F.log_softmax(logits.float(), dim=-1)
            log_pt = log_p.gather(1, target[:, None]).squeeze(1)
            focal = (1.0 - log_pt.exp()).clamp(min=0.0) ** self.gamma * -log_pt
            if self.weight is not None:
                w = self.weight[target]
                return (focal * w).sum() / w.sum()
            return focal.mean()
        logits = logits.float()
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = p * target + (1 - p) * (1 - target)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        if self.weight is not None:
            loss = loss * self.weight
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (ASL) for multi-label classification (Ridnik et al., ICCV 2021).

    Negatives are down-weighted by ``p^gamma_neg`` after shifting their probability by
    ``clip`` (easy negatives are discarded); positives by ``(1 - p)^gamma_pos``.

    Args:
        gamma_neg: focusing parameter for negatives.
        gamma_pos: focusing parameter for positives.
        clip: probability margin for negatives (0 disables).
        eps: clamp for the logarithms.
    """

    def __init__(
        self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8
    ) -> None:
        super().__init__()
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean ASL over batch and labels."""
        p = torch.sigmoid(logits.float())
        p_neg = 1.0 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1.0)
        loss = target * torch.log(p.clamp(min=self.eps)) + (1 - target) * torch.log(
            p_neg.clamp(min=self.eps)
        )
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            p_t = p * target + p_neg * (1 - target)
            gamma = self.gamma_pos * target + self.gamma_neg * (1 - target)
            loss = loss * torch.pow(1.0 - p_t, gamma)
        return -loss.mean()


class WeightedBCE(nn.Module):
    """``binary_cross_entropy_with_logits`` with an optional per-label ``pos_weight``."""

    def __init__(self, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)
        self.pos_weight: Tensor | None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean BCE over batch and labels."""
        return F.binary_cross_entropy_with_logits(
            logits.float(), target.float(), pos_weight=self.pos_weight
        )


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights ``N / (C * n_c)`` (sklearn's "balanced"); empty classes get 0."""
    total = float(sum(counts))
    n = len(counts)
    return [total / (n * c) if c > 0 else 0.0 for c in counts]


def _as_vector(value: float | Sequence[float] | None, num_classes: int, what: str) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return torch.full((num_classes,), float(value))
    vec = torch.tensor([float(v) for v in value])
    if vec.numel() != num_classes:
        raise ValueError(f"{what} has {vec.numel()} values but the task has {num_classes} classes")
    return vec


def build_loss(
    task: TaskName,
    name: str,
    num_classes: int,
    *,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
    pos_weight: float | Sequence[float] | None = None,
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
    asl_gamma_neg: float = 4.0,
    asl_gamma_pos: float = 0.0,
    asl_clip: float = 0.05,
) -> nn.Module:
    """Build the loss module named ``name`` for ``task``.

    Raises:
        ValueError: an unknown loss for the task, or option vectors of the wrong length.
    """
    if name not in LOSSES[task]:
        raise ValueError(
            f"loss {name!r} is not available for task {task!r}; choose one of {list(LOSSES[task])}"
        )
    weight = _as_vector(class_weights, num_classes, "class_weights")
    if task == "multiclass":
        if name == "ce":
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        return FocalLoss("multiclass", gamma=focal_gamma, weight=weight)
    if name == "bce":
        return WeightedBCE(_as_vector(pos_weight, num_classes, "pos_weight"))
    if name == "focal":
        return FocalLoss("multilabel", gamma=focal_gamma, weight=weight, alpha=focal_alpha)
    return AsymmetricLoss(gamma_neg=asl_gamma_neg, gamma_pos=asl_gamma_pos, clip=asl_clip)


def loss_from_hparams(
    task: TaskName, hparams: Mapping[str, Any], num_classes: int, label_names: list[str]
) -> nn.Module:
    """The loss ``ClassificationTask``'s hyperparameters ask for; ``class_weights="balanced"``
    weighs by the manifest's counts (none until the manifest arrives from the data module)."""
    name = hparams["loss"] or ("ce" if task == "multiclass" else "bce")
    weights = hparams["class_weights"]
    if weights == "balanced":
        counts = (hparams["labels"] or {}).get("counts")
        weights = balanced_class_weights(_counts_list(counts, label_names)) if counts else None
    return build_loss(
        task,
        name,
        num_classes,
        label_smoothing=hparams["label_smoothing"],
        class_weights=weights,
        pos_weight=hparams["pos_weight"],
        focal_gamma=hparams["focal_gamma"],
        focal_alpha=hparams["focal_alpha"],
        asl_gamma_neg=hparams["asl_gamma_neg"],
        asl_gamma_pos=hparams["asl_gamma_pos"],
        asl_clip=hparams["asl_clip"],
    )


def _counts_list(counts: Any, names: list[str]) -> list[int]:
    if isinstance(counts, dict):
        return [int(counts.get(n, 0)) for n in names]
    return [int(c) for c in counts]
