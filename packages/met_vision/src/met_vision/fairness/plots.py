"""The PNG plots of the bias audit's report: co-occurrence heat maps, bias amplification per
pair, F1 per group, Grad-CAM border share, and the comparison with a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_analysis(analysis: dict[str, Any], out: Path) -> list[str]:
    """Co-occurrence heat maps, BA bars with intervals and F1 per group; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "bias_amplification" not in analysis:
        return []
    return [
        _plot_cooccurrence(analysis, out, plt),
        _plot_pair_amplification(analysis, out, plt),
        _plot_f1_by_group(analysis, out, plt),
    ]


def _plot_cooccurrence(analysis: dict[str, Any], out: Path, plt: Any) -> str:
    name, group_names, labels = analysis["name"], analysis["groups"], analysis["labels"]
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
    return _save(fig, out, f"{name}_cooccurrence.png", plt)


def _plot_pair_amplification(analysis: dict[str, Any], out: Path, plt: Any) -> str:
    name, group_names, labels = analysis["name"], analysis["groups"], analysis["labels"]
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
    return _save(fig, out, f"{name}_bias_amplification.png", plt)


def _plot_f1_by_group(analysis: dict[str, Any], out: Path, plt: Any) -> str:
    name, group_names, labels = analysis["name"], analysis["groups"], analysis["labels"]
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
    return _save(fig, out, f"{name}_f1_by_group.png", plt)


def _save(fig: Any, out: Path, name: str, plt: Any) -> str:
    fig.savefig(out / name, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return name


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
