"""SLURM support: reading the job's environment, the cluster plugin and a stable run id.

Under ``srun`` every task is one training process. Lightning's ``SLURMEnvironment`` reads the
ranks from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID`` and the world size from
``SLURM_NTASKS``. Its own requeue (``auto_requeue``) is off: it would run ``scontrol requeue``
from rank zero, inside the container, where there is no Slurm client. The batch shell requeues
instead, on the host (``docker/slurm/*.sbatch``), after `met_vision.cluster.resume.RequeueCheckpoint`
has checkpointed the step. The requeued job keeps its job id, so ``run_id()`` gives it the same
run directory, where `met_vision.cluster.resume.resume_checkpoint` finds the newest checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_RANGE = re.compile(r"^(\d+)-(\d+)$")


@dataclass(frozen=True)
class SlurmInfo:
    """The SLURM variables a training process depends on."""

    job_id: str
    job_name: str | None
    ntasks: int
    procid: int
    localid: int
    nodeid: int
    nodes: list[str]
    ntasks_per_node: int | None
    array_job_id: str | None = None
    array_task_id: str | None = None

    @property
    def requeue_id(self) -> str:
        """The id ``scontrol requeue`` needs (``<array job>_<task>`` for array jobs)."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    @property
    def is_interactive(self) -> bool:
        """``salloc``/``srun --pty bash`` sessions: Lightning does not treat them as SLURM jobs."""
        return self.job_name in ("bash", "interactive")


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list: ``gpu[01-03,07],login1`` -> 4 + 1 hosts."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = match.group(1), match.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            m = _RANGE.match(part)
            if m:
                lo, hi = m.group(1), m.group(2)
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{part}")
    return hosts


def _first_int(value: str | None) -> int | None:
    # SLURM_NTASKS_PER_NODE may read "4" or "4(x2)"
    if not value:
        return None
    m = re.match(r"\d+", value)
    return int(m.group(0)) if m else None


def slurm_info(env: Mapping[str, str] | None = None) -> SlurmInfo | None:
    """The job's SLURM variables, or None outside a SLURM job step.

    Raises:
        ValueError: when a variable is present but malformed (names the variable).
    """
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env or "SLURM_NTASKS" not in env:
        return None

    def _int(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"SLURM variable {name}={raw!r} is not an integer") from None

    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    return SlurmInfo(
        job_id=env["SLURM_JOB_ID"],
        job_name=env.get("SLURM_JOB_NAME"),
        ntasks=_int("SLURM_NTASKS", 1),
        procid=_int("SLURM_PROCID", 0),
        localid=_int("SLURM_LOCALID", 0),
        nodeid=_int("SLURM_NODEID", 0),
        nodes=expand_nodelist(nodelist),
        ntasks_per_node=_first_int(env.get("SLURM_NTASKS_PER_NODE")),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
    )


def check_layout(info: SlurmInfo, devices: Any, num_nodes: int) -> None:
    """Check that ``srun`` started one task per device on every node.

    Raises:
        ValueError: with the trainer and sbatch settings that disagree.
    """
    if info.is_interactive:
        return
    if len(info.nodes) != num_nodes:
        raise ValueError(
            f"the job has {len(info.nodes)} node(s) ({','.join(info.nodes)}) but "
            f"--trainer.num_nodes is {num_nodes}; set it to match #SBATCH --nodes"
        )
    per_node = devices if isinstance(devices, int) else None
    if isinstance(devices, list | tuple):
        per_node = len(devices)
    if per_node is not None and per_node > 0 and info.ntasks != per_node * num_nodes:
        raise ValueError(
            f"SLURM_NTASKS={info.ntasks} but --trainer.devices {per_node} x --trainer.num_nodes "
            f"{num_nodes} = {per_node * num_nodes}; use #SBATCH --ntasks-per-node={per_node} "
            "and launch with srun"
        )


def cluster_plugins(env: Mapping[str, str] | None = None) -> list[Any]:
    """``[SLURMEnvironment(auto_requeue=False)]`` inside a SLURM job step (requeue: the batch shell).

    Outside SLURM (or in an interactive allocation) the list is empty and Lightning picks its
    default environment.
    """
    info = slurm_info(env)
    if info is None or info.is_interactive:
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False, requeue_signal=signal.SIGUSR1)]


def run_id(env: Mapping[str, str] | None = None) -> str | None:
    """``slurm-<job id>`` inside a SLURM job (the same after a requeue), else None."""
    info = slurm_info(env)
    return None if info is None else f"slurm-{info.requeue_id}"
