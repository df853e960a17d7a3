"""``RunDirCallback``: writes a run directory's files (rank zero only).

A run directory holds ``config.yaml`` (the resolved config), ``labels.json`` (the label
manifest), ``checkpoints/best.ckpt`` and ``last.ckpt`` (ModelCheckpoint), ``tb/`` and ``csv/``
logs, and after testing ``metrics.json`` (test metrics, parameters, throughput, wall time),
``curves.json`` (PR curves) and ``plots/*.png``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from met_vision.trainers.plots import write_result_plots

log = logging.getLogger("met_vision.trainers.callbacks")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class _Clock:
    """Seconds and images over batches, leaving out each loop's first batch (worker start-up)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.images = 0
        self._last: float | None = None

    def start(self) -> None:
        self._last = None

    def batch_end(self, batch_size: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.seconds += now - self._last
            self.images += batch_size
        self._last = now

    @property
    def rate(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and "image" in batch:
        return len(batch["image"])
    return len(batch[0]) if isinstance(batch, list | tuple) else 0


class RunDirCallback(Callback):
    """Write config, labels, metrics and plots into ``run_dir`` on global rank zero.

    Args:
        run_dir: the run directory.
        config_yaml: the resolved config to store as ``config.yaml`` (None to skip).
        name: the run's name (shown by ``met_vision.compare``).
        started_at: ``time.time()`` when the command started (for ``wall_time_s``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        config_yaml: str | None = None,
        name: str | None = None,
        started_at: float | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config_yaml = config_yaml
        self.name = name or self.run_dir.parent.name
        self.started_at = started_at if started_at is not None else time.time()
        self.train_clock = _Clock()
        self.test_clock = _Clock()
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None

    # ------------------------------------------------------------------ set-up files
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Create the run directory and write ``config.yaml`` and ``labels.json``."""
        if not trainer.is_global_zero:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config_yaml is not None:
            (self.run_dir / "config.yaml").write_text(self.config_yaml)
        manifest = getattr(pl_module, "label_manifest", None)
        if manifest:
            write_json(self.run_dir / "labels.json", manifest)

    # ------------------------------------------------------------------ timing
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.fit_seconds = time.perf_counter() - self._fit_start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_clock.start()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.train_clock.batch_end(_batch_size(batch) * trainer.world_size)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_clock.start()  # validation time is not training time

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_clock.start()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.test_clock.batch_end(_batch_size(batch) * trainer.world_size)

    # ------------------------------------------------------------------ results
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write ``metrics.json``, ``curves.json`` and the plots."""
        if not trainer.is_global_zero:
            return
        results = dict(getattr(pl_module, "test_results", {}) or {})
        if not results:
            log.warning("no test results to write (empty test split?)")
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        curves = results.pop("pr_curves", None)
        if curves:
            write_json(self.run_dir / "curves.json", curves)
        names = list(getattr(pl_module, "label_names", []))
        plots = write_result_plots({**results, "pr_curves": curves}, names, self.run_dir / "plots")
        write_json(self.run_dir / "metrics.json", self.summary(trainer, pl_module, results, plots))

    def summary(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        results: dict[str, Any],
        plots: list[Path],
    ) -> dict[str, Any]:
        """The ``metrics.json`` document."""
        hp = pl_module.hparams
        manifest = getattr(pl_module, "label_manifest", None) or {}
        count_fn = getattr(pl_module, "parameter_counts", None)
        counts = count_fn() if callable(count_fn) else {}
        data_cfg = getattr(pl_module, "data_config", {}) or {}
        ckpt = next(
            (
                cb
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and cb.monitor is not None
            ),
            None,
        )
        best_score = ckpt.best_model_score if ckpt is not None else None
        return {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "task": hp.get("task"),
            "backbone": hp.get("backbone"),
            "num_classes": hp.get("num_classes"),
            "labels": manifest.get("names"),
            "labels_hash": manifest.get("definition_hash"),
            **counts,
            "input_size": list(data_cfg.get("input_size", [])) or None,
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "best_checkpoint": (ckpt.best_model_path or None) if ckpt is not None else None,
            "best_val_score": float(best_score) if best_score is not None else None,
            "train_images_per_s": self.train_clock.rate,
            "inference_images_per_s": self.test_clock.rate,
            "fit_time_s": self.fit_seconds,
            "wall_time_s": time.time() - self.started_at,
            "num_test_samples": results.get("num_samples"),
            "test": results.get("metrics", {}),
            "per_class": results.get("per_class", {}),
            "confusion_matrix": results.get("confusion_matrix"),
            "thresholds": results.get("thresholds"),
            "plots": [str(p.relative_to(self.run_dir)) for p in plots],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
