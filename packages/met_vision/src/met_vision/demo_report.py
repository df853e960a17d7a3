"""`demo-output/REPORT.md` of `python -m met_vision.demo`: harvest figures, training curve,
test metrics, Grad-CAM grid and the story of the planted bias (`met_vision.demo_story`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def plot_training_curve(run_dir: Path, out: Path) -> Path | None:
    """Plot the per-epoch validation score and losses from the run's CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    logs = sorted(run_dir.glob("**/metrics.csv"))
    if not logs:
        return None
    frame = pd.read_csv(logs[-1])
    cols = [
        c for c in frame.columns if c in ("val/score", "val/loss", "train/loss_epoch", "train/loss")
    ]
    if "epoch" not in frame or not cols:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for col in cols:
        series = frame[["epoch", col]].dropna().groupby("epoch")[col].last()
        ax.plot(series.index, series.values, marker="o", label=col)
    ax.set_xlabel("epoch")
    ax.set_title("training curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(out: Path, facts: dict[str, Any]) -> Path:
    """REPORT.md from what each stage left behind."""
    status = facts["status"]
    lines = [
        "# met-collection demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `make demo` "
        f"({facts['objects']} synthetic objects, planted bias {facts['bias']}).",
        "",
        "## Harvest",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in (
        "objects",
        "withdrawn",
        "missing",
        "quarantined",
        "failures",
        "tags",
        "images",
        "image_failures",
    ):
        if key in status:
            lines.append(f"| {key} | {status[key]} |")
    last = status.get("last_sync") or {}
    if last:
        lines.append(
            f"| last sync | {last.get('mode')} {last.get('status')}, {last.get('start')} → {last.get('end')} |"
        )
    lines.append(f"| sync wall time (this run) | {facts['sync_seconds']:.1f} s |")
    lines += _training_lines(facts)
    lines += _cam_lines(facts)
    lines += ["", *facts.get("story", [])]
    if facts.get("audit_md"):
        lines.append(
            f"Full reports: [{facts['audit_md']}]({facts['audit_md']}) (baseline), "
            "[audit-mitigated/report.md](audit-mitigated/report.md) (group-balanced)."
        )
    lines.append("")
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def _training_lines(facts: dict[str, Any]) -> list[str]:
    """The run directory, the training curve and the test metrics."""
    lines = ["", "## Training", ""]
    lines.append(f"Run directory: `{facts['run_dir']}`.")
    if facts.get("curve"):
        lines += ["", f"![training curve]({facts['curve']})"]
    lines += ["", "### Test metrics", "", "| metric | value |", "|---|---|"]
    metrics = facts["metrics"]
    flat = metrics.get("test", metrics)
    for key, value in sorted(flat.items()):
        if isinstance(value, int | float):
            lines.append(f"| {key} | {_fmt(value)} |")
    return lines


def _cam_lines(facts: dict[str, Any]) -> list[str]:
    """The Grad-CAM grid and the check of the maps against the motif boxes."""
    lines = ["", "## Grad-CAM", ""]
    if facts.get("cam_grid"):
        lines.append(f"![Grad-CAM grid]({facts['cam_grid']})")
    evaluation = facts.get("cam_eval") or {}
    overall = evaluation.get("overall", evaluation)
    if overall:
        lines += ["", "| CAM check against the motif boxes | value |", "|---|---|"]
        for key, value in overall.items():
            if isinstance(value, int | float):
                lines.append(f"| {key} | {_fmt(value)} |")
    return lines
