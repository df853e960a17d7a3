"""The bias audit of one model (`run_audit`) and the side-by-side comparison of two
(`comparison`); `python -m met_vision.audit` is its command line and describes the analyses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from met_vision.fairness import decisions as audit_decisions
from met_vision.fairness import stats as audit_stats
from met_vision.fairness.analysis import analyse, overall_metrics, t_to_a_amplification
from met_vision.fairness.audit_data import (
    AuditOptions,
    collect,
    collect_reference,
    memberships,
    training_truth,
)
from met_vision.fairness.saliency import saliency
from met_vision.inference.predictor import InputError, LoadedModel


def _specs(
    names: list[str], audited: dict[str, tuple[np.ndarray, list[str]]], vocab: dict[str, str]
) -> list[tuple[str, np.ndarray, list[str], list[int], str]]:
    """(name, membership, group names, label indices, description) of the three analyses."""
    gender = [i for i, n in enumerate(names) if n in vocab]
    other = [i for i, n in enumerate(names) if n not in vocab]
    labels = {"depicted": other, "artist": list(range(len(names))), "background": gender}
    words = {
        "depicted": "gender groups from tags x the other labels",
        "artist": "artist/constituent gender x every label",
        "background": "warm background (border pixels) x the gender labels",
    }
    return [(n, *audited[n], labels[n], words[n]) for n in ("depicted", "artist", "background")]


def run_audit(loaded: LoadedModel, data_dir: str | Path, options: AuditOptions) -> dict[str, Any]:
    """The whole audit of one model as a JSON-ready dict (plus ``_data`` for plotting)."""
    if options.reference not in ("train", "audited"):
        raise InputError(f"--reference must be train or audited, not {options.reference!r}")
    if options.decisions not in audit_decisions.RULES:
        raise InputError(f"--decisions must be rate or model, not {options.decisions!r}")
    vocab = dict(options.vocab)
    data = collect(loaded, data_dir, options.split)
    audited = memberships(data.frame, data.warmth, vocab, options)
    ref_groups: dict[str, tuple[np.ndarray, list[str]]] = {}
    ref_truth = None
    if options.reference == "train":
        ref = collect_reference(loaded, data_dir, options)
        ref_truth, ref_groups = ref.truth, memberships(ref.frame, ref.warmth, vocab, options)
    accuracy = overall_metrics(data)  # of the model's own decisions, as predict makes them
    decided = audit_decisions.for_audit(
        data.probs,
        data.preds,
        data.truth,
        ref_truth if ref_truth is not None else training_truth(loaded, data_dir),
        rule=options.decisions,
        multiclass=loaded.task_type == "multiclass",
    )
    data.preds, data.predictive = decided.preds, decided.predictive
    specs = _specs(data.names, audited, vocab)
    analyses = [
        analyse(
            n,
            m,
            gn,
            li,
            data,
            options,
            d,
            None if ref_truth is None else (ref_truth, ref_groups[n][0]),
        )
        for n, m, gn, li, d in specs
    ]
    t_to_a = t_to_a_amplification(data, audited["depicted"][0], audited["depicted"][1], vocab)
    if t_to_a is not None:
        analyses[0].setdefault("directional_bias_amplification", {})["T->A"] = t_to_a
    statistics = audit_stats.decide_flags(
        analyses,
        fdr_q=options.fdr_q,
        ba_threshold=options.ba_threshold,
        reference=options.reference,
        split=options.split,
        n_boot=options.n_boot,
    )
    sal = saliency(loaded, data, [(n, m, gn) for n, m, gn, _, _ in specs], options)
    per_image = sal.pop("_per_image")
    report = {
        "model_id": loaded.model_id,
        "label_manifest_hash": loaded.manifest_hash,
        "checkpoint": str(loaded.ckpt_path),
        "split": options.split,
        "objects": len(data.frame),
        "reference_objects": len(ref_truth) if ref_truth is not None else len(data.frame),
        "statistics": statistics,
        "options": {k: v for k, v in options.__dict__.items() if k != "vocab"}
        | {"gender_vocab": vocab},
        "decisions": decided.describe(data.names),
        "accuracy": accuracy,
        "analyses": {a["name"]: a for a in analyses},
        "saliency": sal,
        "flags": [f for a in analyses for f in a.get("flags", [])],
    }
    report["_data"] = {"data": data, "per_image_border": per_image, "specs": specs}
    return report


def comparison(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side figures: accuracy, BA per analysis, the flagged pairs' BA in both models."""
    pairs = {(f["analysis"], f["group"], f["label"]) for f in current["flags"] + baseline["flags"]}

    def pair_value(report: dict[str, Any], key: tuple[str, str, str]) -> float | None:
        analysis = report["analyses"].get(key[0], {})
        value = (
            analysis.get("bias_amplification", {}).get("per_pair", {}).get(key[1], {}).get(key[2])
        )
        return None if value is None or not np.isfinite(value) else float(value)  # NaN: untested

    return {
        "baseline_model_id": baseline["model_id"],
        "model_id": current["model_id"],
        "accuracy": {"baseline": baseline["accuracy"], "model": current["accuracy"]},
        "bias_amplification": {
            name: {
                "baseline": baseline["analyses"][name].get("bias_amplification", {}).get("value"),
                "model": current["analyses"][name].get("bias_amplification", {}).get("value"),
            }
            for name in current["analyses"]
        },
        "flagged_pairs": [
            {
                "analysis": a,
                "group": g,
                "label": lab,
                "baseline": pair_value(baseline, (a, g, lab)),
                "model": pair_value(current, (a, g, lab)),
            }
            for a, g, lab in sorted(pairs)
        ],
        "flags": {"baseline": len(baseline["flags"]), "model": len(current["flags"])},
    }
