"""The demo's bias story for REPORT.md: the flag, the mitigation, the audit after it, its cost.

The demo's collection plants a bias its model picks up: the gender tags ``Men`` and ``Women``
have no motif of their own (``fake-api --unmarked-tags Men,Women``), and 90% of the objects
tagged Women get a warm background tint (5% of the others). The only cue for "Women" is the
tint, so the model learns "warm means Women", and the audit flags (warm background, Women). The
demo then trains the same config with group-balanced sampling (every gender tag as often on a
warm background as not) and audits that model too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNMARKED_TAGS = ("Men", "Women")
# An audit that controls false discoveries over ~25 pairs needs a few hundred objects of the
# planted label on each side: 4,000 objects with 40% held out hold ~230 held-out and ~350
# training "Women". 64 px keeps two trainings of 2,400 images within a few minutes on 2 cores.
OBJECTS = 4000
SIZE = 64
SPLIT_FRACTIONS = (0.6, 0.1, 0.3)
PREPARE_SPLIT_ARGS = ("--split-fractions", ",".join(map(str, SPLIT_FRACTIONS)))
FIT_SPLIT_ARGS = ("--data.split_fractions", f"[{', '.join(map(str, SPLIT_FRACTIONS))}]")
PLANTED = ("background", "warm background", "Women")
MITIGATION_ARGS = ("--data.group_balance", "sampler", "--data.group_balance_attribute", "warm")


def audit_summary(audit_json: Path) -> dict[str, Any]:
    """The figures of one audit that the story needs (planted pair, flags, statistics, accuracy)."""
    report = json.loads(audit_json.read_text())
    analysis, group, label = PLANTED
    tests = report["analyses"].get(analysis, {}).get("tests", [])
    planted = next((t for t in tests if (t["group"], t["label"]) == (group, label)), None)
    flagged = any((f["analysis"], f["group"], f["label"]) == PLANTED for f in report["flags"])
    return {
        "planted": planted,
        "planted_flagged": flagged,
        "flags": report["flags"],
        "statistics": report["statistics"],
        "accuracy": report["accuracy"],
        "objects": report["objects"],
    }


def _pair_cell(summary: dict[str, Any]) -> str:
    test = summary["planted"]
    if test is None:
        return "not testable (the model never predicts Women)"
    verdict = "**flagged**" if summary["planted_flagged"] else "not flagged"
    return f"{verdict}: BA {test['bias_amplification']:+.3f}, p {test['p_value']:.2g}"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–" if value is None else str(value)


def story_lines(
    baseline: dict[str, Any],
    mitigated: dict[str, Any],
    baseline_test: dict[str, Any],
    mitigated_test: dict[str, Any],
) -> list[str]:
    """The REPORT.md section: baseline and group-balanced model side by side."""
    rows = [
        ("(warm background, Women)", _pair_cell(baseline), _pair_cell(mitigated)),
        (
            "share of predicted Women on warm backgrounds (training truth)",
            _share(baseline),
            _share(mitigated),
        ),
        ("flags in all", len(baseline["flags"]), len(mitigated["flags"])),
        (
            "pairs tested",
            baseline["statistics"]["pairs_tested"],
            mitigated["statistics"]["pairs_tested"],
        ),
    ]
    for key in ("map_macro", "f1_macro", "f1_micro"):
        rows.append((f"test {key}", _fmt(baseline_test.get(key)), _fmt(mitigated_test.get(key))))
    stats = baseline["statistics"]
    lines = [
        "## The planted bias, flagged and mitigated",
        "",
        "In this collection `Men` and `Women` have no motif of their own, and 90 % of the objects "
        "tagged Women have a warm background (5 % of the others): the tint is the model's only "
        "cue for Women. The audit (held-out objects, reference bias from the training split, "
        "Benjamini–Hochberg over every pair tested) looks for it; then the same config is trained "
        "again with group-balanced sampling (`--data.group_balance sampler "
        "--data.group_balance_attribute warm`) and audited again.",
        "",
        "| | baseline | group-balanced |",
        "|---|---|---|",
        *[f"| {name} | {a} | {b} |" for name, a, b in rows],
        "",
        f"Audited: {baseline['objects']} objects, the {stats['audited_split']}; "
        f"{stats['pairs_tested']} pairs tested ({stats['fdr']}); the smallest BA the audit could "
        f"detect here is {_fmt(stats['minimum_detectable_ba']['min'])}. "
        + _cost(baseline_test, mitigated_test),
        "",
    ]
    for name, summary in (("baseline", baseline), ("group-balanced", mitigated)):
        for flag in summary["flags"]:
            lines.append(
                f"- {name} flag: {flag['analysis']} / {flag['group']} / {flag['label']}: BA "
                f"{flag['bias_amplification']:+.3f} (p {flag['p_value']:.2g})"
            )
    return [*lines, ""]


def _share(summary: dict[str, Any]) -> str:
    test = summary["planted"]
    if test is None:
        return "–"
    return f"{test['predicted_bias']:.2f} ({test['truth_bias']:.2f})"


def _cost(baseline_test: dict[str, Any], mitigated_test: dict[str, Any]) -> str:
    """One sentence on what the mitigation cost (or gained) in test macro mAP."""
    before, after = baseline_test.get("map_macro"), mitigated_test.get("map_macro")
    if not isinstance(before, float) or not isinstance(after, float):
        return ""
    change = after - before
    word = "cost" if change < 0 else "changed"
    return (
        f"The mitigation {word} {abs(change):.3f} of test macro mAP ({before:.3f} → {after:.3f}): "
        "without the tint the balanced model has no cue for Women at all."
    )
