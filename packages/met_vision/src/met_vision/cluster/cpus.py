"""How many CPUs a job may use: its affinity mask, capped by a SLURM allocation."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask (cgroup/cpuset), capped by SLURM's
    `SLURM_CPUS_PER_TASK` when set; `os.cpu_count()` where there is no affinity call."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)
