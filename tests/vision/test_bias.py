"""Bias metrics on hand-built arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from met_vision.fairness import bias

# Two groups (women, men); two labels (cooking, driving).
# 3 women cook, 1 man cooks; 1 woman drives, 3 men drive.
GROUPS = np.array([[1, 0]] * 4 + [[0, 1]] * 4)
LABELS = np.array(
    [[1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [0, 1], [0, 1], [0, 1]],
)


def test_bias_scores_match_hand_counts() -> None:
    scores = bias.bias_scores(LABELS, GROUPS)
    assert scores[0, 0] == pytest.approx(0.75)  # cooking -> women
    assert scores[1, 0] == pytest.approx(0.25)
    assert scores[1, 1] == pytest.approx(0.75)  # driving -> men
    np.testing.assert_allclose(scores.sum(axis=0), [1.0, 1.0])


def test_bias_amplification_is_zero_when_predictions_reproduce_training() -> None:
    result = bias.bias_amplification(LABELS, GROUPS, LABELS, GROUPS)
    assert result.value == 0.0
    assert np.nanmax(np.abs(result.per_pair)) == 0.0


def test_bias_amplification_is_positive_when_predictions_amplify() -> None:
    preds = LABELS.copy()
    preds[4] = [0, 1]  # the cooking man is predicted driving: cooking becomes all-women
    preds[3] = [1, 0]  # the driving woman is predicted cooking
    result = bias.bias_amplification(LABELS, GROUPS, preds, GROUPS)
    # cooking: 4 women / 4 -> 1.0 against 0.75; driving: 4 men / 4 -> 1.0 against 0.75.
    assert result.per_pair[0, 0] == pytest.approx(0.25)
    assert result.per_pair[1, 1] == pytest.approx(0.25)
    assert np.isnan(result.per_pair[1, 0])  # cooking is not biased toward men: not counted
    assert result.value == pytest.approx(0.25)


def test_bias_amplification_negative_when_predictions_dampen() -> None:
    preds = LABELS.copy()
    preds[0] = [0, 1]  # a cooking woman is predicted driving
    preds[7] = [1, 0]  # a driving man is predicted cooking
    result = bias.bias_amplification(LABELS, GROUPS, preds, GROUPS)
    assert result.per_pair[0, 0] == pytest.approx(0.5 - 0.75)
    assert result.value < 0


def test_directional_bias_amplification_zero_and_positive() -> None:
    zero = bias.directional_bias_amplification(GROUPS, LABELS, LABELS, "A->T")
    assert zero.value == 0.0
    assert zero.positively_correlated[0, 0] and not zero.positively_correlated[0, 1]

    preds = LABELS.copy()
    preds[3] = [1, 0]  # the driving woman predicted cooking: P(cook_hat|woman) = 1.0
    amplified = bias.directional_bias_amplification(GROUPS, LABELS, preds, "A->T")
    # women/cooking: +0.25 (positive pair, delta +0.25); women/driving: negative pair,
    # delta -0.25 -> +0.25; men pairs unchanged.
    assert amplified.per_pair[0, 0] == pytest.approx(0.25)
    assert amplified.per_pair[0, 1] == pytest.approx(0.25)
    assert amplified.per_pair[1, 0] == pytest.approx(0.0)
    assert amplified.value == pytest.approx(0.125)


def test_directional_bias_amplification_task_to_attribute() -> None:
    predicted_groups = GROUPS.copy()
    predicted_groups[4] = [1, 0]  # the cooking man is predicted a woman
    result = bias.directional_bias_amplification(GROUPS, LABELS, predicted_groups, "T->A")
    # P(woman_hat | cooking) = 4/4 against 3/4 -> +0.25 on a positive pair.
    assert result.per_pair[0, 0] == pytest.approx(0.25)
    # P(man_hat | cooking) = 0 against 1/4 on a negative pair -> +0.25.
    assert result.per_pair[1, 0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="predicted attributes"):
        bias.directional_bias_amplification(GROUPS, LABELS, LABELS[:, :1], "T->A")


def test_group_metrics_by_group_difference_and_ratio() -> None:
    preds = LABELS.copy()
    preds[0] = [0, 0]  # one woman's cooking missed: recall(women, cooking) = 2/3
    metrics = bias.group_metrics(LABELS, preds, GROUPS)
    assert metrics.recall[0, 0] == pytest.approx(2 / 3)
    assert metrics.recall[1, 0] == pytest.approx(1.0)
    assert metrics.precision[0, 0] == pytest.approx(1.0)
    assert metrics.f1[0, 0] == pytest.approx(0.8)
    assert metrics.difference("recall")[0] == pytest.approx(1 / 3)
    assert metrics.ratio("recall")[0] == pytest.approx(2 / 3)
    assert metrics.support.tolist() == [[3, 1], [1, 3]]
    assert metrics.count.tolist() == [4, 4]


def test_conditional_rates_and_one_hot() -> None:
    rates = bias.conditional_rates(LABELS, GROUPS)
    np.testing.assert_allclose(rates, [[0.75, 0.25], [0.25, 0.75]])
    np.testing.assert_array_equal(bias.one_hot(np.array([1, 0]), 3), [[0, 1, 0], [1, 0, 0]])


def test_bootstrap_ci_brackets_the_statistic_and_is_deterministic() -> None:
    values = np.arange(100, dtype=float)

    def mean_of(idx: np.ndarray) -> np.ndarray:
        return np.array([values[idx].mean()])

    low, high = bias.bootstrap_ci(mean_of, len(values), n_boot=100, seed=1)
    assert low[0] < values.mean() < high[0]
    again = bias.bootstrap_ci(mean_of, len(values), n_boot=100, seed=1)
    assert again[0][0] == low[0]


def test_saliency_border_stats() -> None:
    uniform = np.ones((1, 20, 20))
    centre = np.zeros((1, 20, 20))
    centre[0, 8:12, 8:12] = 1.0
    frame = 1.0 - bias.border_mask(20, 20, 0.15)[None].astype(float)
    stats = bias.saliency_border_stats(np.concatenate([uniform, centre, 1 - frame]), border=0.15)
    assert stats["border_share"][0] == pytest.approx(stats["border_area"][0])
    assert stats["border_to_centre"][0] == pytest.approx(1.0)
    assert stats["border_share"][1] == 0.0
    assert stats["border_share"][2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bias.border_mask(10, 10, 0.6)


def test_pointing_and_energy_in_box() -> None:
    cam = np.zeros((10, 10))
    cam[2, 7] = 1.0
    cam[2:4, 6:8] += 0.5
    box = (0.6, 0.2, 0.8, 0.4)  # columns 6-7, rows 2-3
    assert bias.pointing_hit(cam, box)
    assert not bias.pointing_hit(cam, (0.0, 0.0, 0.3, 0.3))
    assert not bias.pointing_hit(cam, (0.0, 0.0, 0.65, 0.3))
    assert bias.pointing_hit(cam, (0.0, 0.0, 0.65, 0.3), tolerance=1)
    assert bias.energy_in_box(cam, box) == pytest.approx(1.0)
    cam[9, 9] = 3.0
    assert bias.energy_in_box(cam, box) == pytest.approx(3.0 / 6.0)
    assert bias.energy_in_box(np.zeros((4, 4)), box) == 0.0


def test_pointing_tolerance_and_image_blind_baselines() -> None:
    from met_vision.explain import pointing

    assert pointing.scaled_tolerance(224) == 15
    assert pointing.scaled_tolerance(96) == 6
    centre_box = (0.4, 0.4, 0.6, 0.6)
    corner_box = (0.0, 0.0, 0.2, 0.2)
    assert pointing.centre_hit(96, 96, centre_box, 0)
    assert not pointing.centre_hit(96, 96, corner_box, 6)
    # the random map's hit rate is the grown box's share of the image
    rate = pointing.random_hit_rate(100, 100, corner_box, 5)
    assert rate == pytest.approx((25 * 25) / (100 * 100))
    cam = np.zeros((100, 100))
    cam[10, 10] = 1.0
    scores = pointing.score(cam, corner_box, 5)
    assert scores["hit"] and not scores["centre_hit"] and scores["energy"] == 1.0


def test_benjamini_hochberg_and_fixed_pair_tests() -> None:
    from met_vision.fairness import stats as audit_stats

    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, np.nan])
    rejected = audit_stats.benjamini_hochberg(p, 0.05)
    # BH's step-up: 0.008 <= 2 * 0.05 / 8, 0.039 > 3 * 0.05 / 8: two discoveries of eight tests
    assert rejected.tolist() == [True, True] + [False] * 7
    assert audit_stats.benjamini_hochberg(np.array([0.02] * 10), 0.05).all()
    # Fisher: 40 of 40 predicted in the group against 90 of 100 in the reference
    strong = audit_stats.fisher_greater(40, 40, 90, 100)
    assert strong < 0.05
    assert audit_stats.fisher_greater(9, 10, 90, 100) > 0.3
    # candidate pairs come from the reference alone and need audited support
    ref = np.array([[0.9, 0.3], [0.1, 0.7]])
    support = np.array([[20.0, 20.0], [2.0, 5.0]])
    assert audit_stats.candidate_pairs(ref, support, 10).tolist() == [[True, False], [False, False]]
    # a reference with every object in the group leaves nothing to amplify: not a candidate
    full = np.array([[1.0, 0.5], [0.0, 0.5]])
    assert not audit_stats.candidate_pairs(full, support, 10)[0, 0]
    mde = audit_stats.minimum_detectable(ref, np.array([500.0, 500.0]), np.array([5e3, 5e3]), 0.01)
    assert 0 < mde[0, 0] < 0.1
    larger = audit_stats.minimum_detectable(ref, np.array([5000.0, 5000.0]), None, 0.01)
    assert larger[0, 0] < mde[0, 0]
    # 50 audited objects cannot show +0.1 at b_ref = 0.9 (at most 1 - 0.9 is possible)
    small = audit_stats.minimum_detectable(ref, np.array([50.0, 50.0]), np.array([500.0] * 2), 0.01)
    assert np.isnan(small[0, 0])
