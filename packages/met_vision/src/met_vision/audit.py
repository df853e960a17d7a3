"""`python -m met_vision.audit`: the gender-label bias audit of a trained model.

    python -m met_vision.audit --ckpt best.ckpt --data-dir data --out report/
    python -m met_vision.audit --ckpt mitigated.ckpt --baseline baseline.ckpt --out report/

Three analyses, each of groups against labels, on the objects of one split:

- ``depicted``: gender groups from tags (``--gender-vocab``, default Women/Girls = female,
  Men/Boys = male) against every other label;
- ``artist``: the artist's / constituents' gender (female / unspecified) against every label;
- ``background``: an image attribute (warm background, from the border pixels) against the
  gender labels the model predicts: does the model tie "Women" to a colour?

For each: group sizes, label and image distributions, precision/recall/F1 per group and label
with the gaps (difference, ratio), label co-occurrence per group in the truth and in the
predictions, bias amplification (Zhao et al. 2017; the reference bias from the training split by
default) with a bootstrap interval, directional bias amplification (Wang & Russakovsky 2021), and
Grad-CAM border-against-centre saliency. The audited objects are the held-out ones (validation +
test) by default. The pairs tested are fixed from the reference before any resampling, each gets
a one-sided test, and a pair is *flagged* when Benjamini-Hochberg over every pair tested
(``--fdr``, q = 0.05) rejects it and its BA exceeds ``--ba-threshold`` (see
:mod:`met_vision.fairness.stats`). Writes ``report.md``, PNG plots and ``audit.json`` (every number
shown).

This module computes the figures and holds the command line; :mod:`met_vision.fairness.report`
renders them (its ``write_report`` and ``plot_*`` are re-exported here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from met_vision.fairness import bias, groups
from met_vision.fairness import decisions as audit_decisions
from met_vision.fairness import stats as audit_stats
from met_vision.fairness.plots import plot_analysis, plot_comparison, plot_saliency
from met_vision.fairness.report import write_report
from met_vision.fairness.stats import table
from met_vision.inference.mirror import mirror_frame
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import (
    InputError,
    LoadedModel,
    decisions,
    load_model,
    predict_paths,
    targets_matrix,
)
from met_vision.trainers.metrics import macro_f1

__all__ = [
    "AuditData",
    "AuditOptions",
    "analyse",
    "build_parser",
    "collect",
    "comparison",
    "main",
    "overall_metrics",
    "plot_analysis",
    "plot_comparison",
    "plot_saliency",
    "run_audit",
    "saliency",
    "write_report",
]

PROG = "met_vision.audit"


@dataclass(frozen=True)
class AuditOptions:
    """Knobs of the audit (see the command-line help)."""

    split: str = "heldout"
    reference: str = "train"  # where the reference bias comes from: "train" or "audited"
    decisions: str = "rate"  # what counts as predicted: "rate" or "model" (fairness.decisions)
    vocab: tuple[tuple[str, str], ...] = tuple(groups.DEFAULT_GENDER_VOCAB.items())
    ba_threshold: float = 0.02
    min_support: int = 10
    n_boot: int = 1000
    alpha: float = 0.05  # of the two-sided bootstrap interval shown beside each BA
    fdr_q: float = 0.05  # Benjamini-Hochberg false-discovery rate over every pair tested
    reference_max: int = 20000  # training objects sampled for the reference (image statistics)
    warm_threshold: float = groups.WARM_THRESHOLD
    cam_samples: int = 120
    cam_method: str = "gradcam"
    target_layer: str | None = None
    border: float = 0.15
    seed: int = 0


@dataclass
class AuditData:
    """What the model saw and said on the audited objects."""

    frame: pd.DataFrame
    names: list[str]
    truth: np.ndarray  # (n, C) bool
    probs: np.ndarray  # (n, C)
    preds: np.ndarray  # (n, C) bool
    warmth: np.ndarray  # (n,)
    brightness: np.ndarray  # (n,)
    predictive: np.ndarray | None = None  # (C,) labels tested for amplification (skill test)


def _in_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    if split == "heldout":
        frame = frame[frame["split"].isin(["val", "test"])]
    elif split != "all":
        frame = frame[frame["split"] == split]
    return frame.reset_index(drop=True)


def collect(loaded: LoadedModel, data_dir: str | Path, split: str) -> AuditData:
    """Predictions, truth and image statistics of one split (``heldout`` = val + test)."""
    frame = _in_split(mirror_frame(loaded, data_dir), split)
    if frame.empty:
        raise InputError(f"no labelled objects with images in split {split!r} of {data_dir}")
    ok, probs, _errors = predict_paths(loaded, list(frame["path"]))
    frame, probs = frame[ok].reset_index(drop=True), probs[ok]
    stats = [groups.image_stats(str(p)) for p in frame["path"]]
    return AuditData(
        frame=frame,
        names=list(loaded.names),
        truth=targets_matrix(frame["target_names"], loaded.names),
        probs=probs,
        preds=decisions(loaded, probs),
        warmth=np.array([s["warmth"] for s in stats]),
        brightness=np.array([s["brightness"] for s in stats]),
    )


@dataclass
class Reference:
    """The labelled objects the reference bias is counted on (Zhao et al.: the training set)."""

    frame: pd.DataFrame
    truth: np.ndarray  # (n, C) bool
    warmth: np.ndarray  # (n,)


def collect_reference(
    loaded: LoadedModel, data_dir: str | Path, options: AuditOptions
) -> Reference:
    """The training split's truth and image statistics (a seeded sample above reference_max)."""
    frame = _in_split(mirror_frame(loaded, data_dir), "train")
    if frame.empty:
        raise InputError(f"no labelled training objects in {data_dir} for the reference bias")
    if len(frame) > options.reference_max:
        frame = frame.sample(options.reference_max, random_state=options.seed)
        frame = frame.reset_index(drop=True)
    warmth = np.array([groups.image_stats(str(p))["warmth"] for p in frame["path"]])
    return Reference(frame, targets_matrix(frame["target_names"], loaded.names), warmth)


def training_truth(loaded: LoadedModel, data_dir: str | Path) -> np.ndarray:
    """The training split's labels (for the training rates of the audit's decisions)."""
    frame = _in_split(mirror_frame(loaded, data_dir), "train")
    return targets_matrix(frame["target_names"], loaded.names)


def overall_metrics(data: AuditData) -> dict[str, float]:
    """Accuracy figures reported beside the bias figures."""
    from sklearn.metrics import average_precision_score, f1_score

    y, p = data.truth, data.preds
    present = y.sum(axis=0) > 0
    out = {
        "f1_micro": float(f1_score(y, p, average="micro", zero_division=0)),
        "f1_macro": macro_f1(torch.as_tensor(p), torch.as_tensor(y)),  # the one macro-F1
        "exact_match": float((y == p).all(axis=1).mean()),
    }
    if present.any():
        out["map_macro"] = float(
            average_precision_score(y[:, present], data.probs[:, present], average="macro")
        )
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


def saliency(
    loaded: LoadedModel,
    data: AuditData,
    analyses: list[tuple[str, np.ndarray, list[str]]],
    options: AuditOptions,
) -> dict[str, Any]:
    """Grad-CAM border/centre shares of the top-1 label on a sample of images, per group."""
    from met_vision.explain.cam import compute_cams, resolve_target_layer
    from met_vision.inference.predictor import iter_batches

    rng = np.random.default_rng(options.seed)
    n = len(data.frame)
    chosen = np.sort(rng.choice(n, size=min(n, options.cam_samples), replace=False))
    layer = resolve_target_layer(
        loaded.network, options.target_layer, input_size=loaded.data_config.input_size
    )
    shares = np.full(n, np.nan)
    ratios = np.full(n, np.nan)
    paths = [str(data.frame["path"][i]) for i in chosen]
    for positions, batch, _ in iter_batches(paths, loaded, 32):
        if not positions:
            continue
        rows = chosen[positions]
        top = data.probs[rows].argmax(axis=1)
        cams = compute_cams(
            loaded.network, batch, top.tolist(), method=options.cam_method, target=layer
        )
        stats = bias.saliency_border_stats(cams, options.border)
        shares[rows] = stats["border_share"]
        ratios[rows] = stats["border_to_centre"]
    area = float(bias.border_mask(64, 64, options.border).mean())
    out: dict[str, Any] = {
        "method": options.cam_method,
        "target_layer": layer.name,
        "images": len(chosen),
        "border_fraction": options.border,
        "border_area_share": area,
        "overall": {
            "border_share": float(np.nanmean(shares)),
            "border_to_centre": float(np.nanmean(ratios)),
        },
        "by_analysis": {},
    }
    for name, membership, names in analyses:
        per_group = {}
        for j, gname in enumerate(names):
            mask = membership[:, j] & np.isfinite(shares)
            per_group[gname] = {
                "images": int(mask.sum()),
                "border_share": float(shares[mask].mean()) if mask.any() else None,
                "border_to_centre": float(ratios[mask].mean()) if mask.any() else None,
            }
        out["by_analysis"][name] = per_group
    out["_per_image"] = shares
    return out


def memberships(
    frame: pd.DataFrame, warmth: np.ndarray, vocab: dict[str, str], options: AuditOptions
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Group membership of every analysis for the objects of ``frame``."""
    return {
        "depicted": groups.depicted_membership(frame["tags"], vocab),
        "artist": groups.artist_membership(
            frame["artist_gender"].fillna(""), frame["constituent_genders"]
        ),
        "background": groups.warm_membership(warmth, options.warm_threshold),
    }


def _specs(
    names: list[str], audited: dict[str, tuple[np.ndarray, list[str]]], vocab: dict[str, str]
) -> list[tuple[str, np.ndarray, list[str], list[int], str]]:
    gender = [i for i, n in enumerate(names) if n in vocab]
    other = [i for i, n in enumerate(names) if n not in vocab]
    labels = {"depicted": other, "artist": list(range(len(names))), "background": gender}
    words = {
        "depicted": "gender groups from tags x the other labels",
        "artist": "artist/constituent gender x every label",
        "background": "warm background (border pixels) x the gender labels",
    }
    return [(n, *audited[n], labels[n], words[n]) for n in ("depicted", "artist", "background")]


def _t_to_a(data: AuditData, depicted: np.ndarray, names: list[str], vocab: dict[str, str]) -> Any:
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
    t_to_a = _t_to_a(data, audited["depicted"][0], audited["depicted"][1], vocab)
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Gender-label bias audit of a trained model."
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--split",
        default=AuditOptions.split,
        choices=("train", "val", "test", "heldout", "all"),
        help="the audited objects (default heldout: validation + test)",
    )
    parser.add_argument(
        "--reference",
        default=AuditOptions.reference,
        choices=("train", "audited"),
        help="reference bias from the training split (Zhao et al.) or the audited truth",
    )
    parser.add_argument(
        "--decisions",
        default=AuditOptions.decisions,
        choices=("rate", "model"),
        help="multilabel: predict each label at its training rate (Wang & Russakovsky 2021; "
        "default) or use the checkpoint's tuned thresholds",
    )
    parser.add_argument(
        "--fdr", type=float, default=AuditOptions.fdr_q, help="Benjamini-Hochberg q"
    )
    parser.add_argument("--baseline", help="another checkpoint to compare side by side")
    parser.add_argument(
        "--gender-vocab", help="e.g. 'Women=female,Girls=female,Men=male,Boys=male'"
    )
    parser.add_argument("--ba-threshold", type=float, default=AuditOptions.ba_threshold)
    parser.add_argument("--min-support", type=int, default=AuditOptions.min_support)
    parser.add_argument("--bootstrap", type=int, default=AuditOptions.n_boot, help="resamples")
    parser.add_argument("--warm-threshold", type=float, default=AuditOptions.warm_threshold)
    parser.add_argument("--cam-samples", type=int, default=AuditOptions.cam_samples)
    parser.add_argument("--cam-method", default="gradcam")
    parser.add_argument("--target-layer", help="CAM layer (default: per backbone)")
    parser.add_argument("--seed", type=int, default=0)
    add_inference_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        vocab = groups.parse_gender_vocab(args.gender_vocab)
        options = AuditOptions(
            split=args.split,
            reference=args.reference,
            decisions=args.decisions,
            fdr_q=args.fdr,
            vocab=tuple(vocab.items()),
            ba_threshold=args.ba_threshold,
            min_support=args.min_support,
            n_boot=args.bootstrap,
            warm_threshold=args.warm_threshold,
            cam_samples=args.cam_samples,
            cam_method=args.cam_method,
            target_layer=args.target_layer,
            seed=args.seed,
        )
        device = {"device": args.device, "num_workers": args.num_workers}
        report = run_audit(load_model(args.ckpt, **device), args.data_dir, options)
        baseline = None
        if args.baseline:
            baseline = run_audit(load_model(args.baseline, **device), args.data_dir, options)
            report["comparison"] = comparison(report, baseline)
        path = write_report(report, args.out, baseline)
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    stats = report["statistics"]
    print(
        f"{len(report['flags'])} flagged pair(s) of {stats['pairs_tested']} tested "
        f"({stats['fdr']}); report in {path}"
    )
    for flag in report["flags"]:
        print(
            f"FLAG {flag['analysis']}: {flag['group']} / {flag['label']}: "
            f"BA {flag['bias_amplification']:+.3f} (CI {flag['ci'][0]:+.3f} .. "
            f"{flag['ci'][1]:+.3f}), p {flag['p_value']:.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
