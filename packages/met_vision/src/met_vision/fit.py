"""``python -m met_vision.fit --config configs/<name>.yaml``: train, then evaluate on the test split.

A thin ``main(args=None)`` around ``LightningCLI`` (YAML ``--config`` plus dotted overrides such
as ``--trainer.devices 4``, ``--model.backbone resnet101``, ``--data.data_dir ...``). Extra
options:

* ``--run_dir DIR`` (default ``<runs_root>/<name>/<timestamp>``, or ``slurm-<job id>`` inside a
  SLURM job so a requeued job finds its run again); ``--name``; ``--runs_root`` (``runs``).
* ``--ckpt_path PATH|last`` resumes training from a checkpoint.
* ``--test false`` skips the final test; ``--test_ckpt best|last|current`` picks the weights.
* ``--early_stopping.*`` and ``--checkpoint.*`` configure EarlyStopping and ModelCheckpoint
  (both monitor ``val/score``: accuracy for multiclass, macro mAP for multilabel).

The number of classes and the label manifest are linked from the data module into the model;
the model's backbone is linked into the data module (input size, mean and std from timm).
A config or option error prints one ``met_vision.fit: error: ...`` line and exits with 2.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from met_vision.cluster import resume, slurm
from met_vision.data.datamodule import MetDataModule
from met_vision.trainers.backbones import check_backbone_name
from met_vision.trainers.callbacks import RunDirCallback
from met_vision.trainers.classification import ClassificationTask

PROG = "met_vision.fit"
RUN_DIR_ENV = "MET_VISION_RUN_DIR"  # handed from rank zero to the DDP processes it launches
DEBUG_ENV = "MET_VISION_DEBUG"


def _manifest(label_space: Any) -> dict[str, Any]:
    return label_space.manifest()


class MetCLI(LightningCLI):
    """LightningCLI with the run directory, checkpoints, early stopping and SLURM wiring."""

    def __init__(self, args: list[str] | None, started_at: float | None = None) -> None:
        self.started_at = started_at if started_at is not None else time.time()
        self.run_dir: Path = Path(".")
        super().__init__(
            ClassificationTask,
            MetDataModule,
            save_config_callback=None,
            trainer_defaults={"max_epochs": 30, "log_every_n_steps": 10, "benchmark": True},
            seed_everything_default=0,
            parser_kwargs={
                "exit_on_error": False,
                "allow_abbrev": False,
                "prog": f"python -m {PROG}",
            },
            args=args,
            run=False,
            auto_configure_optimizers=False,
            load_from_checkpoint_support=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Run-directory options, checkpointing, early stopping and the data/model links."""
        parser.add_argument("--name", type=str | None, default=None, help="run name")
        parser.add_argument("--runs_root", type=str, default="runs", help="parent of run dirs")
        parser.add_argument("--run_dir", type=str | None, default=None, help="run directory")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="resume from")
        parser.add_argument("--fit", type=bool, default=True, help="train (false: test only)")
        parser.add_argument("--test", type=bool, default=True, help="evaluate on test split")
        parser.add_argument(
            "--test_ckpt", type=str, default="best", help="best | last | current weights"
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/score",
                "early_stopping.mode": "max",
                "early_stopping.patience": 5,
            }
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/score",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": False,  # last.ckpt: a second callback, every epoch
                "checkpoint.save_top_k": 1,
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("data.task", "model.task")
        parser.link_arguments("model.backbone", "data.model_name")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments(
            "data.label_space", "model.labels", compute_fn=_manifest, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        """Choose the run directory (the same in every process of a run)."""
        cfg = self.config
        if cfg.test_ckpt not in ("best", "last", "current"):
            raise ValueError(f"--test_ckpt must be best, last or current, not {cfg.test_ckpt!r}")
        name = cfg.name or f"{cfg.model.backbone}-{cfg.data.task}"
        cfg.name = name
        check_backbone_name(cfg.model.backbone)
        explicit = cfg.run_dir or os.environ.get(RUN_DIR_ENV)
        if explicit:
            run_dir = Path(explicit)
        else:
            stamp = (
                slurm.run_id()
                or (
                    f"elastic-{os.environ['TORCHELASTIC_RUN_ID']}"
                    if "TORCHELASTIC_RUN_ID" in os.environ
                    else None
                )
                or datetime.now().strftime("%Y%m%d-%H%M%S")
            )
            run_dir = Path(cfg.runs_root) / name / stamp
            if run_dir.exists() and stamp[0].isdigit():
                run_dir = run_dir.with_name(f"{stamp}-{os.getpid()}")
        self.run_dir = run_dir.resolve()
        cfg.run_dir = str(self.run_dir)
        info = slurm.slurm_info()
        if info is not None:
            slurm.check_layout(info, cfg.trainer.devices, cfg.trainer.num_nodes)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the loggers, the run-dir callback and the SLURM plugin; point checkpoints at the run."""
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = [
                TensorBoardLogger(self.run_dir, name="tb", version=""),
                CSVLogger(self.run_dir, name="csv", version=""),
            ]
        if trainer_cfg.get("default_root_dir") is None:
            kwargs["default_root_dir"] = str(self.run_dir)
        callbacks = list(trainer_cfg.get("callbacks") or [])
        if trainer_cfg.get("plugins") is None:
            plugins = slurm.cluster_plugins()
            if plugins:
                kwargs["plugins"] = plugins
                callbacks.append(resume.RequeueCheckpoint(self.run_dir))
        checkpoint = self._get(self.config_init, "checkpoint")
        if checkpoint is not None and checkpoint.dirpath is None:
            checkpoint.dirpath = str(self.run_dir / "checkpoints")
        config_yaml = self.parser.dump(self.config, skip_unset=False)
        # Lightning's save_last only refreshes last.ckpt when a new best is saved; this one
        # rewrites it after every epoch, so --ckpt_path .../last.ckpt resumes where training was
        self.last_checkpoint = ModelCheckpoint(
            dirpath=str(self.run_dir / "checkpoints"),
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )
        callbacks.append(self.last_checkpoint)
        callbacks.append(
            RunDirCallback(self.run_dir, config_yaml, self.config.name, self.started_at)
        )
        kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        # last.ckpt after best.ckpt, so that last.ckpt holds this epoch's best score to resume with
        ordered: list[Any] = trainer.callbacks  # type: ignore[attr-defined]
        ordered.remove(self.last_checkpoint)
        ordered.append(self.last_checkpoint)
        return trainer

    def fit_and_test(self) -> int:
        """Train, then test with the chosen weights; the exit status (`resume.EXIT_REQUEUE` when
        stopped by the requeue signal).

        Training resumes from ``--ckpt_path``, else from the run directory's newest checkpoint
        (`met_vision.cluster.resume.resume_checkpoint`), so a requeued or restarted run goes on.
        """
        cfg = self.config
        os.environ[RUN_DIR_ENV] = str(self.run_dir)
        try:
            if cfg.fit:
                ckpt_path = cfg.ckpt_path or resume.resume_checkpoint(self.run_dir)
                if ckpt_path is not None and cfg.ckpt_path is None:
                    print(f"{PROG}: resuming from {ckpt_path}", file=sys.stderr, flush=True)
                    if self.trainer.is_global_zero:
                        resume.keep_csv_history(self.run_dir)
                try:
                    self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
                except resume.RequeueRequested as stop:
                    print(f"{PROG}: {stop}; exiting {resume.EXIT_REQUEUE}", file=sys.stderr)
                    return resume.EXIT_REQUEUE
            if cfg.test:
                self.trainer.test(
                    self.model, datamodule=self.datamodule, ckpt_path=self._test_ckpt()
                )
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
        return 0

    def _test_ckpt(self) -> str | None:
        cfg = self.config
        if not cfg.fit:
            return cfg.ckpt_path
        if cfg.test_ckpt == "current" or getattr(self.trainer, "fast_dev_run", False):
            return None
        chosen = (
            self.last_checkpoint
            if cfg.test_ckpt == "last"
            else self._get(self.config_init, "checkpoint")
        )
        path = getattr(
            chosen, "last_model_path" if cfg.test_ckpt == "last" else "best_model_path", ""
        )
        if cfg.test_ckpt == "last" and not path:
            path = getattr(chosen, "best_model_path", "")
        return path or None


def _pretty_type(text: str) -> str:
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return text.replace("typing.Literal[", "one of [")


def _one_line(exc: BaseException) -> str:
    """Condense a (possibly multi-line jsonargparse) error into one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0].rstrip(":")
    given = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None
    )
    expected = [
        _pretty_type(ln.removeprefix("- Expected a ").strip())
        for ln in lines
        if ln.startswith("- Expected a ") and "NoneType" not in ln
    ]
    if given is not None:
        text += f": got {given!r}"
        if expected:
            text += f", expected {' or '.join(expected)}"
    elif len(lines) > 1:
        text += ": " + lines[1].lstrip("- ")
    return text if len(text) < 400 else text[:397] + "..."


def main(args: list[str] | None = None) -> int:
    """Run ``fit`` then ``test``; returns the exit status (2 for configuration errors).

    Args:
        args: command-line arguments (default ``sys.argv[1:]``). A leading ``fit`` is accepted.
    """
    started_at = time.time()
    if args is None:
        if sys.argv[1:2] == ["fit"]:
            del sys.argv[1]
        argv = None  # LightningCLI reads sys.argv itself
    else:
        argv = list(args[1:] if args[:1] == ["fit"] else args)
    try:
        with warnings.catch_warnings():  # args from Python while sys.argv holds pytest's, say
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = MetCLI(argv, started_at=started_at)
    except SystemExit as exc:  # --help / --print_config
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except (ArgumentError, ValueError, FileNotFoundError, KeyError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():  # the task's batch hook (normalising on the device) is meant
        warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
        return cli.fit_and_test()


if __name__ == "__main__":
    sys.exit(main())
