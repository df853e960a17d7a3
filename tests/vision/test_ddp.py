"""DDP with 2 CPU processes (gloo): synced metrics, rank-zero files, a checkpoint that loads alone.

The training runs in a subprocess (``python -m met_vision.fit``; Lightning's ``ddp`` launcher
starts the second rank by re-running that command), so the pytest process stays clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from met_vision.fit import main
from met_vision.trainers.classification import ClassificationTask

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process(tiny_mirror, tmp_path):
    run_dir = tmp_path / "ddp"
    runs_root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MET_VISION_"))}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "met_vision.fit",
        "--config", str(CONF / "multiclass.yaml"),
        "--data.data_dir", str(tiny_mirror),
        "--run_dir", str(run_dir),
        "--runs_root", str(runs_root),
        "--trainer.strategy", "ddp",
        "--trainer.devices", "2",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # only rank zero wrote: one set of files, TensorBoard events from one process, no other run dir
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    event_pids = {p.name.split(".")[-2] for p in (run_dir / "tb").glob("events.out.tfevents.*")}
    assert len(event_pids) == 1
    assert not runs_root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]

    # the checkpoint loads in a single process, with its labels
    best = run_dir / "checkpoints" / "best.ckpt"
    model = ClassificationTask.load_from_checkpoint(best, map_location="cpu")
    assert model.label_names == metrics["labels"]

    # the same checkpoint evaluated by one process: the DDP metrics were synced over both ranks
    single = tmp_path / "single"
    args = [
        "--config", str(run_dir / "config.yaml"),
        "--run_dir", str(single),
        "--trainer.strategy", "auto",
        "--trainer.devices", "1",
        "--fit", "false",
        "--ckpt_path", str(best),
    ]  # fmt: skip
    assert main(args) == 0
    alone = json.loads((single / "metrics.json").read_text())
    n = alone["num_test_samples"]
    # DistributedSampler pads an odd split with one repeated sample
    assert metrics["num_test_samples"] in (n, n + 1)
    tolerance = 1.0 / n + 1e-6
    for key in ("acc", "acc_top5", "f1_macro"):
        assert metrics["test"][key] == pytest.approx(alone["test"][key], abs=tolerance), key
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_test_samples"]
