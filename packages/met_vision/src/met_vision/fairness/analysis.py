"""The figures of the bias audit: accuracy overall, and every figure of one (groups x labels)
analysis with its pair tests (see `met_vision.fairness.stats`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from met_vision.fairness import bias, groups
from met_vision.fairness import stats as audit_stats
from met_vision.fairness.audit_data import AuditData, AuditOptions
from met_vision.fairness.stats import table
from met_vision.trainers.metrics import f1_micro, macro_f1, map_macro


def overall_metrics(data: AuditData) -> dict[str, float]:
    """Accuracy figures reported beside the bias figures."""
    y, p = data.truth, data.preds
    out = {
        "f1_micro": f1_micro(torch.as_tensor(p), torch.as_tensor(y)),
        "f1_macro": macro_f1(torch.as_tensor(p), torch.as_tensor(y)),  # the one macro-F1
        "exact_match": float((y == p).all(axis=1).mean()),
    }
    if (y.sum(axis=0) > 0).any():  # the one macro mAP (classes present in the truth)
        out["map_macro"] = map_macro(torch.as_tensor(data.probs), torch.as_tensor(y))
    return out


def _image_stats(
    data: AuditData, g: np.ndarray, group_names: list[str], warm_threshold: float
) -> dict[str, dict[str, float | None]]:
    """Mean warmth, warm share and mean brightness of each group's images."""
    return {
        gname: {
            "warmth_mean": float(data.warmth[g[:, j]].mean()) if g[:, j].any() else None,
            "warm_share": float((data.warmth[g[:, j]] > warm_threshold).mean())
            if g[:, j].any()
            else None,
            "brightness_mean": float(data.brightness[g[:, j]].mean()) if g[:, j].any() else None,
        }
        for j, gname in enumerate(group_names)
    }


def _performance_by_group(
    y: np.ndarray, p: np.ndarray, g: np.ndarray, group_names: list[str], labels: list[str]
) -> dict[str, Any]:
    """Precision, recall and F1 per (group, label), their support, and the gap and ratio
    between groups per label."""
    metrics = bias.group_metrics(y, p, g)
    measures = ("precision", "recall", "f1")
    return {
        "by_group": {m: table(getattr(metrics, m), group_names, labels) for m in measures},
        "support": table(metrics.support, group_names, labels),
        "difference": {
            m: dict(zip(labels, metrics.difference(m).tolist(), strict=True)) for m in measures
        },
        "ratio": {m: dict(zip(labels, metrics.ratio(m).tolist(), strict=True)) for m in measures},
    }


def analyse(
    name: str,
    membership: np.ndarray,
    group_names: list[str],
    label_idx: list[int],
    data: AuditData,
    options: AuditOptions,
    description: str,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every figure of one (groups x labels) analysis and its pair tests (flags: `decide_flags`).

    ``reference``: (truth over every label, group membership) of the reference objects (the
    training split); None takes the reference bias from the audited truth.
    """
    labels = [data.names[i] for i in label_idx]
    if reference is not None:
        reference = (reference[0][:, label_idx], reference[1])
    y = data.truth[:, label_idx]
    p = data.preds[:, label_idx]
    g = membership
    result: dict[str, Any] = {
        "name": name,
        "description": description,
        "groups": group_names,
        "labels": labels,
        "group_sizes": dict(zip(group_names, g.sum(axis=0).tolist(), strict=True)),
        "objects_in_no_group": int((~g.any(axis=1)).sum()),
    }
    if not labels or g.sum() == 0:
        result.update(skipped="no labels or no group members", flags=[])
        return result
    # distributions
    result["label_counts_truth"] = table(bias.cooccurrence(y, g), group_names, labels)
    result["label_counts_predicted"] = table(bias.cooccurrence(p, g), group_names, labels)
    result["image_stats"] = _image_stats(data, g, group_names, options.warm_threshold)
    result.update(_performance_by_group(y, p, g, group_names, labels))
    # co-occurrence: P(label | group)
    result["cooccurrence_truth"] = table(bias.conditional_rates(y, g), group_names, labels)
    result["cooccurrence_predicted"] = table(bias.conditional_rates(p, g), group_names, labels)
    result.update(
        audit_stats.amplification_tests(
            y,
            p,
            g,
            reference,
            min_support=options.min_support,
            n_boot=options.n_boot,
            alpha=options.alpha,
            seed=options.seed,
            group_names=group_names,
            labels=labels,
            testable=None if data.predictive is None else data.predictive[label_idx],
        )
    )
    dba = bias.directional_bias_amplification(g, y, p, "A->T")
    result["directional_bias_amplification"] = {
        "A->T": {"value": dba.value, "per_pair": table(dba.per_pair, group_names, labels)},
    }
    return result


def t_to_a_amplification(
    data: AuditData, depicted: np.ndarray, names: list[str], vocab: dict[str, str]
) -> Any:
    """T->A directional BA: the model's own gender labels as predicted attributes."""
    other = [i for i, n in enumerate(data.names) if n not in vocab]
    if not other or not any(n in vocab for n in data.names):
        return None
    predicted_terms = [[data.names[i] for i in np.flatnonzero(row)] for row in data.preds]
    predicted_groups, _ = groups.depicted_membership(predicted_terms, vocab)
    dba = bias.directional_bias_amplification(
        depicted, data.truth[:, other], predicted_groups, "T->A"
    )
    return {
        "value": dba.value,
        "per_pair": table(dba.per_pair, names, [data.names[i] for i in other]),
    }
