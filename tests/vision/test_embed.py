"""`python -m met_vision.embed`: embeddings, clusters with montages, and the `similar` lookup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from xai_support import TrainedModel, control_model, quick_model  # noqa: F401

from met_vision import embed


def test_embed_writes_index_clusters_and_montages(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "emb"
    args = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    assert embed.main([*args, "--out", str(out), "--clusters", "3"]) == 0
    vectors = np.load(out / "embeddings.npy")
    index = pd.read_parquet(out / "index.parquet")
    meta = json.loads((out / "meta.json").read_text())
    assert vectors.shape == (len(index), meta["dim"]) and meta["dim"] > 0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert index["row"].tolist() == list(range(len(index)))
    assert set(index["split"]) == {"train", "val", "test"}
    clusters = json.loads((out / "clusters.json").read_text())
    assert sorted(c["cluster"] for c in clusters) == [0, 1, 2]
    assert sum(c["size"] for c in clusters) == len(index)
    for c in clusters:
        with Image.open(out / c["montage"]) as montage:
            assert montage.format == "PNG" and montage.width >= 96

    query = int(index["object_id"][0])
    capsys.readouterr()
    assert (
        embed.main(["similar", "--index", str(out), "--object-id", str(query), "-k", "5", "--json"])
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 5 and query not in [f["object_id"] for f in found]
    sims = [f["similarity"] for f in found]
    assert sims == sorted(sims, reverse=True)
    expected = np.sort(vectors[1:] @ vectors[0])[::-1][:5]
    np.testing.assert_allclose(sims, expected, rtol=1e-5)


def test_similar_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert embed.main(["similar", "--index", str(tmp_path), "--object-id", "1"]) == 2
    assert "is not an embedding index" in capsys.readouterr().err
    np.save(tmp_path / "embeddings.npy", np.eye(2, dtype=np.float32))
    pd.DataFrame({"row": [0, 1], "object_id": [5, 6], "image": ["a", "b"]}).to_parquet(
        tmp_path / "index.parquet"
    )
    assert embed.main(["similar", "--index", str(tmp_path), "--object-id", "7"]) == 2
    assert "object 7 is not in" in capsys.readouterr().err
    assert embed.main(["similar", "--index", str(tmp_path), "--object-id", "5", "-k", "3"]) == 0
    assert "6" in capsys.readouterr().out


@pytest.mark.slow
def test_neighbours_share_tags(control_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "emb"
    args = ["--ckpt", str(control_model.ckpt), "--data-dir", str(control_model.data_dir)]
    assert embed.main([*args, "--split", "test", "--out", str(out), "--clusters", "6"]) == 0
    index = pd.read_parquet(out / "index.parquet")
    truth = control_model.truth["objects"]
    tags = [set(truth[str(oid)]["tags"]) for oid in index["object_id"]]

    def jaccard(a: set[str], b: set[str]) -> float:
        return len(a & b) / len(a | b) if a | b else 1.0

    near, rand = [], []
    rng = np.random.default_rng(0)
    for oid, own in zip(index["object_id"], tags, strict=True):
        found = embed.similar(out, int(oid), k=3)
        rows = index.set_index("object_id").loc[found["object_id"]]
        near += [jaccard(own, tags[int(r)]) for r in rows["row"]]
        rand += [jaccard(own, tags[int(r)]) for r in rng.integers(0, len(index), 3)]
    assert np.mean(near) > np.mean(rand) + 0.15
