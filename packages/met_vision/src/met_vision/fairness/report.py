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

from met_vision.fairness.plots import plot_analysis, plot_comparison, plot_saliency


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
        f"Predicted, for every bias figure: {report['decisions']['description']}. The accuracy "
        "figures are of the model's own decisions. Only labels the model ranks better than "
        f"chance are tested ({report['decisions']['skill_test']}); not predictive: "
        f"{', '.join(report['decisions']['not_predictive']) or 'none'}.",
        "",
        detectable,
    ]


def _flag_lines(report: dict[str, Any]) -> list[str]:
    """The table of flagged (group, label) pairs."""
    if not report["flags"]:
        return ["No (group, label) pair is flagged."]
    rows = [
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
    ]
    return [_md_table(FLAG_COLUMNS, rows)]


def _baseline_lines(report: dict[str, Any], baseline: dict[str, Any], out: Path) -> list[str]:
    """Accuracy and bias amplification against the baseline model, with its plot."""
    lines: list[str] = []
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
    return lines


def _analysis_lines(name: str, analysis: dict[str, Any], out: Path) -> list[str]:
    """One analysis: group sizes, image statistics, bias amplification, the per-label table
    and its plots."""
    lines = [f"## Analysis `{name}`: {analysis['description']}", ""]
    lines.append(
        "Group sizes: "
        + ", ".join(f"{g} {n}" for g, n in analysis["group_sizes"].items())
        + f"; in no group: {analysis['objects_in_no_group']}."
    )
    if "skipped" in analysis:
        return [*lines, "", f"Skipped: {analysis['skipped']}.", ""]
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
    lines += [
        "Per label: its rate in each group (P(label given group), truth and predicted), F1 and "
        "bias amplification per group, and the F1 gap and ratio between groups.",
        "",
        _per_label_table(analysis),
        "",
    ]
    lines += [f"![{f}]({f})" for f in plot_analysis(analysis, out)]
    lines.append("")
    return lines


def _per_label_table(analysis: dict[str, Any]) -> str:
    """Per label: rates per group (truth, predicted), F1 and BA per group, F1 gap and ratio."""
    groups_, ba = analysis["groups"], analysis["bias_amplification"]
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
    return _md_table(header, rows)


def _saliency_lines(report: dict[str, Any], out: Path) -> list[str]:
    """Grad-CAM border share per group, with its plot."""
    sal = report["saliency"]
    lines = [
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
    return lines


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
    lines += _flag_lines(report)
    lines += ["", *statistics_lines(report)]
    lines += [
        "",
        "## Accuracy",
        "",
        _md_table(list(report["accuracy"]), [list(report["accuracy"].values())]),
        "",
    ]
    if baseline is not None:
        lines += _baseline_lines(report, baseline, out)
    for name, analysis in report["analyses"].items():
        lines += _analysis_lines(name, analysis, out)
    lines += _saliency_lines(report, out)
    (out / "report.md").write_text("\n".join(lines))
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "audit.json").write_text(json.dumps(_nan_to_none(public), indent=1) + "\n")
    return out / "report.md"
