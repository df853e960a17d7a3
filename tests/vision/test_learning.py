"""The whole stack learns: a short real training run on the synthetic learnable collection.

The synthetic images draw each tag as a distinct motif and each classification as a distinct
background family, so a small CNN trained for a few epochs must reach multilabel macro mAP
>= 0.9 and multiclass accuracy >= 0.9 on the test split it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from met_vision.data.labels import LabelSpaceConfig
from met_vision.fit import main
from met_vision.prepare import prepare

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"
N_OBJECTS = 1500
CACHE_SIZE = 96


@pytest.fixture(scope="module")
def learnable_mirror(mirror_factory: Callable[..., Path]) -> Path:
    """A 1,500-object mirror with both label spaces' images prepared at 96 px."""
    data_dir = mirror_factory(N_OBJECTS, 0, specials=False)
    for task in ("multiclass", "multilabel"):
        prepare(data_dir, CACHE_SIZE, LabelSpaceConfig(task=task))
    return data_dir


@pytest.mark.slow
@pytest.mark.parametrize(("task", "metric"), [("multiclass", "acc"), ("multilabel", "map_macro")])
def test_short_training_learns_the_synthetic_collection(learnable_mirror, tmp_path, task, metric):
    run_dir = tmp_path / task
    args = [
        "--config", str(CONF / f"learn-{task}.yaml"),
        "--data.data_dir", str(learnable_mirror),
        "--run_dir", str(run_dir),
    ]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_test_samples"] >= 90
    assert metrics["test"][metric] >= 0.9, metrics["test"]
