"""SLURM environment handling with simulated variables (the real job: test_slurm_job.py)."""

from __future__ import annotations

import os

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment

from met_vision.cluster import slurm

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
    assert not plugin.auto_requeue  # the batch shell requeues, on the host
    assert (plugin.world_size(), plugin.global_rank(), plugin.local_rank(), plugin.node_rank()) == (
        8,
        5,
        1,
        1,
    )
    assert plugin.main_address == "gpu07"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert slurm.cluster_plugins() == []
