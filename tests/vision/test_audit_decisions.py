"""The audit's decision rule: labels predicted at their training rate, and the skill test that
keeps labels the model cannot rank out of the amplification tests."""

from __future__ import annotations

import numpy as np
import pytest

from met_vision.fairness import decisions, stats


def test_rate_matched_predicts_each_label_at_its_training_rate() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((200, 3))
    probs[:10, 2] = 0.5  # ties at the cut are broken by order: the count stays exact
    preds, cuts = decisions.rate_matched(probs, np.array([0.25, 0.0, 0.05]))
    assert preds.sum(axis=0).tolist() == [50, 0, 10]
    assert cuts[1] == np.inf
    # the predicted objects are the highest-scoring ones
    assert probs[preds[:, 0], 0].min() >= probs[~preds[:, 0], 0].max()
    assert probs[preds[:, 0], 0].min() == cuts[0]


def test_skill_test_separates_a_learnt_label_from_an_unlearnable_one() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((600, 2)) < 0.2
    probs = np.column_stack(
        [
            np.where(truth[:, 0], 0.7, 0.3) + rng.normal(0, 0.1, 600),  # ranks its carriers
            rng.random(600),  # noise: nothing to rank them by
        ]
    )
    predictive, auc = decisions.predictive_labels(probs, truth)
    assert predictive.tolist() == [True, False]
    assert auc[0] > 0.95 and abs(auc[1] - 0.5) < 0.1


def test_for_audit_rules() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random((300, 2)) < 0.3
    probs = np.where(truth, 0.6, 0.2) + rng.normal(0, 0.05, (300, 2))
    model = probs >= 0.1  # a threshold tuned low: every object predicted
    training = rng.random((500, 2)) < np.array([0.3, 0.1])
    rate = decisions.for_audit(probs, model, truth, training, rule="rate", multiclass=False)
    assert rate.rule == "rate"
    assert rate.preds.sum(axis=0).tolist() == np.rint(300 * training.mean(axis=0)).tolist()
    described = rate.describe(["a", "b"])
    assert described["per_label"]["a"]["training_rate"] == pytest.approx(training[:, 0].mean())
    assert described["not_predictive"] == []
    own = decisions.for_audit(probs, model, truth, training, rule="model", multiclass=False)
    assert own.rule == "model" and (own.preds == model).all()
    argmax = decisions.for_audit(probs, model, truth, training, rule="rate", multiclass=True)
    assert argmax.rule == "argmax" and (argmax.preds == model).all()
    with pytest.raises(ValueError, match="decision rule"):
        decisions.for_audit(probs, model, truth, training, rule="f1", multiclass=False)


def test_labels_the_model_cannot_rank_are_not_tested() -> None:
    rng = np.random.default_rng(3)
    n = 400
    warm = rng.random(n) < 0.5
    g = np.column_stack([warm, ~warm])
    y = np.column_stack([rng.random(n) < np.where(warm, 0.4, 0.1)] * 2)
    p = np.column_stack([warm & (rng.random(n) < 0.8)] * 2)  # amplifies on both labels
    kwargs = {
        "min_support": 5,
        "n_boot": 20,
        "alpha": 0.05,
        "seed": 0,
        "group_names": ["warm", "other"],
        "labels": ["learnt", "noise"],
    }
    every = stats.amplification_tests(y, p, g, None, **kwargs)
    gated = stats.amplification_tests(y, p, g, None, testable=np.array([True, False]), **kwargs)
    assert {t["label"] for t in every["tests"]} == {"learnt", "noise"}
    assert {t["label"] for t in gated["tests"]} == {"learnt"}
