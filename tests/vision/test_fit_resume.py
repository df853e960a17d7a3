"""Which checkpoint a requeued or restarted run resumes from (real checkpoint files)."""

from __future__ import annotations

from pathlib import Path

import torch

from met_vision.cluster.resume import next_hpc_path, resume_checkpoint


def _save(path: Path, global_step: int, epoch: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"global_step": global_step, "epoch": epoch, "state_dict": {"w": torch.ones(64)}}, path
    )
    return path


def test_the_most_advanced_checkpoint_wins_whatever_its_name(tmp_path):
    assert resume_checkpoint(tmp_path) is None  # nothing to resume: train from the start
    _save(tmp_path / "hpc_ckpt_1.ckpt", 80, 1)
    last = _save(tmp_path / "checkpoints" / "last.ckpt", 120, 2)  # SIGTERM after hpc_ckpt_1
    assert resume_checkpoint(tmp_path) == last
    hpc2 = _save(tmp_path / "hpc_ckpt_2.ckpt", 150, 3)
    assert resume_checkpoint(tmp_path) == hpc2
    assert next_hpc_path(tmp_path) == tmp_path / "hpc_ckpt_3.ckpt"
    _save(tmp_path / "hpc_ckpt_3.ckpt", 120, 2)  # same step as last.ckpt, older than hpc_ckpt_2
    assert resume_checkpoint(tmp_path) == hpc2


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path, caplog):
    last = _save(tmp_path / "checkpoints" / "last.ckpt", 40, 1)
    full = _save(tmp_path / "hpc_ckpt_1.ckpt", 60, 1).read_bytes()
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(full[: len(full) // 2])
    assert resume_checkpoint(tmp_path) == last
    assert "not resuming from" in caplog.text and "hpc_ckpt_1.ckpt" in caplog.text
    tie = _save(tmp_path / "hpc_ckpt_2.ckpt", 40, 1)
    assert resume_checkpoint(tmp_path) == last and tie.is_file()  # a tie goes to last.ckpt
