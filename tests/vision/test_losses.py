"""Losses and threshold metrics on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from met_vision.trainers.losses import (
    AsymmetricLoss,
    FocalLoss,
    balanced_class_weights,
    build_loss,
)
from met_vision.trainers.metrics import (
    multilabel_threshold_metrics,
    precision_at_k,
    tune_thresholds,
)


@pytest.fixture
def mc_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)


@pytest.fixture
def ml_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=g), (torch.rand(16, 6, generator=g) > 0.6).float()


def test_ce_with_smoothing_and_weights_matches_torch(mc_batch):
    logits, y = mc_batch
    w = [1.0, 2.0, 0.5, 1.0, 3.0]
    loss = build_loss("multiclass", "ce", 5, label_smoothing=0.1, class_weights=w)
    expected = F.cross_entropy(logits, y, weight=torch.tensor(w), label_smoothing=0.1)
    assert torch.allclose(loss(logits, y), expected)


def test_focal_gamma_zero_is_cross_entropy(mc_batch, ml_batch):
    logits, y = mc_batch
    assert torch.allclose(FocalLoss("multiclass", gamma=0.0)(logits, y), F.cross_entropy(logits, y))
    logits, t = ml_batch
    bce = F.binary_cross_entropy_with_logits(logits, t)
    assert torch.allclose(FocalLoss("multilabel", gamma=0.0)(logits, t), bce)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0, 0.0, 0.0]])
    hard = torch.tensor([[0.2, 0.0, 0.0]])
    y = torch.tensor([0])
    focal = FocalLoss("multiclass", gamma=2.0)
    ratio_easy = focal(easy, y) / F.cross_entropy(easy, y)
    ratio_hard = focal(hard, y) / F.cross_entropy(hard, y)
    assert ratio_easy < 0.01 < ratio_hard


def test_asl_without_focusing_or_clip_is_bce(ml_batch):
    logits, t = ml_batch
    asl = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    assert torch.allclose(asl(logits, t), F.binary_cross_entropy_with_logits(logits, t), atol=1e-6)


def test_asl_clip_discards_easy_negatives():
    asl = AsymmetricLoss(gamma_neg=4.0, gamma_pos=0.0, clip=0.05)
    # p = sigmoid(-4) ~ 0.018 < clip: the shifted negative probability is 1, so zero loss
    assert asl(torch.tensor([[-4.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    # a confident false positive still costs
    assert asl(torch.tensor([[4.0]]), torch.tensor([[0.0]])).item() > 1.0


def test_bce_pos_weight_scales_positive_terms(ml_batch):
    logits, t = ml_batch
    loss = build_loss("multilabel", "bce", 6, pos_weight=3.0)
    expected = F.binary_cross_entropy_with_logits(logits, t, pos_weight=torch.full((6,), 3.0))
    assert torch.allclose(loss(logits, t), expected)


def test_build_loss_rejects_bad_options():
    with pytest.raises(ValueError, match="not available for task 'multiclass'"):
        build_loss("multiclass", "asl", 3)
    with pytest.raises(ValueError, match="class_weights has 2 values but the task has 3"):
        build_loss("multiclass", "ce", 3, class_weights=[1.0, 2.0])


def test_balanced_class_weights():
    assert balanced_class_weights([10, 30, 0]) == pytest.approx([40 / 30, 40 / 90, 0.0])


def test_tuned_thresholds_separate_perfectly_separable_scores():
    # class 0 positives score 0.3 (negatives 0.1); class 1 positives 0.9 (negatives 0.6)
    target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]] * 5).float()
    probs = torch.where(target.bool(), torch.tensor([0.3, 0.9]), torch.tensor([0.1, 0.6])).float()
    global_thr, per_class = tune_thresholds(probs, target, beta=1.0)
    assert 0.1 < per_class[0] <= 0.3 and 0.6 < per_class[1] <= 0.9
    thresholds = {
        "f1": global_thr,
        "f2": global_thr,
        "f1_per_class": per_class,
        "f2_per_class": per_class,
    }
    out = multilabel_threshold_metrics(probs, target, thresholds, ks=(1,))
    assert out["f1_macro_class_thr"] == pytest.approx(1.0)
    # no single threshold separates both classes, the per-class ones do
    assert out["f1_micro"] < 1.0
    assert out["f1_per_class"].tolist() == pytest.approx([1.0, 1.0])


def test_precision_at_k():
    probs = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
    target = torch.tensor([[1, 0, 0], [0, 1, 1]]).float()
    assert precision_at_k(probs, target, 1) == pytest.approx(1.0)
    assert precision_at_k(probs, target, 2) == pytest.approx(0.75)


def test_one_macro_f1_leaves_out_classes_absent_from_truth_and_decisions() -> None:
    from torchmetrics.classification import MulticlassF1Score

    from met_vision.trainers.metrics import fbeta_at, macro_f1

    target = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=torch.bool)
    preds = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=torch.bool)
    # class 0: P=1, R=1/2 -> F1 2/3; class 1: P=2/3, R=1 -> 4/5; class 2 never occurs
    assert macro_f1(preds, target) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # the same rule as torchmetrics' multiclass macro F1, which training logs as f1_macro
    multiclass = MulticlassF1Score(num_classes=3, average="macro")
    assert float(multiclass(preds.int().argmax(1), target.int().argmax(1))) == pytest.approx(
        macro_f1(preds, target)
    )
    assert fbeta_at(preds.float(), target, 0.5, 1.0)["macro"] == pytest.approx(
        macro_f1(preds, target)
    )


def test_one_macro_map_leaves_out_classes_without_positives_in_training_and_audit() -> None:
    from types import SimpleNamespace

    import numpy as np

    from met_vision.fairness.analysis import overall_metrics
    from met_vision.trainers.metrics import PresentClassMacroAP, map_macro

    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.3, 0.6, 0.1], [0.4, 0.7, 0.8], [0.8, 0.1, 0.3]])
    # class 0: positives ranked 1st and 3rd -> AP (1 + 2/3) / 2; class 1: ranked 1st and 2nd -> 1;
    # class 2 has no positive: undefined, left out (torchmetrics' own macro would count it 0)
    expected = ((1 + 2 / 3) / 2 + 1.0) / 2
    assert map_macro(probs, target) == pytest.approx(expected)
    metric = PresentClassMacroAP(3)  # what training logs as map_macro, fed in two batches
    metric.update(probs[:2], target[:2])
    metric.update(probs[2:], target[2:])
    assert float(metric.compute()) == pytest.approx(expected)

    audited = SimpleNamespace(  # the fields of AuditData that overall_metrics reads
        truth=target.numpy(), preds=(probs > 0.5).numpy().astype(np.int64), probs=probs.numpy()
    )
    figures = overall_metrics(audited)  # type: ignore[arg-type]
    assert figures["map_macro"] == pytest.approx(expected)
    # decisions: tp 3 (0,0), (1,1), (2,1); fp 2 (2,2), (3,0); fn 1 (2,0) -> micro F1 6 / 9
    assert figures["f1_micro"] == pytest.approx(6 / 9)
