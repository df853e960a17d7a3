"""SLURM environment handling with simulated variables, and a real SIGUSR1 requeue in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment

from met_vision.cluster import slurm

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"

JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "met-train-2n",
    "SLURM_NTASKS": "8",
    "SLURM_NTASKS_PER_NODE": "4(x2)",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_NODELIST": "gpu[07-08]",
}


def test_expand_nodelist():
    assert slurm.expand_nodelist("gpu[01-03,07],login1") == [
        "gpu01",
        "gpu02",
        "gpu03",
        "gpu07",
        "login1",
    ]
    assert slurm.expand_nodelist("node5") == ["node5"]
    assert slurm.expand_nodelist("a[9-11]") == ["a9", "a10", "a11"]


def test_slurm_info_reads_the_job_step():
    info = slurm.slurm_info(JOB)
    assert info is not None
    assert (info.ntasks, info.procid, info.localid, info.nodeid) == (8, 5, 1, 1)
    assert info.nodes == ["gpu07", "gpu08"]
    assert info.ntasks_per_node == 4
    assert info.requeue_id == "4242"
    assert slurm.run_id(JOB) == "slurm-4242"
    array = {**JOB, "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}
    assert slurm.run_id(array) == "slurm-4240_2"
    assert slurm.slurm_info({"PATH": "/bin"}) is None
    with pytest.raises(ValueError, match="SLURM_PROCID='x' is not an integer"):
        slurm.slurm_info({**JOB, "SLURM_PROCID": "x"})


def test_check_layout_names_the_mismatch():
    info = slurm.slurm_info(JOB)
    assert info is not None
    slurm.check_layout(info, devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"2 node\(s\) .* --trainer.num_nodes is 1"):
        slurm.check_layout(info, devices=4, num_nodes=1)
    with pytest.raises(ValueError, match=r"SLURM_NTASKS=8 but --trainer\.devices 2 x"):
        slurm.check_layout(info, devices=2, num_nodes=2)


def test_cluster_plugin_gives_lightning_the_ranks(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)
    assert slurm.cluster_plugins() == []
    for key, value in JOB.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "unset")  # main_address writes it; restored at teardown
    monkeypatch.delenv("MASTER_ADDR")
    (plugin,) = slurm.cluster_plugins()
    assert isinstance(plugin, SLURMEnvironment)
    assert plugin.auto_requeue and plugin.requeue_signal == signal.SIGUSR1
    assert (plugin.world_size(), plugin.global_rank(), plugin.local_rank(), plugin.node_rank()) == (
        8,
        5,
        1,
        1,
    )
    assert plugin.main_address == "gpu07"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert slurm.cluster_plugins() == []


SIGNAL_CALLBACK = '''
import os, signal
from lightning.pytorch.callbacks import Callback

class SignalAt(Callback):
    """Send SIGUSR1 to this process after a given training batch (as SLURM would)."""
    def __init__(self, batch: int = 1) -> None:
        self.batch = batch
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGUSR1)
'''


@pytest.mark.slow
def test_sigusr1_checkpoints_and_requeues_then_resumes(tiny_mirror, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    (tmp_path / "slurm_signal_helper.py").write_text(SIGNAL_CALLBACK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MET_VISION_"))}
    env.update(
        {
            "SLURM_JOB_ID": "777",
            "SLURM_JOB_NAME": "met-train",
            "SLURM_NTASKS": "1",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0",
            "SLURM_JOB_NODELIST": "localhost",
            "PATH": f"{bin_dir}:{env['PATH']}",
            "PYTHONPATH": f"{tmp_path}:{env.get('PYTHONPATH', '')}",
            "MASTER_PORT": "0",
        }
    )
    runs = tmp_path / "runs"
    args = [
        sys.executable, "-m", "met_vision.fit",
        "--config", str(CONF / "multiclass.yaml"),
        "--data.data_dir", str(tiny_mirror),
        "--runs_root", str(runs), "--name", "requeue",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "4",
        "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1",
        "--test", "false",
    ]  # fmt: skip
    first = subprocess.run(
        [*args, "--trainer.callbacks+=slurm_signal_helper.SignalAt"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = runs / "requeue" / "slurm-777"  # the job id names the run: the same after a requeue
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
    assert calls.read_text().split() == ["requeue", "777"]

    second = subprocess.run(
        args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert "Restoring states from the checkpoint path at" in out
    assert "hpc_ckpt_1.ckpt" in out
    assert json.loads((run_dir / "labels.json").read_text())["task"] == "multiclass"
