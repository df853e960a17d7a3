"""REPORT.md's bias story from two audit.json files: the flag, the mitigation and its cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from met_vision import demo_story


def _audit(path: Path, ba: float, p: float, flagged: bool) -> Path:
    test = {
        "group": "warm background",
        "label": "Women",
        "bias_amplification": ba,
        "p_value": p,
        "truth_bias": 0.9,
        "predicted_bias": 0.9 + ba,
    }
    flags = [{"analysis": "background", **test}] if flagged else []
    report: dict[str, Any] = {
        "analyses": {"background": {"tests": [test]}},
        "flags": flags,
        "statistics": {
            "pairs_tested": 24,
            "audited_split": "held-out objects (validation + test)",
            "fdr": "Benjamini-Hochberg at q = 0.05 over all 24 pairs tested",
            "minimum_detectable_ba": {"min": 0.04, "median": 0.2},
        },
        "accuracy": {"f1_micro": 0.8},
        "objects": 400,
    }
    path.write_text(json.dumps(report))
    return path


def test_story_shows_flag_mitigation_audit_after_and_cost(tmp_path: Path) -> None:
    baseline = demo_story.audit_summary(_audit(tmp_path / "a.json", 0.09, 1e-4, True))
    mitigated = demo_story.audit_summary(_audit(tmp_path / "b.json", -0.5, 1.0, False))
    assert baseline["planted_flagged"] and not mitigated["planted_flagged"]
    text = "\n".join(
        demo_story.story_lines(baseline, mitigated, {"map_macro": 0.90}, {"map_macro": 0.84})
    )
    assert "| (warm background, Women) | **flagged**: BA +0.090, p 0.0001 | not flagged" in text
    assert "| flags in all | 1 | 0 |" in text
    assert "cost 0.060 of test macro mAP (0.900 → 0.840)" in text
    assert "24 pairs tested" in text and "0.040" in text
