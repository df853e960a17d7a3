"""`python -m met_vision.prepare`: a correct, incremental, interrupt-safe image cache."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from met_harvester.testing.collection import CollectionConfig, SyntheticCollection
from met_vision.data.labels import LabelSpace, LabelSpaceConfig
from met_vision.prepare import cache_path, main, prepare

SIZE = 64
MULTICLASS = LabelSpaceConfig(task="multiclass")


def _truth(mirror: Path) -> dict[str, Any]:
    return json.loads((mirror / "truth.json").read_text())


def _rendered(object_id: int) -> Image.Image:
    """The image the fixture rendered for an object before the special conversion."""
    collection = SyntheticCollection(CollectionConfig(n_objects=300, seed=0))
    data, _ = collection.image_bytes(object_id, "small")
    return Image.open(io.BytesIO(data)).convert("RGB")


def _cached(mirror: Path, index: pd.DataFrame, object_id: int) -> Image.Image:
    row = index[index["object_id"] == object_id].iloc[0]
    return Image.open(mirror / row["cache_path"])


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    b = b.convert("RGB").resize(a.size, Image.Resampling.BICUBIC)
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


def test_prepare_converts_special_inputs_and_skips_undecodable(fresh_mirror: Path) -> None:
    truth = _truth(fresh_mirror)
    specials = truth["specials"]
    report = prepare(fresh_mirror, SIZE, MULTICLASS, workers=2)
    index = pd.read_parquet(fresh_mirror / report["index"])
    expected = {int(k) for k, v in truth["objects"].items() if v["has_image"]} - {
        specials["truncated"]
    }
    assert set(index["object_id"]) == expected
    assert [f["object_id"] for f in report["failed_objects"]] == [specials["truncated"]]
    assert "truncated" in report["failed_objects"][0]["error"]
    assert report["resized"] == len(set(index["sha256"]))

    for object_id in index["object_id"]:
        image = _cached(fresh_mirror, index, object_id)
        assert image.format == "JPEG" and image.mode == "RGB"
        assert min(image.size) <= SIZE
    # The synthetic small images are all larger than SIZE: scaled to exactly SIZE (short side).
    huge = _cached(fresh_mirror, index, specials["huge"])
    assert huge.size == (96, 64)  # 6000x4000 -> short side 64
    for kind in ("cmyk", "gray", "huge"):
        image = _cached(fresh_mirror, index, specials[kind])
        reference = _rendered(specials[kind])
        if kind == "gray":
            reference = reference.convert("L")
        assert _mean_abs_diff(image, reference) < 12, kind
    gray = np.asarray(_cached(fresh_mirror, index, specials["gray"]), dtype=np.int16)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3  # grey stays grey
    palette = np.asarray(_cached(fresh_mirror, index, specials["palette_alpha"]), dtype=np.int16)
    assert palette[:, : palette.shape[1] // 5].min() >= 245  # transparent strip -> white

    labels = LabelSpace.load(fresh_mirror / report["index"].replace("index.parquet", "labels.json"))
    for object_id, target in zip(index["object_id"], index["target"], strict=True):
        assert labels.names[target] == truth["objects"][str(object_id)]["classification"]


def test_second_run_does_no_work_and_resumes_after_interruption(fresh_mirror: Path) -> None:
    first = prepare(fresh_mirror, SIZE, MULTICLASS, workers=1)
    index = pd.read_parquet(fresh_mirror / first["index"])
    files = {p: p.stat().st_mtime_ns for p in (fresh_mirror / "cache").rglob("*.jpg")}
    second = prepare(fresh_mirror, SIZE, MULTICLASS, workers=1)
    assert second["resized"] == 0 and second["failed_now"] == 0
    assert second["already_cached"] == first["resized"]
    assert {p: p.stat().st_mtime_ns for p in (fresh_mirror / "cache").rglob("*.jpg")} == files
    pd.testing.assert_frame_equal(pd.read_parquet(fresh_mirror / second["index"]), index)

    # An interrupted run leaves missing files and a stray temp file: the next run redoes
    # exactly the missing ones and ignores the temp file.
    cache_dir = fresh_mirror / "cache" / str(SIZE)
    lost = list(index["sha256"][:5])
    for sha in lost:
        cache_path(cache_dir, sha).unlink()
    stray = cache_path(cache_dir, lost[0]).with_name(f".{lost[0]}.jpg.123.tmp")
    stray.write_bytes(b"partial")
    third = prepare(fresh_mirror, SIZE, MULTICLASS, workers=1)
    assert third["resized"] == len(set(lost))
    assert all(cache_path(cache_dir, sha).is_file() for sha in lost)

    # Another label space at the same size reuses the content-addressed files.
    tags = prepare(fresh_mirror, SIZE, LabelSpaceConfig(task="multilabel"), workers=1)
    assert tags["index"] != first["index"]
    assert tags["resized"] < 5  # only objects without a classification-space entry (none here)


def test_prepare_all_indexes_every_object_with_an_image(fresh_mirror: Path) -> None:
    truth = _truth(fresh_mirror)
    report = prepare(fresh_mirror, SIZE, None, workers=1)
    index = pd.read_parquet(fresh_mirror / report["index"])
    with_image = {int(k) for k, v in truth["objects"].items() if v["has_image"]}
    assert set(index["object_id"]) == with_image - {truth["specials"]["truncated"]}
    assert index["target"].isna().all()


def test_cli_reports_and_fails_cleanly(
    fresh_mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "--data-dir",
            str(fresh_mirror),
            "--size",
            str(SIZE),
            "--workers",
            "1",
            "--task",
            "multiclass",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert "indexed" in captured.out and "1 undecodable" in captured.out
    assert "skipped object" in captured.err
    status = main(["--data-dir", str(tmp_path / "nothing"), "--size", "64"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("met_vision.prepare: error: no mirror database") and "\n" not in err
    assert (
        main(["--data-dir", str(fresh_mirror), "--task", "multiclass", "--label-column", "medium"])
        == 2
    )
    assert "unknown label column" in capsys.readouterr().err
