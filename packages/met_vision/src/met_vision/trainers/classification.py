"""``ClassificationTask``: one LightningModule for multiclass and multilabel training.

In the torchgeo manner ``__init__`` calls ``save_hyperparameters()`` and then
``configure_models``, ``configure_losses`` and ``configure_metrics``. The label manifest of the
data (``hparams["labels"]``) travels with every checkpoint, so
``ClassificationTask.load_from_checkpoint(path)`` rebuilds a usable model with no data module.
Its preprocessing (data config, input normalisation, their checkpoint round trip) comes from
``met_vision.trainers.preprocessing.PreprocessingHooks``, its base class.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from met_vision.trainers.backbones import BackboneError, create_backbone, head_parameter_names
from met_vision.trainers.losses import loss_from_hparams
from met_vision.trainers.metrics import (
    ScoreStore,
    scalar_collection,
    tune_thresholds,
)
from met_vision.trainers.optimization import (
    build_optimizer,
    freeze_backbone_batchnorm,
    lr_schedule,
    parameter_groups,
    steps_per_epoch,
)
from met_vision.trainers.preprocessing import PreprocessingHooks
from met_vision.trainers.results import (
    SPLITS,
    UNLOGGED,
    epoch_metrics,
    manifest_of,
    num_classes_for,
    report_results,
    score_metric_for,
)

# Pretrained features need smaller steps than a fresh head (discriminative fine-tuning).
PRETRAINED_BACKBONE_LR_MULT = 0.1


class ClassificationTask(PreprocessingHooks):
    """Image classification with any timm backbone.

    Args:
        task: ``multiclass`` (one label, softmax) or ``multilabel`` (multi-hot, sigmoid).
        backbone: a timm model name (``resnet50``, ``resnet101``, ``inception_resnet_v2``, ...).
        num_classes: outputs of the head; linked from the data module by ``met_vision.fit``.
        labels: the label manifest (``LabelSpace.manifest()``); filled from the data module.
        data_config: the exact preprocessing of the data (timm form: input size, mean, std,
            interpolation, crop); filled from the data module and stored in checkpoints.
        pretrained: start from timm's hub weights (needs network).
        pretrained_path: local ``.pth``/``.ckpt``/``.safetensors`` weights for offline nodes.
        drop_rate: dropout before the classifier.
        global_pool: timm global pooling (``avg``, ``max``, ``avgmax``); None keeps the model's.
            ``max`` suits small motifs in multilabel tagging.
        loss: ``ce`` or ``focal`` (multiclass), ``bce``, ``focal`` or ``asl`` (multilabel);
            None picks ``ce`` / ``bce``.
        label_smoothing: CE label smoothing.
        class_weights: per-class loss weights, or ``"balanced"`` (inverse frequency from the
            manifest counts).
        pos_weight: BCE weight of positives, one value or one per label.
        focal_gamma: focal loss gamma.
        focal_alpha: multilabel focal alpha.
        asl_gamma_neg: ASL negative focusing.
        asl_gamma_pos: ASL positive focusing.
        asl_clip: ASL probability margin.
        optimizer: ``adamw`` or ``sgd`` (Nesterov momentum).
        lr: peak learning rate.
        weight_decay: weight decay (not applied to biases and norm weights).
        momentum: SGD momentum.
        warmup_epochs: linear warm-up length (fractions allowed), then cosine decay per step.
            With a frozen backbone the backbone's warm-up starts again when it unfreezes.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        freeze_backbone_epochs: train only the head for this many epochs (backbone lr 0,
            BatchNorm statistics frozen; safe under DDP).
        backbone_lr_mult: the backbone's peak lr as a fraction of ``lr`` (discriminative
            fine-tuning); None: 0.1 for pretrained weights (hub or ``pretrained_path``), else 1.
        score_metric: the validation metric logged as ``val/score``, which checkpointing and
            early stopping follow: multiclass ``acc``, ``acc_balanced`` (mean per-class recall)
            or ``f1_macro``; multilabel ``map_macro`` or ``map_micro``. None: ``f1_macro``
            (multiclass; micro accuracy favours the dominant classes) / ``map_macro``.
        channels_last: NHWC layout; None means on when running on a GPU.
        compile: ``torch.compile`` the backbone (in place: checkpoints keep their keys).
        precision_at_k: the ``k`` values of multilabel precision@k.
        log_per_class_max: log per-class F1 every epoch only up to this many classes.
    """

    thr_f1: Tensor
    thr_f2: Tensor
    thr_f1_class: Tensor
    thr_f2_class: Tensor

    def __init__(
        self,
        task: Literal["multiclass", "multilabel"] = "multiclass",
        backbone: str = "resnet50",
        num_classes: int | None = None,
        labels: dict[str, Any] | None = None,
        data_config: dict[str, Any] | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        global_pool: str | None = None,
        loss: Literal["ce", "bce", "focal", "asl"] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        pos_weight: float | list[float] | None = None,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        asl_gamma_neg: float = 4.0,
        asl_gamma_pos: float = 0.0,
        asl_clip: float = 0.05,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        freeze_backbone_epochs: int = 0,
        backbone_lr_mult: float | None = None,
        score_metric: str | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        precision_at_k: list[int] | None = None,
        log_per_class_max: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes = num_classes_for(task, num_classes, labels)
        self.hparams["num_classes"] = self.num_classes
        self.task = task
        self.score_metric = score_metric_for(task, score_metric)
        self._channels_last = bool(channels_last)
        self._input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self.test_results: dict[str, Any] = {}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # ----------------------------------------------------------------- configuration
    def configure_models(self) -> None:
        """Create the timm backbone with a fresh head (and local weights if given)."""
        h = self.hparams
        self.model: nn.Module = create_backbone(
            h["backbone"],
            self.num_classes,
            pretrained=h["pretrained"],
            pretrained_path=h["pretrained_path"],
            drop_rate=h["drop_rate"],
            global_pool=h.get("global_pool"),
        )
        self._head_names = head_parameter_names(self.model)
        # tuned on validation (multilabel); saved with the weights
        self.register_buffer("thr_f1", torch.tensor(0.5))
        self.register_buffer("thr_f2", torch.tensor(0.5))
        self.register_buffer("thr_f1_class", torch.full((self.num_classes,), 0.5))
        self.register_buffer("thr_f2_class", torch.full((self.num_classes,), 0.5))

    def configure_losses(self) -> None:
        """Build the loss from the hyperparameters (see ``met_vision.trainers.losses``)."""
        self.criterion = loss_from_hparams(
            self.task, self.hparams, self.num_classes, self.label_names
        )

    def configure_metrics(self) -> None:
        """One scalar ``MetricCollection`` and one ``ScoreStore`` per evaluation split."""
        self.scalar_metrics = nn.ModuleDict(
            {s: scalar_collection(self.task, self.num_classes) for s in SPLITS}
        )
        self.score_stores = nn.ModuleDict({s: ScoreStore() for s in SPLITS})

    def _scalars(self, split: str) -> MetricCollection:
        return cast(MetricCollection, self.scalar_metrics[split])

    def _store(self, split: str) -> ScoreStore:
        return cast(ScoreStore, self.score_stores[split])

    # ----------------------------------------------------------------- properties
    @property
    def backbone_lr_mult(self) -> float:
        """The backbone's lr as a fraction of the head's (see ``backbone_lr_mult``)."""
        mult = self.hparams.get("backbone_lr_mult")
        if mult is not None:
            return float(mult)
        pretrained = self.hparams.get("pretrained") or self.hparams.get("pretrained_path")
        return PRETRAINED_BACKBONE_LR_MULT if pretrained else 1.0

    @property
    def label_names(self) -> list[str]:
        """Class names from the manifest, or ``class_<i>`` when there is none."""
        names = (self.hparams.get("labels") or {}).get("names")
        if names and len(names) == self.num_classes:
            return [str(n) for n in names]
        return [f"class_{i}" for i in range(self.num_classes)]

    @property
    def label_manifest(self) -> dict[str, Any] | None:
        """The label manifest stored with the model (``hparams["labels"]``)."""
        return self.hparams.get("labels")

    @property
    def label_space(self) -> Any:
        """The manifest as a ``met_vision.data.labels.LabelSpace`` (None when there is none)."""
        manifest = self.label_manifest
        if not manifest:
            return None
        from met_vision.data.labels import LabelSpace

        return LabelSpace.from_manifest(manifest)

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params": total, "trainable_params": trainable}

    # ----------------------------------------------------------------- lifecycle
    def setup(self, stage: str) -> None:
        """Take the label manifest and data config from the data module; choose the memory layout."""
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        manifest = manifest_of(dm, self.num_classes)
        if manifest is not None and self.hparams.get("labels") is None:
            self.hparams["labels"] = manifest
            if self.hparams["class_weights"] == "balanced":
                self.configure_losses()
        self.take_data_config(dm)
        if self.hparams["channels_last"] is None and trainer is not None:
            self._channels_last = trainer.strategy.root_device.type == "cuda"
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile()

    # ----------------------------------------------------------------- forward / steps
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def predict_probs(self, logits: Tensor) -> Tensor:
        """Softmax (multiclass) or sigmoid (multilabel) scores."""
        return logits.float().softmax(-1) if self.task == "multiclass" else logits.float().sigmoid()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss on one batch (logged per step and per epoch)."""
        x, y = batch["image"], batch["label"]
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        x, y = batch["image"], batch["label"]
        logits = self(x)
        loss = self.criterion(logits, y)
        probs = self.predict_probs(logits)
        target = y if self.task == "multiclass" else y.int()
        self._scalars(split).update(probs, target)
        self._store(split).update(probs, y)
        self.log(f"{split}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss and metric updates on a validation batch."""
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss and metric updates on a test batch."""
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Scores and object ids for a batch."""
        out = {"probs": self.predict_probs(self(batch["image"]))}
        if "object_id" in batch:
            out["object_id"] = batch["object_id"]
        return out

    # ----------------------------------------------------------------- epoch ends
    def _compute(self, split: str) -> dict[str, Any] | None:
        store = self._store(split)
        if store._update_count == 0:  # no batches on this rank (e.g. empty split)
            return None
        values = self._scalars(split).compute()
        probs, target = store.compute()
        self._scalars(split).reset()
        store.reset()
        if self.task == "multilabel" and split == "val" and not self._sanity_checking():
            self._tune_thresholds(probs, target)
        ks = tuple(self.hparams["precision_at_k"] or (1, 3))
        thresholds = self.thresholds() if self.task == "multilabel" else None
        return epoch_metrics(values, probs, target, self.score_metric, thresholds, ks)

    def _sanity_checking(self) -> bool:
        return self._trainer is not None and self.trainer.sanity_checking

    def _tune_thresholds(self, probs: Tensor, target: Tensor) -> None:
        for beta, name in ((1.0, "f1"), (2.0, "f2")):
            global_thr, per_class = tune_thresholds(probs, target, beta)
            getattr(self, f"thr_{name}").fill_(global_thr)
            getattr(self, f"thr_{name}_class").copy_(per_class)

    def thresholds(self) -> dict[str, Any]:
        """The multilabel decision thresholds tuned on validation (0.5 before any tuning)."""
        return {
            "f1": float(self.thr_f1),
            "f2": float(self.thr_f2),
            "f1_per_class": self.thr_f1_class,
            "f2_per_class": self.thr_f2_class,
        }

    def _log_epoch(self, split: str, out: dict[str, Any]) -> None:
        names = self.label_names
        # per class every validation epoch; the test's per-class values go to metrics.json
        per_class_log = split == "val" and self.num_classes <= self.hparams["log_per_class_max"]
        for key, value in out.items():
            if key in UNLOGGED:
                continue
            if isinstance(value, Tensor) and value.numel() > 1:
                if per_class_log and key in ("f1_per_class", "ap_per_class"):
                    for name, v in zip(names, value.tolist(), strict=True):
                        self.log(f"{split}/{key}/{name}", float(v), sync_dist=True)
                continue
            self.log(f"{split}/{key}", float(value), sync_dist=True, prog_bar=key == "score")
        if self.task == "multilabel":
            self.log(f"{split}/threshold_f1", float(self.thr_f1), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Compute, tune thresholds (multilabel) and log the validation metrics."""
        out = self._compute("val")
        if out is not None:
            self._log_epoch("val", out)

    def on_test_epoch_end(self) -> None:
        """Compute and log the test metrics; keep the full results in ``self.test_results``."""
        out = self._compute("test")
        if out is None:
            self.test_results = {}
            return
        self._log_epoch("test", out)
        self.test_results = report_results(
            out,
            self.label_names,
            self.task,
            self.thresholds() if self.task == "multilabel" else None,
            with_curves=self.trainer.is_global_zero,
        )

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """AdamW/SGD with per-step linear warm-up then cosine decay; frozen-backbone epochs."""
        h = self.hparams
        groups = parameter_groups(
            self.model, self._head_names, h["lr"], h["weight_decay"], self.backbone_lr_mult
        )
        on_cuda = all(p.is_cuda for p in self.model.parameters())
        opt = build_optimizer(h["optimizer"], groups, h["lr"], h["momentum"], on_cuda)
        per_epoch, total = steps_per_epoch(
            self.trainer.estimated_stepping_batches,
            self.trainer.max_epochs,
            self.trainer.num_training_batches,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(groups, h, per_epoch, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        """Keep backbone BatchNorm statistics fixed while the backbone is frozen."""
        if self.current_epoch < self.hparams["freeze_backbone_epochs"]:
            freeze_backbone_batchnorm(self.model, self._head_names)


__all__ = ["BackboneError", "ClassificationTask"]
