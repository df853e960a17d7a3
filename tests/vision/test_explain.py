"""`python -m met_vision.explain` on real checkpoints and mirrors, with real PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from xai_support import CAM_LAYER, TrainedModel, control_model, quick_model  # noqa: F401

from met_vision.explain import __main__ as explain


def test_explain_object_ids_writes_overlays_grid_and_html(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    ids = quick_model.split_ids("test")[:3]
    out = tmp_path / "explain"
    code = explain.main(
        [
            "--ckpt",
            str(quick_model.ckpt),
            "--data-dir",
            str(quick_model.data_dir),
            "--object-ids",
            ",".join(map(str, ids)),
            "--method",
            "gradcam++",
            "--target",
            "top-k",
            "--k",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    cams = json.loads((out / "cams.json").read_text())
    assert len(cams["cells"]) == 2 * len(ids)
    assert [c["object_id"] for c in cams["cells"][::2]] == ids
    for cell in cams["cells"]:
        with Image.open(out / cell["overlay"]) as image:
            assert image.format == "PNG" and image.size == (64, 64)
        assert 0.0 <= cell["score"] <= 1.0
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] > 200
    page = (out / "index.html").read_text()
    assert all(c["overlay"] in page and c["label"] in page for c in cams["cells"])


def test_explain_image_files_and_named_label(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    from met_vision.inference.predictor import load_model

    names = load_model(quick_model.ckpt).names
    image = tmp_path / "picture.jpg"
    Image.fromarray(np.full((80, 120, 3), 128, dtype=np.uint8)).save(image)
    out = tmp_path / "files"
    code = explain.main(
        [
            *("--ckpt", str(quick_model.ckpt), "--images", str(image), "--target", names[1]),
            *("--method", "eigencam", "--out", str(out)),
        ]
    )
    assert code == 0
    cells = json.loads((out / "cams.json").read_text())["cells"]
    assert [(c["key"], c["label"]) for c in cells] == [("picture", names[1])]
    assert (out / f"overlays/picture_{explain.slug(names[1])}.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "nope.jpg"], "not found"),
        (["--object-ids", "1,x"], "integers"),
        (["--object-ids", "999999999"], "not labelled objects"),
        (["--split", "test", "--target", "Unicorns"], "not predicted, top-k"),
        (["--split", "test", "--target", "truth"], "needs --evaluate"),
        (["--split", "test", "--evaluate", "missing.json"], "does not exist"),
    ],
)
def test_explain_bad_input_is_one_line_exit_2(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    base = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    assert explain.main([*base, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("met_vision.explain: error:") and message in err[0]


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain.main(
        ["--ckpt", str(tmp_path / "x.ckpt"), "--split", "test", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_crop_box_maps_into_the_centre_crop() -> None:
    # 200x100 image, size 64, crop_pct 0.8: resized to 160x80, crop 64 from the middle
    box = explain.crop_box([0.5, 0.25, 0.6, 0.75], 200, 100, 64, 0.8)
    assert box is not None
    np.testing.assert_allclose(box, [(80 - 48) / 64, (20 - 8) / 64, (96 - 48) / 64, (60 - 8) / 64])
    assert explain.crop_box([0.0, 0.0, 0.1, 0.1], 200, 100, 64, 0.8) is None  # cropped away


@pytest.mark.slow
def test_default_target_layer_points_at_the_motifs_at_96px(
    control_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "eval"
    code = explain.main(
        [
            "--ckpt",
            str(control_model.ckpt),
            "--data-dir",
            str(control_model.data_dir),
            "--split",
            "test",
            "--target",
            "truth",
            "--evaluate",
            str(control_model.truth_path),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    overall = evaluation["overall"]
    assert overall["n"] >= 60
    assert overall["pointing"] >= 0.8, evaluation
    # CAM energy is concentrated on the motif: far above the box's share of the image
    assert overall["energy_in_box"] >= 0.3
    assert set(evaluation["per_label"]) >= {"Women", "Men", "Flowers"}
    # the default layer at 96 px is the 6x6 stage, and the tolerance 15 px * 96 / 224
    assert evaluation["target_layer"].split(".")[0] == CAM_LAYER
    assert evaluation["tolerance_px"] == 6
    # localisation, not centre bias: well above both image-blind baselines
    assert overall["pointing"] > overall["pointing_centre_baseline"] + 0.2
    assert overall["pointing"] > overall["pointing_random_baseline"] + 0.2
