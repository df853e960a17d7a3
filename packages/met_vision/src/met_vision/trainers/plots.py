"""Plots of the test results: confusion matrix, PR curves and per-class F1 bars (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

MAX_TICK_LABELS = 40


def confusion_matrix_figure(cm: list[list[int]], names: list[str]) -> Figure:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    counts = np.asarray(cm, dtype=float)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(names)
    side = min(14.0, 3.0 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        colour = "white" if norm[i, j] > 0.5 else "black"
                        ax.text(
                            j,
                            i,
                            str(int(counts[i, j])),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color=colour,
                        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)")
    fig.tight_layout()
    return fig


def pr_curves_figure(curves: dict[str, dict[str, list[float]]], title: str = "") -> Figure:
    """Precision-recall curves; the micro average is drawn thick and black."""
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, curve in curves.items():
        if name == "micro":
            continue
        ax.plot(curve["recall"], curve["precision"], linewidth=1, alpha=0.7, label=name)
    if "micro" in curves:
        ax.plot(
            curves["micro"]["recall"],
            curves["micro"]["precision"],
            "k-",
            linewidth=2.5,
            label="micro",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "Precision-recall (test)")
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def per_class_bars_figure(values: dict[str, float], metric: str = "F1") -> Figure:
    """Horizontal bars of a per-class metric, best class on top."""
    items = sorted(values.items(), key=lambda kv: kv[1])
    height = min(30.0, 1.5 + 0.22 * len(items))
    fig, ax = plt.subplots(figsize=(7, height))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel(metric)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"Per-class {metric} (test)")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG and close it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_result_plots(results: dict[str, Any], names: list[str], out_dir: Path) -> list[Path]:
    """Write every plot the test ``results`` allow into ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "confusion_matrix" in results:
        written.append(
            save(
                confusion_matrix_figure(results["confusion_matrix"], names),
                out_dir / "confusion_matrix.png",
            )
        )
    if results.get("pr_curves"):
        written.append(save(pr_curves_figure(results["pr_curves"]), out_dir / "pr_curves.png"))
    f1 = results.get("per_class", {}).get("f1")
    if f1:
        written.append(save(per_class_bars_figure(f1), out_dir / "per_class_f1.png"))
    return written
