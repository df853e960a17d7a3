"""Which labels the audit counts as *predicted*: the decision rule behind every bias figure.

Bias amplification (Zhao et al. 2017) compares the group shares of the objects *predicted* o
with those of the objects *labelled* o, so it depends on where a multilabel model's scores are
cut. The checkpoint's own thresholds are tuned for F1 on validation; for a label the model can
only guess at from a proxy (a background tint, say), F1 tuning lowers the threshold to win
recall, the label is then predicted for more objects than carry it, and the extra predictions
dilute exactly the correlation the audit looks for. Measured on the planted collection of the
tests (Women marked only by a warm tint): the tuned threshold 0.20 predicted Women for 225 of
888 test objects (174 carry it), warm share 0.80 against 0.83 in the truth, so no
amplification; at the rate of the training split the model's decisions are 0.92 warm.

So by default (``rate``) the audit follows Wang & Russakovsky (2021, "Directional Bias
Amplification", section on thresholds): each label is predicted for as many audited objects as
its rate in the training split says, the highest-scoring ones. The audit then measures how the
model *ranks* objects, not how a threshold was tuned. ``model`` uses the checkpoint's own
decisions instead (what ``met_vision.predict`` outputs). Multiclass models always use their
argmax, which is the decision they make.

Only labels the model *ranks* better than chance are tested (``predictive_labels``): a label
whose audited scores do not separate its carriers from the rest (one-sided Mann-Whitney test of
AUC > 0.5 at ``SKILL_LEVEL``) has no learned decision to amplify, so any cut through its scores
picks objects by noise, and a "bias" among them is noise too. Such labels are listed as not
predictive in the report instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

RULES = ("rate", "model")
SKILL_LEVEL = 0.05  # one-sided Mann-Whitney p-value below which a label counts as predicted


@dataclass(frozen=True)
class AuditDecisions:
    """The audited objects' predictions and the rule that made them."""

    preds: NDArray[np.bool_]  # (n, C)
    rule: str
    thresholds: NDArray[np.float64] | None  # (C,) score cut per label (``rate`` only)
    rates: NDArray[np.float64] | None  # (C,) the training rates the cuts follow
    predictive: NDArray[np.bool_]  # (C,) labels the model ranks better than chance
    auc: NDArray[np.float64]  # (C,) their ROC AUC on the audited objects (NaN: one class only)

    def describe(self, labels: list[str]) -> dict[str, Any]:
        """JSON-ready: the rule in words, and the cut and rate per label."""
        words = {
            "rate": "each label predicted for the highest-scoring audited objects, as many as "
            "its rate in the training split (Wang & Russakovsky 2021)",
            "model": "the checkpoint's own decisions (its tuned thresholds, or argmax)",
            "argmax": "the model's argmax (multiclass)",
        }
        per_label: dict[str, dict[str, Any]] = {
            name: {"auc": float(self.auc[c]), "predictive": bool(self.predictive[c])}
            for c, name in enumerate(labels)
        }
        if self.thresholds is not None and self.rates is not None:
            for c, name in enumerate(labels):
                per_label[name] |= {
                    "threshold": float(self.thresholds[c]),
                    "training_rate": float(self.rates[c]),
                }
        return {
            "rule": self.rule,
            "description": words[self.rule],
            "skill_test": f"one-sided Mann-Whitney AUC > 0.5 at p < {SKILL_LEVEL}",
            "not_predictive": [n for c, n in enumerate(labels) if not self.predictive[c]],
            "per_label": per_label,
        }


def rate_matched(
    probs: NDArray[np.floating], rates: NDArray[np.floating]
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Predict label c for the ``round(n * rates[c])`` highest-scoring objects.

    Ties at the cut are broken by object order (stable), so the count is exact. Returns the
    decisions ``(n, C)`` and the score of the last object predicted per label (``inf`` when
    none is).
    """
    n, n_labels = probs.shape
    preds = np.zeros((n, n_labels), dtype=bool)
    cuts = np.full(n_labels, np.inf)
    wanted = np.clip(np.rint(n * np.asarray(rates, dtype=float)), 0, n).astype(int)
    for c in range(n_labels):
        k = int(wanted[c])
        if k == 0:
            continue
        order = np.argsort(-probs[:, c], kind="stable")[:k]
        preds[order, c] = True
        cuts[c] = float(probs[order[-1], c])
    return preds, cuts


def predictive_labels(
    probs: NDArray[np.floating], truth: NDArray[np.bool_], level: float = SKILL_LEVEL
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Which labels' scores rank their carriers above the rest (one-sided Mann-Whitney at
    ``level``), and the ROC AUC of each (NaN where the audited objects hold one class only)."""
    from scipy.stats import mannwhitneyu

    n_labels = probs.shape[1]
    predictive = np.zeros(n_labels, dtype=bool)
    auc = np.full(n_labels, np.nan)
    for c in range(n_labels):
        positive, negative = probs[truth[:, c], c], probs[~truth[:, c], c]
        if len(positive) == 0 or len(negative) == 0:
            continue
        test = mannwhitneyu(positive, negative, alternative="greater")
        auc[c] = float(test.statistic) / (len(positive) * len(negative))
        predictive[c] = bool(test.pvalue < level)
    return predictive, auc


def for_audit(
    probs: NDArray[np.floating],
    model_preds: NDArray[np.bool_],
    truth: NDArray[np.bool_],
    training_truth: NDArray[np.bool_],
    *,
    rule: str,
    multiclass: bool,
) -> AuditDecisions:
    """The audit's decisions on the audited objects under ``rule`` (see the module docstring).

    ``truth``: the audited objects' labels (for the skill test); ``training_truth``: the
    training split's (for the rates).
    """
    if rule not in RULES:
        raise ValueError(f"decision rule must be one of {', '.join(RULES)}, not {rule!r}")
    predictive, auc = predictive_labels(probs, truth)
    if multiclass:
        return AuditDecisions(model_preds, "argmax", None, None, predictive, auc)
    if rule == "model" or len(training_truth) == 0:
        return AuditDecisions(model_preds, "model", None, None, predictive, auc)
    rates = np.asarray(training_truth, dtype=float).mean(axis=0)
    preds, cuts = rate_matched(probs, rates)
    return AuditDecisions(preds, "rate", cuts, rates, predictive, auc)
