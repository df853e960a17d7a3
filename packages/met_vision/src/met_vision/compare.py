"""``python -m met_vision.compare runs/*``: finished runs side by side (markdown, CSV and a plot).

Reads ``metrics.json`` of every run directory given (a directory without one is skipped with
a warning; directories holding run directories, such as ``runs/resnet50-multiclass``, are
searched one level down) and writes ``comparison.md``, ``comparison.csv`` and
``comparison.png`` into ``--out`` (default ``comparison``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

PROG = "met_vision.compare"

METRIC_COLUMNS = {
    "multiclass": [("acc", "top-1"), ("acc_top5", "top-5"), ("f1_macro", "macro-F1")],
    "multilabel": [
        ("map_macro", "mAP macro"),
        ("map_micro", "mAP micro"),
        ("f1_micro", "F1@thr"),
        ("f2_micro", "F2@thr"),
        ("f1_macro_class_thr", "macro-F1@class thr"),
        ("precision_at_1", "P@1"),
    ],
}
COMMON_COLUMNS = [
    ("params", "params (M)"),
    ("train_images_per_s", "train img/s"),
    ("inference_images_per_s", "infer img/s"),
    ("wall_time_s", "wall (min)"),
    ("epochs", "epochs"),
    ("precision", "precision"),
    ("world_size", "GPUs/procs"),
]


def find_runs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into run dirs with ``metrics.json`` and those without (searching one level down)."""
    found: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        children = sorted(p.parent for p in path.glob("*/metrics.json")) if path.is_dir() else []
        if children:
            found.extend(children)
        else:
            missing.append(path)
    return found, missing


def load_run(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json``; raises ``ValueError`` naming the file if it is not valid JSON."""
    path = run_dir / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    data.setdefault("name", run_dir.name)
    data["run_dir"] = str(run_dir)
    return data


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "params":
        return f"{value / 1e6:.1f}"
    if key == "wall_time_s":
        return f"{value / 60:.1f}"
    if key.endswith("images_per_s"):
        return f"{value:.0f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[str], list[list[Any]]]:
    """Keys, display headers and raw values (one row per run) for the tasks present."""
    tasks = [t for t in ("multiclass", "multilabel") if any(r.get("task") == t for r in runs)]
    columns = [("name", "run"), ("task", "task"), ("backbone", "backbone")]
    columns += [c for t in tasks for c in METRIC_COLUMNS[t]] + COMMON_COLUMNS
    metric_keys = {k for t in tasks for k, _ in METRIC_COLUMNS[t]}
    rows = []
    for run in runs:
        own = {k for k, _ in METRIC_COLUMNS.get(str(run.get("task")), [])}
        test = run.get("test", {})
        rows.append(
            [
                (test.get(k) if k in own else None) if k in metric_keys else run.get(k)
                for k, _ in columns
            ]
        )
    return [k for k, _ in columns], [h for _, h in columns], rows


def write_markdown(path: Path, runs: list[dict[str, Any]]) -> None:
    """Markdown table, one row per run, values rounded for reading."""
    keys, header, rows = table_rows(runs)
    lines = [
        "# Model comparison",
        "",
        "Test-split metrics of each run (thresholds of F1/F2 tuned on validation); "
        "throughput in images per second over all processes; wall time of the whole command.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, v) for k, v in zip(keys, row, strict=True)) + " |")
    lines.append("")
    lines += [f"- `{r['name']}`: {r['run_dir']}" for r in runs]
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, runs: list[dict[str, Any]]) -> None:
    """CSV of the same table with raw values, headed by the ``metrics.json`` keys."""
    keys, _, rows = table_rows(runs)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "run_dir"])
        for row, run in zip(rows, runs, strict=True):
            writer.writerow([*("" if v is None else v for v in row), run["run_dir"]])


def write_plot(path: Path, runs: list[dict[str, Any]]) -> None:
    """Primary test score against inference throughput, bubble size by parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [str(r["name"]) for r in runs]
    scores = [r.get("test", {}).get("score") or 0.0 for r in runs]
    colours = ["tab:blue" if r.get("task") == "multiclass" else "tab:orange" for r in runs]
    axes[0].barh(names, scores, color=colours)
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("test score (multiclass top-1 blue, multilabel mAP orange)")
    for run, name, score in zip(runs, names, scores, strict=True):
        speed = run.get("inference_images_per_s") or 0.0
        size = 30 + (run.get("params") or 0) / 1e5
        axes[1].scatter(speed, score, s=size, alpha=0.6)
        axes[1].annotate(name, (speed, score), fontsize=7)
    axes[1].set_xlabel("inference images/s")
    axes[1].set_ylabel("test score")
    axes[1].set_title("score vs speed (marker size: parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(run_paths: list[Path], out_dir: Path) -> list[Path]:
    """Write the comparison files; returns their paths.

    Raises:
        ValueError: when no run directory has a ``metrics.json``.
    """
    found, missing = find_runs(run_paths)
    for path in missing:
        print(
            f"{PROG}: warning: {path} has no metrics.json (unfinished run?); skipped",
            file=sys.stderr,
        )
    if not found:
        raise ValueError("none of the given directories holds a finished run (metrics.json)")
    runs = [load_run(p) for p in found]
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [out_dir / "comparison.md", out_dir / "comparison.csv", out_dir / "comparison.png"]
    write_markdown(outputs[0], runs)
    write_csv(outputs[1], runs)
    write_plot(outputs[2], runs)
    return outputs


def main(args: list[str] | None = None) -> int:
    """Command-line entry point; exit status 2 on bad input."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or their parents)")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output directory")
    ns = parser.parse_args(args)
    try:
        outputs = compare(ns.runs, ns.out)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(outputs[0].read_text())
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
