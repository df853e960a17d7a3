"""Optimisation of ``ClassificationTask``: parameter groups, optimiser, warm-up/cosine schedule.

The head and the backbone get their own parameter groups (discriminative fine-tuning: the
backbone's peak lr is ``backbone_lr_mult`` of the head's), biases and norm weights get no weight
decay, and a frozen backbone (``freeze_backbone_epochs``) gets lr 0, then its own warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch import nn


def parameter_groups(
    model: nn.Module,
    head_names: Collection[str],
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float,
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by (head or backbone, decayed or not), in a stable order."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name in head_names
        decay = p.ndim > 1
        groups.setdefault((is_head, decay), []).append(p)
    return [
        {
            "params": params,
            "lr": lr * (1.0 if is_head else backbone_lr_mult),
            "weight_decay": weight_decay if decay else 0.0,
            "is_head": is_head,
        }
        for (is_head, decay), params in sorted(groups.items())
    ]


def build_optimizer(
    name: str,
    groups: list[dict[str, Any]],
    lr: float,
    momentum: float,
    on_cuda: bool,
) -> torch.optim.Optimizer:
    """``sgd`` (Nesterov momentum) or ``adamw`` (fused on CUDA) over ``groups``."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr, fused=on_cuda or None)


def steps_per_epoch(
    estimated_steps: float, max_epochs: int | None, num_batches: float | None
) -> tuple[float, float]:
    """(optimiser steps per epoch, total steps); total is ``inf`` when the trainer cannot tell."""
    total = float(estimated_steps)
    if math.isinf(total) or total <= 0:
        return float(num_batches or 1), math.inf
    epochs = max_epochs or 0
    return (total / epochs if epochs > 0 else total), total


def lr_schedule(
    groups: list[dict[str, Any]],
    hparams: Mapping[str, Any],
    per_epoch: float,
    total: float,
) -> list[Callable[[int], float]]:
    """One ``LambdaLR`` multiplier per group: warm-up then cosine; the backbone's waits while it
    is frozen and then warms up again."""
    warmup = max(0, int(hparams["warmup_epochs"] * per_epoch))
    schedule = warmup_cosine(warmup, total, hparams["min_lr_ratio"])
    frozen_epochs = hparams["freeze_backbone_epochs"]
    frozen_steps = round(frozen_epochs * per_epoch)
    backbone = _frozen_then_warm(frozen_epochs, frozen_steps, warmup, schedule)
    return [schedule if g["is_head"] else backbone for g in groups]


def freeze_backbone_batchnorm(model: nn.Module, head_names: Collection[str]) -> None:
    """Put the backbone's BatchNorm layers in eval mode (statistics fixed while frozen)."""
    for name, module in model.named_modules():
        is_head = any(n.startswith(f"{name}.") for n in head_names)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_head:
            module.eval()


def warmup_cosine(warmup: int, total: float, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimiser step ``step``: linear warm-up, then cosine."""

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if math.isinf(total) or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def _frozen_then_warm(
    epochs: int,
    frozen_steps: int,
    warmup: int,
    schedule: Callable[[int], float],
) -> Callable[[int], float]:
    """The backbone's multiplier: 0 while frozen, then its own linear warm-up from the step it
    unfreezes (so pretrained weights never jump from 0 to the peak rate), under the cosine."""

    # a closure, not an object: LambdaLR.state_dict() would pickle an object's attributes
    def multiplier(step: int) -> float:
        if epochs <= 0:
            return schedule(step)
        if step < frozen_steps:  # by step, not epoch: the lr of step n is set after step n - 1
            return 0.0
        since = step - frozen_steps
        ramp = min(1.0, (since + 1) / warmup) if warmup > 0 else 1.0
        return ramp * schedule(max(step, warmup))  # the shared cosine, past the head's warm-up

    return multiplier
