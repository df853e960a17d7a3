"""`python -m met_vision.predict`: files, the predictions table, harvested data untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from xai_support import TrainedModel, control_model, quick_model  # noqa: F401

from met_vision import predict

HARVESTED = ("objects", "tags", "object_tags", "constituents", "object_constituents", "images")


def _fingerprint(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for table in HARVESTED:
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return out
    finally:
        conn.close()


def test_predict_split_to_parquet(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "preds.parquet"
    args = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    assert predict.main([*args, "--split", "test", "--top-k", "3", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == list(predict.COLUMNS)
    test_ids = set(quick_model.split_ids("test", labelled_only=False))
    assert set(table["object_id"]) == test_ids
    assert len(table) == 3 * len(test_ids)
    assert table.groupby("object_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3]).all()
    scores = table.pivot(index="object_id", columns="rank", values="score")
    assert (scores[1] >= scores[2]).all() and (scores[2] >= scores[3]).all()
    assert table["model_id"].nunique() == 1 and table["model_id"][0].startswith("test_resnet-")
    manifest = json.loads(
        (quick_model.data_dir / "cache").glob("*/datasets/*/labels.json").__next__().read_text()
    )
    assert table["label_manifest_hash"][0] == manifest["definition_hash"]


def test_predict_images_to_csv(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((50, 70, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "p.csv"
    code = predict.main(
        ["--ckpt", str(quick_model.ckpt), "--images", str(image), "--out", str(out), "--top-k", "2"]
    )
    assert code == 0
    table = pd.read_csv(out)
    assert table["image"].tolist() == [str(image), str(image)]
    assert table["object_id"].isna().all()


def test_write_db_upserts_and_leaves_harvested_tables_alone(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(quick_model.data_dir, data)
    db = data / "met.sqlite"
    before = _fingerprint(db)
    ids = quick_model.split_ids("val")[:4]
    args = [
        "--ckpt",
        str(quick_model.ckpt),
        "--data-dir",
        str(data),
        "--object-ids",
        ",".join(map(str, ids)),
    ]
    assert predict.main([*args, "--write-db", "--top-k", "4"]) == 0
    assert predict.main([*args, "--write-db", "--top-k", "4"]) == 0  # idempotent upsert
    assert _fingerprint(db) == before
    mirror = sqlite3.connect(db)
    assert not mirror.execute(  # the harvester's database gets no table of ours
        "SELECT name FROM sqlite_master WHERE name = 'predictions'"
    ).fetchall()
    mirror.close()
    conn = sqlite3.connect(data / "vision.sqlite")
    rows = conn.execute(
        "SELECT object_id, model_id, top_k, predicted, task FROM predictions ORDER BY 1"
    ).fetchall()
    # the documented join (docs/schema.md): predictions beside the objects they describe
    conn.execute("ATTACH DATABASE ? AS met", (str(db),))
    joined = conn.execute(
        "SELECT o.object_id, p.predicted FROM predictions AS p "
        "JOIN met.objects AS o ON o.object_id = p.object_id ORDER BY 1"
    ).fetchall()
    conn.close()
    assert [r[0] for r in joined] == sorted(ids)
    assert [r[0] for r in rows] == sorted(ids)
    assert len({r[1] for r in rows}) == 1
    top = json.loads(rows[0][2])
    assert len(top) == 4 and top[0]["score"] >= top[-1]["score"]
    assert rows[0][4] == "multilabel"
    assert isinstance(json.loads(rows[0][3]), list)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--object-ids", "77777777", "--out", "x.parquet"], "no stored image"),
        (["--images", "missing.jpg", "--out", "x.parquet"], "not found"),
    ],
)
def test_predict_bad_input(
    quick_model: TrainedModel,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    base = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    assert predict.main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("met_vision.predict: error:") and message in err


# Imported by training only: seconds of start-up that every predict run would pay for nothing.
TRAINING_ONLY = ("lightning", "pytorch_lightning", "torchmetrics", "sklearn", "matplotlib")
GUARD = """
import sys
from met_vision import predict
code = predict.main(sys.argv[1:])
print("loaded:", *sorted(m for m in {names!r} if m in sys.modules))
raise SystemExit(code)
"""


def test_predict_start_up_imports_no_training_stack(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A real predict run over mirror objects, in a fresh interpreter, never imports Lightning,
    torchmetrics, scikit-learn or matplotlib (a behaviour, not a timing)."""
    ids = ",".join(str(i) for i in quick_model.split_ids("test")[:4])
    out = tmp_path / "preds.parquet"
    args = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    args += ["--object-ids", ids, "--out", str(out), "--device", "cpu", "--num-workers", "1"]
    script = GUARD.format(names=TRAINING_ONLY)
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1] == "loaded:"
    assert pd.read_parquet(out)["object_id"].tolist()[::5] == [int(i) for i in ids.split(",")]


@pytest.mark.slow
def test_trained_model_predicts_the_tags(control_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "preds.parquet"
    args = ["--ckpt", str(control_model.ckpt), "--data-dir", str(control_model.data_dir)]
    assert predict.main([*args, "--split", "test", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    truth = control_model.truth["objects"]
    assert set(table["object_id"]) == set(control_model.split_ids("test", labelled_only=False))
    table = table[[bool(truth[str(oid)]["tags"]) for oid in table["object_id"]]]  # tagged ones
    top1 = table[table["rank"] == 1]
    hits = [
        label in truth[str(oid)]["tags"]
        for oid, label in zip(top1["object_id"], top1["label"], strict=True)
    ]
    assert np.mean(hits) >= 0.8
    chosen = table[table["predicted"]]
    precision = np.mean(
        [
            lab in truth[str(oid)]["tags"]
            for oid, lab in zip(chosen["object_id"], chosen["label"], strict=True)
        ]
    )
    assert precision >= 0.7
