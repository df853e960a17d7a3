"""Group-balanced training (bias mitigation): the sampler's draw, and a mitigated model that
amplifies the planted bias less than the baseline, with accuracy beside it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from xai_support import (  # noqa: F401
    AUDIT_SPLIT,
    TrainedModel,
    biased_model,
    make_data,
    mitigated_model,
)

from met_vision import audit
from met_vision.data.datamodule import MetDataModule
from met_vision.fairness import groups

PLANTED = ("background", "warm background", "Women")


def test_group_balanced_sampler_decorrelates_gender_and_background(tmp_path: Path) -> None:
    data_dir = make_data(tmp_path, bias=0.9, n_objects=400, cache_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = MetDataModule(
            data_dir=str(data_dir),
            task="multilabel",
            image_size=48,
            num_workers=0,
            group_balance="sampler",
            group_balance_attribute="warm",
        )
        dm.setup("fit")
        sampler = dm.train_sampler(num_replicas=1, rank=0)
    assert sampler is not None
    draw = np.array(list(iter(sampler)))
    train = dm.frame[dm.frame["split"] == "train"].reset_index(drop=True)
    names = dm.label_names
    women = np.array([names.index("Women") in list(t) for t in train["target"]])
    warm = np.array(
        [groups.image_stats(p)["warmth"] > groups.WARM_THRESHOLD for p in train["path"]]
    )
    assert warm[women].mean() > 0.6  # the planted correlation in the data
    drawn_women = women[draw]
    drawn_warm = warm[draw]
    # in the balanced draw, about half of the women are on warm backgrounds
    assert abs(drawn_warm[drawn_women].mean() - 0.5) < 0.15
    with pytest.raises(ValueError, match="group_balance"):
        MetDataModule(data_dir=str(data_dir), group_balance="bogus")  # type: ignore[arg-type]


@pytest.mark.slow
def test_mitigation_reduces_bias_amplification(
    biased_model: TrainedModel,  # noqa: F811
    mitigated_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "compare"
    code = audit.main(
        [
            "--ckpt",
            str(mitigated_model.ckpt),
            "--baseline",
            str(biased_model.ckpt),
            "--data-dir",
            str(biased_model.data_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "audit.json").read_text())
    comparison = report["comparison"]
    pairs = {(p["analysis"], p["group"], p["label"]): p for p in comparison["flagged_pairs"]}
    assert PLANTED in pairs, comparison
    planted = pairs[PLANTED]
    # the balanced model no longer ties Women to warm backgrounds (or no longer predicts Women
    # at all: then the pair cannot be measured, which is no amplification either)
    assert planted["model"] is None or planted["model"] < planted["baseline"] - 0.02, planted
    assert comparison["flags"]["model"] < comparison["flags"]["baseline"]
    background = comparison["bias_amplification"]["background"]
    assert background["model"] < background["baseline"]
    # accuracy is reported beside the bias figures, for both models
    for key in ("f1_micro", "map_macro"):
        assert 0 < comparison["accuracy"]["model"][key] <= 1
        assert 0 < comparison["accuracy"]["baseline"][key] <= 1
    text = (out / "report.md").read_text()
    assert "## Against the baseline" in text and "comparison.png" in text
    assert (out / "comparison.png").is_file()
