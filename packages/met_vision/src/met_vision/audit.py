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
predictions, bias amplification (Zhao et al. 2017) with a paired bootstrap interval, directional
bias amplification (Wang & Russakovsky 2021), and Grad-CAM border-against-centre saliency.
A (group, label) pair is *flagged* when its bias amplification exceeds ``--ba-threshold``, its
one-sided 95% bootstrap lower bound is above zero, and the truth has at least ``--min-support``
objects of the pair. Writes ``report.md``, PNG plots and ``audit.json`` (every number shown).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from met_vision import bias, groups
from met_vision.inference import (
    InputError,
    LoadedModel,
    decisions,
    load_model,
    mirror_frame,
    predict_paths,
    targets_matrix,
)

PROG = "met_vision.audit"


@dataclass(frozen=True)
class AuditOptions:
    """Knobs of the audit (see the command-line help)."""

    split: str = "test"
    vocab: tuple[tuple[str, str], ...] = tuple(groups.DEFAULT_GENDER_VOCAB.items())
    ba_threshold: float = 0.02
    min_support: int = 10
    n_boot: int = 300
    alpha: float = 0.05  # one-sided: the flag needs the alpha-quantile of the bootstrap > 0
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


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return _nan_to_none(value.tolist())
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def collect(loaded: LoadedModel, data_dir: str | Path, split: str) -> AuditData:
    """Predictions, truth and image statistics of one split (``heldout`` = val + test)."""
    frame = mirror_frame(loaded, data_dir)
    if split == "heldout":
        frame = frame[frame["split"].isin(["val", "test"])]
    elif split != "all":
        frame = frame[frame["split"] == split]
    frame = frame.reset_index(drop=True)
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


def overall_metrics(data: AuditData) -> dict[str, float]:
    """Accuracy figures reported beside the bias figures."""
    from sklearn.metrics import average_precision_score, f1_score

    y, p = data.truth, data.preds
    present = y.sum(axis=0) > 0
    out = {
        "f1_micro": float(f1_score(y, p, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y[:, present], p[:, present], average="macro", zero_division=0)),
        "exact_match": float((y == p).all(axis=1).mean()),
    }
    if present.any():
        out["map_macro"] = float(
            average_precision_score(y[:, present], data.probs[:, present], average="macro")
        )
    return out


def analyse(
    name: str,
    membership: np.ndarray,
    group_names: list[str],
    label_idx: list[int],
    data: AuditData,
    options: AuditOptions,
    description: str,
) -> dict[str, Any]:
    """Every figure of one (groups x labels) analysis, and its flags."""
    labels = [data.names[i] for i in label_idx]
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
    result["label_counts_truth"] = _table(bias.cooccurrence(y, g), group_names, labels)
    result["label_counts_predicted"] = _table(bias.cooccurrence(p, g), group_names, labels)
    result["image_stats"] = {
        gname: {
            "warmth_mean": float(data.warmth[g[:, j]].mean()) if g[:, j].any() else None,
            "warm_share": float((data.warmth[g[:, j]] > options.warm_threshold).mean())
            if g[:, j].any()
            else None,
            "brightness_mean": float(data.brightness[g[:, j]].mean()) if g[:, j].any() else None,
        }
        for j, gname in enumerate(group_names)
    }
    # performance by group
    metrics = bias.group_metrics(y, p, g)
    result["by_group"] = {
        m: _table(getattr(metrics, m), group_names, labels) for m in ("precision", "recall", "f1")
    }
    result["support"] = _table(metrics.support, group_names, labels)
    result["difference"] = {
        m: dict(zip(labels, metrics.difference(m).tolist(), strict=True))
        for m in ("precision", "recall", "f1")
    }
    result["ratio"] = {
        m: dict(zip(labels, metrics.ratio(m).tolist(), strict=True))
        for m in ("precision", "recall", "f1")
    }
    # co-occurrence: P(label | group)
    result["cooccurrence_truth"] = _table(bias.conditional_rates(y, g), group_names, labels)
    result["cooccurrence_predicted"] = _table(bias.conditional_rates(p, g), group_names, labels)
    # bias amplification with a paired bootstrap
    ba = bias.bias_amplification(y, g, p, g)

    def ba_of(idx: np.ndarray) -> np.ndarray:
        return bias.bias_amplification(y[idx], g[idx], p[idx], g[idx]).per_pair

    low, high = bias.bootstrap_ci(
        ba_of, len(y), n_boot=options.n_boot, alpha=2 * options.alpha, seed=options.seed
    )
    dba = bias.directional_bias_amplification(g, y, p, "A->T")
    result["bias_amplification"] = {
        "value": ba.value,
        "per_pair": _table(ba.per_pair, group_names, labels),
        "ci_low": _table(low, group_names, labels),
        "ci_high": _table(high, group_names, labels),
        "reference_bias": _table(ba.reference_bias, group_names, labels),
        "predicted_bias": _table(ba.predicted_bias, group_names, labels),
    }
    result["directional_bias_amplification"] = {
        "A->T": {"value": dba.value, "per_pair": _table(dba.per_pair, group_names, labels)},
    }
    counts = bias.cooccurrence(y, g)
    flags = []
    for j, gname in enumerate(group_names):
        for c, label in enumerate(labels):
            value = ba.per_pair[j, c]
            if (
                np.isfinite(value)
                and value > options.ba_threshold
                and np.isfinite(low[j, c])
                and low[j, c] > 0
                and counts[j, c] >= options.min_support
            ):
                flags.append(
                    {
                        "analysis": name,
                        "group": gname,
                        "label": label,
                        "bias_amplification": float(value),
                        "ci": [float(low[j, c]), float(high[j, c])],
                        "truth_bias": float(ba.reference_bias[j, c]),
                        "predicted_bias": float(ba.predicted_bias[j, c]),
                        "support": int(counts[j, c]),
                    }
                )
    result["flags"] = flags
    return result


def _table(
    matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]
) -> dict[str, dict[str, Any]]:
    return {
        r: dict(zip(cols, np.asarray(matrix[i]).tolist(), strict=True)) for i, r in enumerate(rows)
    }


def saliency(
    loaded: LoadedModel,
    data: AuditData,
    analyses: list[tuple[str, np.ndarray, list[str]]],
    options: AuditOptions,
) -> dict[str, Any]:
    """Grad-CAM border/centre shares of the top-1 label on a sample of images, per group."""
    from met_vision.cam import compute_cams, resolve_target_layer
    from met_vision.inference import iter_batches

    rng = np.random.default_rng(options.seed)
    n = len(data.frame)
    chosen = np.sort(rng.choice(n, size=min(n, options.cam_samples), replace=False))
    layer = resolve_target_layer(loaded.network, options.target_layer)
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


def run_audit(loaded: LoadedModel, data_dir: str | Path, options: AuditOptions) -> dict[str, Any]:
    """The whole audit of one model as a JSON-ready dict (plus ``_data`` for plotting)."""
    vocab = dict(options.vocab)
    data = collect(loaded, data_dir, options.split)
    frame = data.frame
    gender_terms = set(vocab)
    gender_labels = [i for i, n in enumerate(data.names) if n in gender_terms]
    other_labels = [i for i, n in enumerate(data.names) if n not in gender_terms]
    depicted, depicted_names = groups.depicted_membership(frame["tags"], vocab)
    artist, artist_names = groups.artist_membership(
        frame["artist_gender"].fillna(""), frame["constituent_genders"]
    )
    warm, warm_names = groups.warm_membership(data.warmth, options.warm_threshold)
    specs = [
        (
            "depicted",
            depicted,
            depicted_names,
            other_labels,
            "gender groups from tags x the other labels",
        ),
        (
            "artist",
            artist,
            artist_names,
            list(range(len(data.names))),
            "artist/constituent gender x every label",
        ),
        (
            "background",
            warm,
            warm_names,
            gender_labels,
            "warm background (border pixels) x the gender labels",
        ),
    ]
    analyses = [analyse(n, m, gn, li, data, options, d) for n, m, gn, li, d in specs]
    if gender_labels:
        # T->A: the model's own gender labels as predicted attributes (depicted groups)
        predicted_terms = [[data.names[i] for i in np.flatnonzero(row)] for row in data.preds]
        predicted_groups, _ = groups.depicted_membership(predicted_terms, vocab)
        if other_labels:
            dba = bias.directional_bias_amplification(
                depicted, data.truth[:, other_labels], predicted_groups, "T->A"
            )
            analyses[0].setdefault("directional_bias_amplification", {})["T->A"] = {
                "value": dba.value,
                "per_pair": _table(
                    dba.per_pair, depicted_names, [data.names[i] for i in other_labels]
                ),
            }
    sal = saliency(loaded, data, [(n, m, gn) for n, m, gn, _, _ in specs], options)
    per_image = sal.pop("_per_image")
    report = {
        "model_id": loaded.model_id,
        "label_manifest_hash": loaded.manifest_hash,
        "checkpoint": str(loaded.ckpt_path),
        "split": options.split,
        "objects": len(frame),
        "options": {k: v for k, v in options.__dict__.items() if k != "vocab"}
        | {"gender_vocab": vocab},
        "accuracy": overall_metrics(data),
        "analyses": {a["name"]: a for a in analyses},
        "saliency": sal,
        "flags": [f for a in analyses for f in a.get("flags", [])],
    }
    report["_data"] = {"data": data, "per_image_border": per_image, "specs": specs}
    return report


# --- report -----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_analysis(analysis: dict[str, Any], out: Path) -> list[str]:
    """Co-occurrence heat maps, BA bars with intervals and F1 per group; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "bias_amplification" not in analysis:
        return []
    name, group_names, labels = analysis["name"], analysis["groups"], analysis["labels"]
    files = []
    fig, axes = plt.subplots(
        1, 2, figsize=(max(6, 0.6 * len(labels) * 2 + 2), 1.2 + 0.5 * len(group_names))
    )
    for ax, key, title in zip(
        axes,
        ("cooccurrence_truth", "cooccurrence_predicted"),
        ("truth", "predictions"),
        strict=True,
    ):
        matrix = np.array(
            [[np.nan if v is None else v for v in analysis[key][g].values()] for g in group_names],
            dtype=float,
        )
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(group_names)), group_names, fontsize=7)
        ax.set_title(f"P(label | group), {title}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8)
    files.append(f"{name}_cooccurrence.png")
    fig.savefig(out / files[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)

    ba = analysis["bias_amplification"]
    pairs = [
        (g, lab, ba["per_pair"][g][lab], ba["ci_low"][g][lab], ba["ci_high"][g][lab])
        for g in group_names
        for lab in labels
        if ba["per_pair"][g][lab] is not None and np.isfinite(ba["per_pair"][g][lab])
    ]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(pairs) + 2), 3))
    if pairs:
        values = np.array([p[2] for p in pairs])
        lows = np.array([p[3] if p[3] is not None else p[2] for p in pairs], dtype=float)
        highs = np.array([p[4] if p[4] is not None else p[2] for p in pairs], dtype=float)
        flagged = {(f["group"], f["label"]) for f in analysis["flags"]}
        colors = ["tab:red" if (p[0], p[1]) in flagged else "tab:blue" for p in pairs]
        err = np.vstack([np.clip(values - lows, 0, None), np.clip(highs - values, 0, None)])
        ax.bar(range(len(pairs)), values, yerr=err, color=colors, capsize=2)
        ax.set_xticks(
            range(len(pairs)),
            [f"{p[0]}: {p[1]}" for p in pairs],
            rotation=70,
            ha="right",
            fontsize=6,
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("bias amplification")
    ax.set_title(f"{name}: bias amplification per pair (red: flagged)", fontsize=8)
    files.append(f"{name}_bias_amplification.png")
    fig.savefig(out / files[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(labels) + 2), 3))
    width = 0.8 / max(1, len(group_names))
    for j, g in enumerate(group_names):
        f1 = [analysis["by_group"]["f1"][g][lab] for lab in labels]
        ax.bar(
            np.arange(len(labels)) + j * width,
            [np.nan if v is None else v for v in f1],
            width,
            label=g,
        )
    ax.set_xticks(
        np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=60, ha="right", fontsize=7
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: F1 per group", fontsize=8)
    files.append(f"{name}_f1_by_group.png")
    fig.savefig(out / files[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)
    return files


def plot_saliency(report: dict[str, Any], out: Path) -> str:
    """Box plot of the border share of CAM energy per depicted-gender group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = report["_data"]["per_image_border"]
    fig, ax = plt.subplots(figsize=(6, 3))
    columns, names = [], []
    for name, membership, group_names, _, _ in report["_data"]["specs"]:
        for j, g in enumerate(group_names):
            values = shares[membership[:, j] & np.isfinite(shares)]
            if len(values):
                columns.append(values)
                names.append(f"{name}: {g}")
    if columns:
        ax.boxplot(columns)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=50, ha="right", fontsize=7)
    ax.axhline(report["saliency"]["border_area_share"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylabel("CAM energy on the border")
    ax.set_title("Grad-CAM saliency on the border (dashed: uniform map)", fontsize=8)
    fig.savefig(out / "saliency_border.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "saliency_border.png"


def plot_comparison(current: dict[str, Any], baseline: dict[str, Any], out: Path) -> str:
    """Bias amplification and accuracy of the model against the baseline, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(current["analyses"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    x = np.arange(len(names))
    for offset, report, label in ((-0.2, baseline, "baseline"), (0.2, current, "this model")):
        values = [
            report["analyses"][n].get("bias_amplification", {}).get("value", np.nan) for n in names
        ]
        axes[0].bar(x + offset, values, 0.4, label=label)
    axes[0].set_xticks(x, names)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_title("bias amplification (mean)", fontsize=8)
    axes[0].legend(fontsize=7)
    keys = sorted(set(current["accuracy"]) & set(baseline["accuracy"]))
    x = np.arange(len(keys))
    for offset, report, label in ((-0.2, baseline, "baseline"), (0.2, current, "this model")):
        axes[1].bar(x + offset, [report["accuracy"][k] for k in keys], 0.4, label=label)
    axes[1].set_xticks(x, keys, fontsize=7)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("accuracy", fontsize=8)
    fig.savefig(out / "comparison.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "comparison.png"


def comparison(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side figures: accuracy, BA per analysis, the flagged pairs' BA in both models."""
    pairs = {(f["analysis"], f["group"], f["label"]) for f in current["flags"] + baseline["flags"]}

    def pair_value(report: dict[str, Any], key: tuple[str, str, str]) -> float | None:
        analysis = report["analyses"].get(key[0], {})
        return (
            analysis.get("bias_amplification", {}).get("per_pair", {}).get(key[1], {}).get(key[2])
        )

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


def write_report(report: dict[str, Any], out: Path, baseline: dict[str, Any] | None = None) -> Path:
    """report.md with plots, and audit.json with every figure."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Bias audit of `{report['model_id']}`",
        "",
        f"Checkpoint `{report['checkpoint']}`, split `{report['split']}`, {report['objects']} objects, "
        f"label manifest `{report['label_manifest_hash'][:12]}`.",
        "",
        "## Flags",
        "",
    ]
    if report["flags"]:
        lines.append(
            _md_table(
                [
                    "analysis",
                    "group",
                    "label",
                    "BA",
                    "CI",
                    "truth bias",
                    "predicted bias",
                    "support",
                ],
                [
                    [
                        f["analysis"],
                        f["group"],
                        f["label"],
                        f["bias_amplification"],
                        f"{f['ci'][0]:.3f} – {f['ci'][1]:.3f}",
                        f["truth_bias"],
                        f["predicted_bias"],
                        f["support"],
                    ]
                    for f in report["flags"]
                ],
            )
        )
    else:
        lines.append("No (group, label) pair is flagged.")
    opts = report["options"]
    lines += [
        "",
        f"A pair is flagged when its bias amplification is above {opts['ba_threshold']}, its "
        f"one-sided {100 * (1 - opts['alpha']):.0f}% lower bound (the {100 * opts['alpha']:.0f}th "
        f"percentile of {opts['n_boot']} paired bootstrap resamples) is above 0, and the truth "
        f"holds at least {opts['min_support']} objects of the pair. The CI columns show the "
        f"{100 * (1 - 2 * opts['alpha']):.0f}% two-sided interval.",
        "",
        "## Accuracy",
        "",
        _md_table(list(report["accuracy"]), [list(report["accuracy"].values())]),
        "",
    ]
    if baseline is not None:
        comp = report["comparison"]
        lines += ["## Against the baseline", "", f"Baseline `{comp['baseline_model_id']}`.", ""]
        lines.append(
            _md_table(
                ["figure", "baseline", "this model"],
                [
                    [f"accuracy {k}", comp["accuracy"]["baseline"].get(k), v]
                    for k, v in comp["accuracy"]["model"].items()
                ]
                + [
                    [f"BA {k}", v["baseline"], v["model"]]
                    for k, v in comp["bias_amplification"].items()
                ]
                + [
                    [f"BA {p['analysis']}: {p['group']} / {p['label']}", p["baseline"], p["model"]]
                    for p in comp["flagged_pairs"]
                ]
                + [["flags", comp["flags"]["baseline"], comp["flags"]["model"]]],
            )
        )
        lines += ["", f"![comparison]({plot_comparison(report, baseline, out)})", ""]
    for name, analysis in report["analyses"].items():
        lines += [f"## Analysis `{name}`: {analysis['description']}", ""]
        lines.append(
            "Group sizes: "
            + ", ".join(f"{g} {n}" for g, n in analysis["group_sizes"].items())
            + f"; in no group: {analysis['objects_in_no_group']}."
        )
        if "skipped" in analysis:
            lines += ["", f"Skipped: {analysis['skipped']}.", ""]
            continue
        groups_ = analysis["groups"]
        lines += ["", "Image statistics per group:", ""]
        lines.append(
            _md_table(
                ["group", "warmth", "warm share", "brightness"],
                [[g, *analysis["image_stats"][g].values()] for g in groups_],
            )
        )
        ba = analysis["bias_amplification"]
        lines += [
            "",
            f"Bias amplification (Zhao et al.): **{ba['value']:.4f}**; directional A→T "
            f"(Wang & Russakovsky): **{analysis['directional_bias_amplification']['A->T']['value']:.4f}**"
            + (
                f"; T→A: **{analysis['directional_bias_amplification']['T->A']['value']:.4f}**"
                if "T->A" in analysis["directional_bias_amplification"]
                else ""
            )
            + ".",
            "",
        ]
        rows = []
        for lab in analysis["labels"]:
            row: list[Any] = [lab]
            for g in groups_:
                row += [
                    analysis["cooccurrence_truth"][g][lab],
                    analysis["cooccurrence_predicted"][g][lab],
                    analysis["by_group"]["f1"][g][lab],
                    ba["per_pair"][g][lab],
                ]
            row += [analysis["difference"]["f1"][lab], analysis["ratio"]["f1"][lab]]
            rows.append(row)
        header = ["label"]
        for g in groups_:
            header += [f"rate in {g}: truth", "predicted", f"F1 {g}", f"BA {g}"]
        header += ["F1 gap", "F1 ratio"]
        lines += [
            "Per label: its rate in each group (P(label given group), truth and predicted), F1 and "
            "bias amplification per group, and the F1 gap and ratio between groups.",
            "",
            _md_table(header, rows),
            "",
        ]
        lines += [f"![{f}]({f})" for f in plot_analysis(analysis, out)]
        lines.append("")
    sal = report["saliency"]
    lines += [
        "## Grad-CAM attention: border against centre",
        "",
        f"{sal['method']} on `{sal['target_layer']}` for the top label of {sal['images']} images; "
        f"the border is the outer {sal['border_fraction']:.0%} of each side "
        f"({sal['border_area_share']:.0%} of the pixels: a uniform map puts that share there). "
        f"Overall border share {sal['overall']['border_share']:.3f}.",
        "",
    ]
    lines.append(
        _md_table(
            ["analysis", "group", "images", "border share", "border/centre"],
            [
                [name, g, v["images"], v["border_share"], v["border_to_centre"]]
                for name, per_group in sal["by_analysis"].items()
                for g, v in per_group.items()
            ],
        )
    )
    lines += ["", f"![saliency]({plot_saliency(report, out)})", ""]
    (out / "report.md").write_text("\n".join(lines))
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "audit.json").write_text(json.dumps(_nan_to_none(public), indent=1) + "\n")
    return out / "report.md"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Gender-label bias audit of a trained model."
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--split", default="test", choices=("train", "val", "test", "heldout", "all")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        vocab = groups.parse_gender_vocab(args.gender_vocab)
        options = AuditOptions(
            split=args.split,
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
        report = run_audit(load_model(args.ckpt), args.data_dir, options)
        baseline = None
        if args.baseline:
            baseline = run_audit(load_model(args.baseline), args.data_dir, options)
            report["comparison"] = comparison(report, baseline)
        path = write_report(report, args.out, baseline)
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(report['flags'])} flagged pair(s); report in {path}")
    for flag in report["flags"]:
        print(
            f"FLAG {flag['analysis']}: {flag['group']} / {flag['label']}: "
            f"BA {flag['bias_amplification']:+.3f} (CI {flag['ci'][0]:+.3f} .. {flag['ci'][1]:+.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
