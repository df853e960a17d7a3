"""The statistics behind the audit's flags: fixed pairs, one test per pair, false-discovery control.

1. **Which pairs are tested is fixed first**, from the reference alone: a (group, label) pair is
   a candidate when the reference is biased toward the group (Zhao et al. 2017: ``b_ref(o, g) >
   1/|G|``) and the audited truth holds at least ``min_support`` objects of it. Resamples never
   change this set.
2. **One one-sided test per pair** of "no amplification", ``b_pred(o, g) <= b_ref(o, g)``:
   ``b_pred`` is the share of group g among the audited objects *predicted* o, ``b_ref`` its
   share among the reference objects *labelled* o.

   - Reference = the training split (the default, as in Zhao et al.): the two are independent
     samples, so Fisher's exact test on the 2x2 table (group g or another group, predicted o on
     the audited objects / labelled o in training) gives the p-value; it is exact at every
     sample size, also when the model predicts o for one group only (``b_pred = 1``).
   - Reference = the audited split's truth: predictions and truth are the same objects, so the
     p-value is the paired bootstrap's, ``(1 + #{BA* <= 0}) / (B + 1)``.
3. **Benjamini-Hochberg** over every pair tested in every analysis (q = 0.05 by default) decides
   which pairs are flagged (with BA above the practical threshold as well).
4. The **minimum detectable BA** of each pair: the amplification a one-sided test at the
   strictest BH level (q / m) would find with 80% power at this sample size (normal
   approximation of the two proportions).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from met_vision.fairness import bias

POWER = 0.8
_NORMAL = NormalDist()


@dataclass(frozen=True)
class PairCounts:
    """Per (group, label): objects of the group with label o, and all objects with label o."""

    in_group: NDArray[np.float64]  # (G, C)
    total: NDArray[np.float64]  # (C,): objects with label o in any group

    @classmethod
    def of(cls, labels: NDArray[np.generic], groups: NDArray[np.generic]) -> PairCounts:
        """Counts of ``labels`` (truth or predictions) among the group members."""
        counts = bias.cooccurrence(labels, groups)
        return cls(in_group=counts, total=counts.sum(axis=0))


def candidate_pairs(
    reference_bias: NDArray[np.float64], audited_support: NDArray[np.float64], min_support: int
) -> NDArray[np.bool_]:
    """The pairs to test, fixed before any resampling (see the module docstring)."""
    n_groups = reference_bias.shape[0]
    ref = np.nan_to_num(reference_bias, nan=0.0)
    # b_ref = 1 (every reference object of the label in this group) leaves no room to amplify
    return (ref > 1.0 / n_groups) & (ref < 1.0) & (audited_support >= min_support)


def fisher_greater(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """One-sided Fisher exact p-value of "k_a / n_a is greater than k_b / n_b"."""
    from scipy.stats import fisher_exact

    if n_a == 0 or n_b == 0:
        return 1.0
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def fisher_pvalues(
    predicted: PairCounts, reference: PairCounts, pairs: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Fisher p-value of every candidate pair (NaN elsewhere)."""
    out = np.full(pairs.shape, np.nan)
    for g, c in zip(*np.nonzero(pairs), strict=True):
        out[g, c] = fisher_greater(
            int(predicted.in_group[g, c]),
            int(predicted.total[c]),
            int(reference.in_group[g, c]),
            int(reference.total[c]),
        )
    return out


def bootstrap_pvalues(draws: NDArray[np.float64], pairs: NDArray[np.bool_]) -> NDArray[np.float64]:
    """``(1 + #{BA* <= 0}) / (B + 1)`` per candidate pair from ``(B, G, C)`` bootstrap draws."""
    valid = np.isfinite(draws)
    at_most_zero = (np.where(valid, draws, 0.0) <= 0) & valid
    n_valid = valid.sum(axis=0)
    p = (1 + at_most_zero.sum(axis=0)) / (n_valid + 1)
    return np.where(pairs & (n_valid > 0), p, np.nan)


def minimum_detectable(
    reference_bias: NDArray[np.float64],
    n_audited: NDArray[np.float64],
    n_reference: NDArray[np.float64] | None,
    level: float,
    power: float = POWER,
) -> NDArray[np.float64]:
    """The smallest BA detectable with ``power`` by a one-sided test at ``level`` (per pair);
    NaN where even the largest BA the pair allows (``1 - b_ref``) is out of reach.

    Args:
        reference_bias: ``b_ref`` per pair ``(G, C)``.
        n_audited: objects with label o in the audited truth ``(C,)`` (about the predicted).
        n_reference: objects with label o in the reference ``(C,)``; None when the reference
            is the audited truth itself (only the audited sample varies).
        level: the test level (BH's strictest step: q / number of pairs).
        power: the detection probability.
    """
    b = np.clip(np.nan_to_num(reference_bias, nan=0.5), 1e-6, 1 - 1e-6)
    variance = b * (1 - b) / np.maximum(n_audited, 1)[None, :]
    if n_reference is not None:
        variance = variance + b * (1 - b) / np.maximum(n_reference, 1)[None, :]
    z = _NORMAL.inv_cdf(1 - level) + _NORMAL.inv_cdf(power)
    detectable = z * np.sqrt(variance)
    # beyond 1 - b_ref nothing can be detected: the pair cannot amplify that much
    return np.where(detectable <= 1 - b, detectable, np.nan)


def benjamini_hochberg(pvalues: NDArray[np.float64], q: float = 0.05) -> NDArray[np.bool_]:
    """Which of ``pvalues`` (NaN: not tested) Benjamini-Hochberg rejects at FDR ``q``."""
    flat = np.asarray(pvalues, dtype=float).ravel()
    tested = np.flatnonzero(np.isfinite(flat))
    rejected = np.zeros(flat.shape, dtype=bool)
    m = len(tested)
    if m == 0:
        return rejected.reshape(np.shape(pvalues))
    order = tested[np.argsort(flat[tested], kind="stable")]
    thresholds = q * np.arange(1, m + 1) / m
    passing = np.flatnonzero(flat[order] <= thresholds)
    if len(passing):
        rejected[order[: passing[-1] + 1]] = True
    return rejected.reshape(np.shape(pvalues))


def bh_level(q: float, m: int) -> float:
    """The strictest BH step, q / m: what a lone discovery among m tests must reach."""
    return q / max(1, m)


def fixed_pair_ba(
    predicted_bias: NDArray[np.float64],
    reference_bias: NDArray[np.float64],
    pairs: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """``b_pred - b_ref`` on the fixed pairs, NaN elsewhere."""
    return np.where(pairs, predicted_bias - reference_bias, np.nan)


def table(
    matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]
) -> dict[str, dict[str, Any]]:
    return {
        r: dict(zip(cols, np.asarray(matrix[i]).tolist(), strict=True)) for i, r in enumerate(rows)
    }


def _bootstrap(
    y: np.ndarray,
    p: np.ndarray,
    g: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None,
    pairs: np.ndarray,
    *,
    n_boot: int,
    alpha: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_boot`` resampled fixed-pair BAs (the audited objects paired, the training reference
    resampled on its own) and their two-sided ``alpha`` percentile interval."""
    rng = np.random.default_rng(seed)

    def draw() -> np.ndarray:
        idx = rng.integers(0, len(y), len(y))
        if reference is None:
            ref = bias.bias_scores(y[idx], g[idx])
        else:
            ref_y, ref_g = reference
            jdx = rng.integers(0, len(ref_y), len(ref_y))
            ref = bias.bias_scores(ref_y[jdx], ref_g[jdx])
        return fixed_pair_ba(bias.bias_scores(p[idx], g[idx]), ref, pairs)

    draws = np.stack([draw() for _ in range(n_boot)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanpercentile(draws, 100 * alpha / 2, axis=0)
        high = np.nanpercentile(draws, 100 * (1 - alpha / 2), axis=0)
    return draws, low, high


def amplification_tests(
    y: np.ndarray,
    p: np.ndarray,
    g: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None,
    *,
    min_support: int,
    n_boot: int,
    alpha: float,
    seed: int,
    group_names: list[str],
    labels: list[str],
    testable: np.ndarray | None = None,
) -> dict[str, Any]:
    """Bias amplification on pairs fixed from the reference, its bootstrap and one test per pair.

    ``reference``: (truth, membership) of the reference objects; None: the audited truth.
    ``testable``: ``(C,)`` labels that may be tested (the model predicts them better than
    chance, ``fairness.decisions``); None: every label.
    """
    ref_y, ref_g = reference if reference is not None else (y, g)
    ref_bias = bias.bias_scores(ref_y, ref_g)
    pred_bias = bias.bias_scores(p, g)
    support = bias.cooccurrence(y, g)
    pairs = candidate_pairs(ref_bias, support, min_support)
    if testable is not None:
        pairs &= np.asarray(testable, dtype=bool)[None, :]
    per_pair = fixed_pair_ba(pred_bias, ref_bias, pairs)

    draws, low, high = _bootstrap(y, p, g, reference, pairs, n_boot=n_boot, alpha=alpha, seed=seed)
    if reference is not None:
        pvalues = fisher_pvalues(PairCounts.of(p, g), PairCounts.of(ref_y, ref_g), pairs)
    else:
        pvalues = bootstrap_pvalues(draws, pairs)
    counted = pairs.any(axis=0)
    value = float(np.nansum(per_pair, axis=0)[counted].mean()) if counted.any() else 0.0
    n_reference = bias.cooccurrence(ref_y, ref_g).sum(axis=0) if reference is not None else None
    tests = [
        {
            "group": group_names[j],
            "label": labels[c],
            "bias_amplification": float(per_pair[j, c]),
            "p_value": float(pvalues[j, c]),
            "ci": [float(low[j, c]), float(high[j, c])],
            "truth_bias": float(ref_bias[j, c]),
            "predicted_bias": float(pred_bias[j, c]),
            "support": int(support[j, c]),
            "n_audited": float(support[:, c].sum()),
            "n_reference": None if n_reference is None else float(n_reference[c]),
        }
        for j, c in zip(*np.nonzero(pairs), strict=True)
        if np.isfinite(per_pair[j, c]) and np.isfinite(pvalues[j, c])
    ]
    return {
        "bias_amplification": {
            "value": value,
            "per_pair": table(per_pair, group_names, labels),
            "ci_low": table(low, group_names, labels),
            "ci_high": table(high, group_names, labels),
            "p_value": table(pvalues, group_names, labels),
            "reference_bias": table(ref_bias, group_names, labels),
            "predicted_bias": table(pred_bias, group_names, labels),
        },
        "candidate_pairs": int(pairs.sum()),
        "tests": tests,
    }


def decide_flags(
    analyses: list[dict[str, Any]],
    *,
    fdr_q: float,
    ba_threshold: float,
    reference: str,
    split: str,
    n_boot: int,
) -> dict[str, Any]:
    """Benjamini-Hochberg over every pair tested in every analysis; sets each analysis' flags.

    Returns the statistics summary for the report (pairs tested, levels, detectable BA).
    """
    tests = [(a, t) for a in analyses for t in a.get("tests", [])]
    rejected = benjamini_hochberg(np.array([t["p_value"] for _, t in tests]), fdr_q)
    level = bh_level(fdr_q, len(tests))
    for analysis in analyses:
        analysis["flags"] = []
    mdes = []
    for (analysis, test), reject in zip(tests, rejected, strict=True):
        n_ref = test["n_reference"]
        mde = minimum_detectable(
            np.array([[test["truth_bias"]]]),
            np.array([test["n_audited"]]),
            None if n_ref is None else np.array([n_ref]),
            level,
        )
        test["minimum_detectable_ba"] = float(mde[0, 0])
        test["bh_rejected"] = bool(reject)
        mdes.append(test["minimum_detectable_ba"])
        if reject and test["bias_amplification"] > ba_threshold:
            analysis["flags"].append({"analysis": analysis["name"], **test})
    candidates = sum(a.get("candidate_pairs", 0) for a in analyses)
    finite = [m for m in mdes if np.isfinite(m)]
    return {
        "reference": "training split" if reference == "train" else "audited truth",
        "audited_split": _SPLIT_WORDS.get(split, split),
        "test": "one-sided Fisher exact test (predicted on the audited split against the "
        "training truth)"
        if reference == "train"
        else f"one-sided paired bootstrap ({n_boot} resamples)",
        "pairs_tested": len(tests),
        "pairs_untestable": candidates - len(tests),
        "fdr": f"Benjamini-Hochberg at q = {fdr_q} over all {len(tests)} pairs tested",
        "strictest_level": level,
        "power": POWER,
        "minimum_detectable_ba": {
            "min": float(np.min(finite)) if len(finite) else None,
            "median": float(np.median(finite)) if len(finite) else None,
            "pairs_beyond_reach": len(mdes) - len(finite),
        },
        "ba_threshold": ba_threshold,
    }


_SPLIT_WORDS = {
    "heldout": "held-out objects (validation + test)",
    "test": "test split",
    "val": "validation split",
    "train": "training split (not held out)",
    "all": "every split",
}
