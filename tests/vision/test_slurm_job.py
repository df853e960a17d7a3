"""The real sbatch template, submitted with docker/slurm/submit.sh, under stand-in Slurm/Apptainer.

The stand-ins (`slurm_standins`) keep ``scontrol`` where the real one is: on the host PATH of the
batch shell, not on the container's PATH. A tiny real training (test_resnet) is signalled as at
the time limit (``SIGUSR1`` to the batch shell), checkpoints, is requeued from the batch shell and
resumes from its ``hpc_ckpt`` in the same run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from slurm_standins import install

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docker" / "slurm" / "train-1node-4gpu.sbatch"
SUBMIT = REPO / "docker" / "slurm" / "submit.sh"
BEST = "ModelCheckpoint{'monitor': 'val/score'"  # the state key of the best.ckpt callback

WAITER = '''
import os, time
from pathlib import Path
from lightning.pytorch.callbacks import Callback

class WaitForTimeLimit(Callback):
    """First run only: at epoch 1, batch 1, make the stand-in's clock reach the time limit and
    wait (at most 120 s) until the requeue signal has reached this process."""
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if os.environ.get("SLURM_RESTART_COUNT") or (trainer.current_epoch, batch_idx) != (1, 1):
            return
        Path(os.environ["STANDIN_TIME_LIMIT"]).touch()
        requeue = [cb for cb in trainer.callbacks if type(cb).__name__ == "RequeueCheckpoint"]
        deadline = time.monotonic() + 120
        while not requeue[0].requested and time.monotonic() < deadline:
            time.sleep(0.05)
'''


def _callback_state(ckpt: Path, prefix: str) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    (key,) = [k for k in state["callbacks"] if k.startswith(prefix)]
    return {"global_step": state["global_step"], **state["callbacks"][key]}


def _wait_for(path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the stand-in job did not end within {timeout} s"
        time.sleep(0.2)
    return json.loads(path.read_text())


@pytest.mark.slow
def test_sbatch_template_requeues_on_the_host_and_resumes(tiny_mirror, tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    install(bin_dir, state)
    submit_dir = tmp_path / "submit"
    (submit_dir / "configs").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "vision" / "conf" / "multiclass.yaml", submit_dir / "configs")
    (tmp_path / "met.sif").write_bytes(b"stand-in image")
    (tmp_path / "waiter.py").write_text(WAITER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MET_VISION_"))}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        PYTHONPATH=f"{tmp_path}:{env.get('PYTHONPATH', '')}",
        STANDIN_SLURM_STATE=str(state),
        STANDIN_TIME_LIMIT=str(tmp_path / "time-limit-reached"),
        MET_SIF=str(tmp_path / "met.sif"),
        MET_DATA=str(tiny_mirror),
        MET_SBATCH_ARGS="--ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1",
        OMP_NUM_THREADS="1",
    )
    overrides = [
        "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "6",
        "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
        "--trainer.callbacks+=waiter.WaitForTimeLimit",
    ]  # fmt: skip
    assert not (submit_dir / "logs").exists()
    submitted = subprocess.run(
        ["bash", str(SUBMIT), str(TEMPLATE), "configs/multiclass.yaml", *overrides],
        cwd=submit_dir, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.split()[-1]
    job = _wait_for(state / f"job-{job_id}.json", timeout=420)
    log_path = submit_dir / "logs" / f"met-train-{job_id}.out"
    log = log_path.read_text() if log_path.exists() else job.get("reason", "")
    assert job["state"] == "COMPLETED" and job["restarts"] == 1, log[-4000:]

    # the log opened before the first line: it starts with the batch shell's first echo
    assert log.startswith(f"job {job_id} on localhost, restart count 0")
    assert "batch shell: SIGUSR1" in log and f"requeueing job {job_id}" in log
    assert f"job {job_id} on localhost, restart count 1" in log
    # scontrol ran once, from the batch shell (the spooled script) on the host, not from training
    calls = [json.loads(line) for line in (state / "scontrol-calls.jsonl").read_text().splitlines()]
    assert [c["argv"] for c in calls] == [["requeue", job_id]]
    assert calls[0]["parent"].startswith("bash ") and "slurm_script" in calls[0]["parent"]

    run_dir = submit_dir / "runs" / "test_resnet-multiclass" / f"slurm-{job_id}"
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert f"resuming from {hpc}" in log and "Restoring states from the checkpoint path" in log
    assert _callback_state(hpc, BEST)["global_step"] == 6 + 2  # epoch 1, batch 1
    assert not list(run_dir.glob("*.partial"))
    # the resumed run finished both epochs and tested; last.ckpt carries the best score
    last = _callback_state(run_dir / "checkpoints" / "last.ckpt", BEST)
    best = _callback_state(run_dir / "checkpoints" / "best.ckpt", BEST)
    assert last["global_step"] == 12
    assert last["best_model_score"] == best["best_model_score"]
    assert json.loads((run_dir / "metrics.json").read_text())["task"] == "multiclass"
    # the first run's logged epoch is kept beside the resumed run's CSV log
    assert (run_dir / "csv" / "metrics-1.csv").is_file() and (
        run_dir / "csv" / "metrics.csv"
    ).is_file()


def test_plain_sbatch_writes_its_log_into_the_submit_dir(tmp_path):
    """Without submit.sh the template's own --output points at the submit dir, which exists."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    install(bin_dir, state)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STANDIN_SLURM_STATE=str(state))
    # no such config: the job ends at once with one line, in a log that exists
    out = subprocess.run(
        ["sbatch", str(TEMPLATE), "configs/none.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job_id = out.stdout.split()[-1]
    job = _wait_for(state / f"job-{job_id}.json", timeout=60)
    assert job["output"] == str(tmp_path / f"met-train-{job_id}.out")
    log = Path(job["output"]).read_text()
    assert log.startswith(f"job {job_id} on localhost, restart count 0")
    assert (
        f"no config file configs/none.yaml (paths are relative to the submit dir {tmp_path})" in log
    )
    assert job["state"] == "FAILED" and job["exit_code"] == 2
