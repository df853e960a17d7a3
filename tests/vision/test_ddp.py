"""DDP with 2 CPU processes (gloo): exact metrics, rank-zero files, a checkpoint that loads alone.

Evaluation under DDP sees every sample exactly once, so the test metrics, the validation score
and the multilabel thresholds tuned on validation equal those of one process to the last bit.

The training runs in a subprocess (``python -m met_vision.fit``; Lightning's ``ddp`` launcher
starts the second rank by re-running that command), so the pytest process stays clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from met_vision.data import MetDataModule
from met_vision.fit import main
from met_vision.trainers.classification import ClassificationTask

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"


def _validate_alone(best: Path) -> tuple[dict[str, float], ClassificationTask]:
    """Validate the checkpoint's weights in one process (thresholds are tuned again)."""
    state = torch.load(best, map_location="cpu", weights_only=False)
    dm = MetDataModule(**state["datamodule_hyper_parameters"])
    model = ClassificationTask.load_from_checkpoint(best, map_location="cpu")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    (logged,) = trainer.validate(model, datamodule=dm, verbose=False)
    return logged, model


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_ddp_two_processes_match_a_single_process(task, tiny_mirror, tmp_path):
    run_dir = tmp_path / "ddp"
    runs_root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MET_VISION_"))}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "met_vision.fit",
        "--config", str(CONF / f"{task}.yaml"),
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
    # exactly once per sample: the same count, the same metrics, to the last bit
    assert metrics["num_test_samples"] == alone["num_test_samples"]
    assert metrics["test"] == alone["test"]
    assert metrics["per_class"] == alone["per_class"]
    if task == "multiclass":
        assert metrics["confusion_matrix"] == alone["confusion_matrix"]
        assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_test_samples"]

    # validation of the epoch that saved best.ckpt ran under DDP; one process on the same weights
    # gets the same score and (multilabel) tunes the same thresholds on the same samples
    logged, revalidated = _validate_alone(best)
    assert logged["val/score"] == pytest.approx(metrics["best_val_score"], rel=0, abs=0)
    if task == "multilabel":
        tuned_under_ddp = ClassificationTask.load_from_checkpoint(best, map_location="cpu")
        for name in ("thr_f1", "thr_f2", "thr_f1_class", "thr_f2_class"):
            assert torch.equal(getattr(revalidated, name), getattr(tuned_under_ddp, name)), name
        assert metrics["thresholds"] == alone["thresholds"]
