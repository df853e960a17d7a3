"""The markdown report, PNG plots and ``audit.json`` of the bias audit (``met_vision.audit``).

Pure rendering: takes the dict from :func:`met_vision.audit.run_audit` (with its ``_data`` for the
plots) and writes ``report.md``, the plots it links and ``audit.json`` with every figure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


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


FLAG_COLUMNS = (
    "analysis",
    "group",
    "label",
    "BA",
    "CI",
    "p",
    "reference bias",
    "predicted bias",
    "support",
    "detectable BA",
)


def statistics_lines(report: dict[str, Any]) -> list[str]:
    """The paragraph that says how flags were decided and what the audit could detect."""
    stats, opts = report["statistics"], report["options"]
    mde = stats["minimum_detectable_ba"]
    detectable = (
        f"At this sample size the audit could detect a BA of {mde['min']:.3f} on its best "
        f"powered pair and {mde['median']:.3f} on the median pair ({100 * stats['power']:.0f}% "
        f"power at the strictest Benjamini-Hochberg level {stats['strictest_level']:.2g}); "
        "smaller amplification can go unflagged."
        if mde["min"] is not None
        else "No pair could be tested."
    )
    return [
        f"Audited objects: the {stats['audited_split']} ({report['objects']} objects). Reference "
        f"bias: the {stats['reference']} ({report['reference_objects']} objects), as in Zhao et "
        "al. 2017. The pairs tested are fixed before any resampling: those the reference is "
        f"biased toward, with at least {opts['min_support']} audited objects. "
        f"{stats['pairs_tested']} pairs were tested ({stats['pairs_untestable']} more could "
        f"not be: the model never predicts their label), each with a {stats['test']}. A pair is "
        f"flagged when {stats['fdr']} rejects it and its BA is above {stats['ba_threshold']}. "
        f"The CI column is the {100 * (1 - opts['alpha']):.0f}% paired bootstrap interval "
        f"({opts['n_boot']} resamples).",
        "",
        detectable,
    ]


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
                FLAG_COLUMNS,
                [
                    [
                        f["analysis"],
                        f["group"],
                        f["label"],
                        f["bias_amplification"],
                        f"{f['ci'][0]:.3f} – {f['ci'][1]:.3f}",
                        f"{f['p_value']:.2g}",
                        f["truth_bias"],
                        f["predicted_bias"],
                        f["support"],
                        f["minimum_detectable_ba"],
                    ]
                    for f in report["flags"]
                ],
            )
        )
    else:
        lines.append("No (group, label) pair is flagged.")
    lines += ["", *statistics_lines(report)]
    lines += [
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
