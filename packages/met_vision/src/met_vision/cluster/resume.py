"""Resuming a requeued or restarted run: the newest checkpoint, and a checkpoint on the requeue signal.

On the cluster the batch shell owns the requeue (``docker/slurm/*.sbatch``): Slurm sends
``SIGUSR1`` to the batch shell 90 s before the time limit (``#SBATCH --signal=B:USR1@90``), the
shell's ``trap`` forwards it to the training step (``srun`` hands it to every task), and once the
step has exited the shell runs ``scontrol requeue`` on the host, where the Slurm client is. Inside
the container each training process handles the signal with `RequeueCheckpoint`: at the end of
the current batch all ranks agree to stop, write ``<run dir>/hpc_ckpt_<n>.ckpt`` (atomically:
temporary file, then rename) and leave with `EXIT_REQUEUE`, without testing.

A requeued job keeps its id and so its run directory (`met_vision.cluster.slurm.run_id`); there
`resume_checkpoint` picks the most advanced of ``hpc_ckpt_*.ckpt`` and ``checkpoints/last.ckpt``
by the global step stored in each (a job stopped by SIGTERM has no new ``hpc_ckpt``, but its
``last.ckpt`` is newer than an old one). A file that cannot be read (cut short by a kill) is
skipped with a warning. Resuming restores the ``best.ckpt`` callback's best score, so a worse
epoch never overwrites a better ``best.ckpt``.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("met_vision.cluster.resume")
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpointed on the requeue signal; the batch shell requeues
HPC_PREFIX = "hpc_ckpt_"


class RequeueRequested(Exception):
    """Raised out of ``Trainer.fit`` once the requeue checkpoint is written."""

    def __init__(self, path: str) -> None:
        super().__init__(f"checkpointed to {path} for a requeue")
        self.path = path


@dataclass(frozen=True)
class CheckpointProgress:
    """Where a checkpoint stands in training."""

    path: Path
    global_step: int
    epoch: int


def checkpoint_progress(path: Path) -> CheckpointProgress | None:
    """The global step and epoch stored in a Lightning checkpoint; None when it cannot be read.

    The file is memory-mapped, so the weights are not read.
    """
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return CheckpointProgress(path, int(state["global_step"]), int(state["epoch"]))
    except Exception as exc:  # a truncated zip, a foreign file: not a resume candidate
        log.warning("not resuming from %s: cannot read it (%s)", path, exc)
        return None


def resume_checkpoint(run_dir: Path | str) -> Path | None:
    """The most advanced of ``hpc_ckpt_*.ckpt`` and ``checkpoints/last.ckpt`` in ``run_dir``.

    Ties go to ``last.ckpt`` (written after validation, so validation does not run again).
    """
    run_dir = Path(run_dir)
    candidates = [
        *sorted(run_dir.glob(f"{HPC_PREFIX}*.ckpt")),
        run_dir / "checkpoints" / "last.ckpt",
    ]
    found = [p for c in candidates if c.is_file() and (p := checkpoint_progress(c)) is not None]
    if not found:
        return None
    newest = max(found, key=lambda p: (p.global_step, p.path.name == "last.ckpt"))
    return newest.path


def next_hpc_path(run_dir: Path) -> Path:
    """``hpc_ckpt_<n>.ckpt`` with n one above the highest present (Lightning's naming)."""
    numbers = [
        int(p.stem.removeprefix(HPC_PREFIX))
        for p in run_dir.glob(f"{HPC_PREFIX}*.ckpt")
        if p.stem.removeprefix(HPC_PREFIX).isdigit()
    ]
    return run_dir / f"{HPC_PREFIX}{max(numbers, default=0) + 1}.ckpt"


def keep_csv_history(run_dir: Path | str) -> Path | None:
    """Move ``csv/metrics.csv`` aside (``metrics-<n>.csv``) before a resumed run logs again.

    Lightning's CSVLogger rewrites ``metrics.csv`` from scratch, which would drop the epochs
    before the requeue; TensorBoard adds an event file and keeps them anyway.
    """
    current = Path(run_dir) / "csv" / "metrics.csv"
    if not current.is_file():
        return None
    n = 1
    while (kept := current.with_name(f"metrics-{n}.csv")).exists():
        n += 1
    os.replace(current, kept)
    return kept


class RequeueCheckpoint(Callback):
    """On ``signum`` (SIGUSR1): checkpoint at the end of the batch on every rank, then stop.

    Args:
        run_dir: where ``hpc_ckpt_<n>.ckpt`` goes (the run directory).
        signum: the requeue signal.
    """

    def __init__(self, run_dir: Path | str, signum: int = signal.SIGUSR1) -> None:
        self.run_dir = Path(run_dir)
        self.signum = signum
        self.requested = False
        self._previous: Any = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Install the signal handler for training."""
        if stage == "fit" and self._previous is None:
            self._previous = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the previous handler back."""
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        """Where every rank stops together when any of them got the signal."""
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = Path(trainer.strategy.broadcast(str(next_hpc_path(self.run_dir))))
        partial = path.with_name(path.name + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, path)
            log.warning("requeue signal: checkpointed to %s; stopping for the requeue", path)
        trainer.strategy.barrier("requeue-checkpoint")
        raise RequeueRequested(str(path))
