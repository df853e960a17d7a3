"""`python -m met_vision.audit`: the report's files on a real checkpoint, and the flags on the
planted-bias collection against the unbiased control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from xai_support import (  # noqa: F401
    TrainedModel,
    biased_model,
    quick_model,
    unmarked_control_model,
)

from met_vision import audit

PLANTED = ("background", "warm background", "Women")


def _run(model: TrainedModel, out: Path, *extra: str) -> dict:
    code = audit.main(
        ["--ckpt", str(model.ckpt), "--data-dir", str(model.data_dir), "--out", str(out), *extra]
    )
    assert code == 0
    return json.loads((out / "audit.json").read_text())


def test_audit_writes_report_plots_and_json(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "report"
    report = _run(quick_model, out, "--split", "all", "--bootstrap", "20", "--cam-samples", "6")
    assert set(report["analyses"]) == {"depicted", "artist", "background"}
    depicted = report["analyses"]["depicted"]
    assert depicted["groups"] == ["female", "male"]
    assert "Women" not in depicted["labels"] and "Flowers" in depicted["labels"]
    for key in (
        "label_counts_truth",
        "by_group",
        "difference",
        "ratio",
        "cooccurrence_truth",
        "cooccurrence_predicted",
        "bias_amplification",
        "directional_bias_amplification",
        "image_stats",
    ):
        assert key in depicted, key
    assert "T->A" in depicted["directional_bias_amplification"]
    assert report["analyses"]["background"]["labels"] == ["Boys", "Girls", "Men", "Women"]
    assert report["saliency"]["images"] == 6
    assert 0 <= report["saliency"]["overall"]["border_share"] <= 1
    assert set(report["accuracy"]) >= {"f1_micro", "f1_macro", "map_macro"}
    text = (out / "report.md").read_text()
    assert "## Flags" in text and "Bias amplification (Zhao et al.)" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "saliency_border.png" in pngs and "depicted_bias_amplification.png" in pngs
    for name in pngs:
        assert f"({name})" in text
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100


def test_audit_custom_vocabulary(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    report = _run(
        quick_model,
        tmp_path / "r",
        "--split",
        "all",
        "--gender-vocab",
        "Women,Girls",
        "--bootstrap",
        "10",
        "--cam-samples",
        "2",
    )
    assert report["analyses"]["depicted"]["groups"] == ["Girls", "Women"]
    assert report["options"]["gender_vocab"] == {"Women": "Women", "Girls": "Girls"}


def test_audit_bad_input(quick_model: TrainedModel, tmp_path: Path, capsys) -> None:  # noqa: F811
    base = ["--ckpt", str(quick_model.ckpt), "--out", str(tmp_path / "o")]
    assert audit.main([*base, "--data-dir", str(quick_model.data_dir), "--gender-vocab", "=x"]) == 2
    assert "met_vision.audit: error: empty term" in capsys.readouterr().err
    assert audit.main([*base, "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no mirror database" in capsys.readouterr().err


@pytest.mark.slow
def test_planted_bias_without_a_motif_is_flagged(
    biased_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    report = _run(biased_model, tmp_path / "biased")
    flagged = {(f["analysis"], f["group"], f["label"]): f for f in report["flags"]}
    assert PLANTED in flagged, report["analyses"]["background"]["tests"]
    flag = flagged[PLANTED]
    assert flag["bias_amplification"] > 0 and flag["bh_rejected"]
    # the training truth ties Women to warm backgrounds; the model ties them tighter
    assert flag["predicted_bias"] > flag["truth_bias"] > 0.5
    stats = report["statistics"]
    assert stats["reference"] == "training split" and stats["pairs_tested"] >= 10
    assert report["split"] == "heldout" and "validation + test" in stats["audited_split"]
    assert 0 < stats["minimum_detectable_ba"]["min"] <= flag["bias_amplification"]
    text = (tmp_path / "biased" / "report.md").read_text()
    assert f"{stats['pairs_tested']} pairs were tested" in text


@pytest.mark.slow
def test_unlearnable_attribute_in_the_control_is_not_flagged(
    unmarked_control_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    report = _run(unmarked_control_model, tmp_path / "control")
    assert report["flags"] == [], report["flags"]
    assert report["statistics"]["pairs_tested"] >= 10
    assert "No (group, label) pair is flagged." in (tmp_path / "control" / "report.md").read_text()
