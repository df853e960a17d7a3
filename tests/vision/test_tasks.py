"""ClassificationTask, backbones and weights loading on random tensors (no data module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from met_vision.trainers.backbones import BackboneError, create_backbone, load_backbone_weights
from met_vision.trainers.classification import ClassificationTask
from met_vision.trainers.optimization import warmup_cosine

MANIFEST = {
    "names": ["Paintings", "Prints", "Vases"],
    "counts": {"Paintings": 5, "Prints": 20, "Vases": 5},
}


class RandomImages(Dataset):
    """Dict batches shaped like MetDataModule's, with a learnable signal in the mean colour."""

    def __init__(self, task: str, n: int = 24, num_classes: int = 3, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.1
        if task == "multiclass":
            self.labels = torch.arange(n) % num_classes
            self.images[:, 0] += self.labels[:, None, None].float()
        else:
            self.labels = (torch.rand(n, num_classes, generator=g) > 0.5).float()
            self.images[:, :num_classes] += self.labels[:, :, None, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "object_id": torch.tensor(i)}


def _trainer(tmp_path: Path, epochs: int = 1, callbacks: list[Any] | None = None) -> pl.Trainer:
    return pl.Trainer(
        callbacks=callbacks,
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_fit_test_and_checkpoint_round_trip(tmp_path, task):
    model = ClassificationTask(
        task=task, backbone="test_resnet", num_classes=3, labels=MANIFEST, lr=3e-3
    )
    loader = DataLoader(RandomImages(task), batch_size=8)
    trainer = _trainer(tmp_path)
    trainer.fit(model, loader, loader)
    trainer.test(model, loader, verbose=False)
    metrics = model.test_results["metrics"]
    probs, target = _scores(model, loader)
    if task == "multiclass":  # the logged metric is the one computed from the scores
        assert metrics["acc"] == pytest.approx(float((probs.argmax(1) == target).float().mean()))
    else:
        from sklearn.metrics import average_precision_score

        expected = average_precision_score(target.numpy(), probs.numpy(), average="macro")
        assert metrics["map_macro"] == pytest.approx(expected, abs=1e-4)
    assert model.test_results["num_samples"] == 24
    assert set(model.test_results["per_class"]["f1"]) == set(MANIFEST["names"])
    if task == "multiclass":
        cm = model.test_results["confusion_matrix"]
        assert sum(map(sum, cm)) == 24
    else:  # the tuned threshold is the grid's best micro F1 on the validation scores
        from met_vision.trainers.metrics import THRESHOLD_GRID, fbeta_at

        tuned = model.test_results["thresholds"]["f1"]
        best = max(float(fbeta_at(probs, target, float(t), 1.0)["micro"]) for t in THRESHOLD_GRID)
        assert float(fbeta_at(probs, target, tuned, 1.0)["micro"]) == pytest.approx(best)

    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu")
    assert loaded.label_names == MANIFEST["names"]
    assert loaded.hparams["pretrained"] is False
    assert torch.equal(loaded.thr_f1_class, model.thr_f1_class)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))


def _scores(model: ClassificationTask, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        pairs = [(model.predict_probs(model(b["image"])), b["label"]) for b in loader]
    return torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])


def test_pretrained_path_replaces_head_and_loads_body(tmp_path):
    source = timm.create_model("test_resnet", num_classes=10)
    for fmt in ("safetensors", "pth", "ckpt"):
        path = tmp_path / f"w.{fmt}"
        state = {k: v.contiguous() for k, v in source.state_dict().items()}
        if fmt == "safetensors":
            save_file(state, str(path))
        elif fmt == "pth":
            torch.save(state, path)
        else:  # a Lightning checkpoint of this project's task, with its threshold buffers
            task_state = {f"model.{k}": v for k, v in state.items()}
            task_state.update(thr_f1=torch.tensor(0.3), thr_f1_class=torch.full((10,), 0.3))
            torch.save({"state_dict": task_state, "hyper_parameters": {"task": "multilabel"}}, path)
        model = create_backbone("test_resnet", 4, pretrained_path=str(path))
        head: Any = model.get_classifier  # timm API, untyped
        assert head().out_features == 4
        body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        assert all(torch.equal(v, state[k]) for k, v in body.items())


def test_pretrained_path_is_strict_about_backbone_keys(tmp_path):
    other = timm.create_model("test_efficientnet", num_classes=10)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(BackboneError, match=r"missing: .*unexpected: "):
        load_backbone_weights(timm.create_model("test_resnet", num_classes=3), path)
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("test_resnet", 3, pretrained_path=str(tmp_path / "nope.pth"))


def test_unknown_backbone_suggests_names():
    with pytest.raises(BackboneError, match="did you mean resnet50"):
        ClassificationTask(backbone="resnet5O", num_classes=3)


def test_num_classes_from_manifest_and_data_config():
    model = ClassificationTask(task="multilabel", backbone="test_resnet", labels=MANIFEST)
    assert model.num_classes == 3
    assert model.data_config["input_size"] == (3, 160, 160)
    with pytest.raises(ValueError, match="num_classes is not set"):
        ClassificationTask(backbone="test_resnet")


def test_balanced_class_weights_from_manifest():
    model = ClassificationTask(backbone="test_resnet", labels=MANIFEST, class_weights="balanced")
    weight: Any = model.criterion.weight
    assert weight.tolist() == pytest.approx([2.0, 0.5, 2.0])


def test_warmup_then_cosine():
    f = warmup_cosine(warmup=4, total=14, min_ratio=0.0)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(9) == pytest.approx(0.5)
    assert f(14) == pytest.approx(0.0)


def test_frozen_backbone_epochs_train_only_the_head(tmp_path):
    model = ClassificationTask(
        backbone="test_resnet", num_classes=3, freeze_backbone_epochs=1, warmup_epochs=0
    )
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = _trainer(tmp_path, epochs=1)
    loader = DataLoader(RandomImages("multiclass"), batch_size=8)
    trainer.fit(model, loader)
    after = model.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}


class _LearningRates(pl.Callback):
    """Records (epoch, head lr, backbone lr) before every optimiser step."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        groups = trainer.optimizers[0].param_groups
        head = next(g["lr"] for g in groups if g["is_head"])
        backbone = next(g["lr"] for g in groups if not g["is_head"])
        self.rows.append((trainer.current_epoch, head, backbone))


def test_backbone_warms_up_again_when_it_unfreezes(tmp_path):
    lr, mult = 1e-2, 0.1
    model = ClassificationTask(
        backbone="test_resnet",
        num_classes=3,
        lr=lr,
        freeze_backbone_epochs=1,
        warmup_epochs=1,
        backbone_lr_mult=mult,
        min_lr_ratio=1.0,  # no decay: the ramps alone
    )
    recorder = _LearningRates()
    trainer = _trainer(tmp_path, epochs=2, callbacks=[recorder])
    trainer.fit(model, DataLoader(RandomImages("multiclass", n=32), batch_size=8))
    per_epoch = 4
    frozen = [b for e, _, b in recorder.rows if e == 0]
    after = [b for e, _, b in recorder.rows if e == 1]
    assert frozen == [0.0] * per_epoch
    # the head warmed up in epoch 0; the backbone warms up from 0 in epoch 1, up to lr * mult
    assert [h for e, h, _ in recorder.rows if e == 0] == pytest.approx(
        [lr * (i + 1) / per_epoch for i in range(per_epoch)]
    )
    assert after == pytest.approx([lr * mult * (i + 1) / per_epoch for i in range(per_epoch)])


def test_backbone_lr_mult_default_and_score_metric() -> None:
    fresh = ClassificationTask(backbone="test_resnet", num_classes=3)
    assert fresh.backbone_lr_mult == 1.0 and fresh.score_metric == "f1_macro"
    tagger = ClassificationTask(task="multilabel", backbone="test_resnet", num_classes=3)
    assert tagger.score_metric == "map_macro"
    balanced = ClassificationTask(
        backbone="test_resnet", num_classes=3, score_metric="acc_balanced"
    )
    assert balanced.score_metric == "acc_balanced"
    with pytest.raises(ValueError, match="score_metric"):
        ClassificationTask(backbone="test_resnet", num_classes=3, score_metric="map_macro")
