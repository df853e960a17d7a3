"""MetDataModule: batches that match the database, raw fallback, bad images, DDP sharding."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from met_vision.data.datamodule import MetDataModule
from met_vision.data.datasets import BadImageError, MetImageDataset
from met_vision.data.labels import LabelSpaceConfig
from met_vision.data.mirror import load_records
from met_vision.data.samplers import ClassBalancedSampler
from met_vision.data.transforms import build_transform, normalize_images, resolve_data_config
from met_vision.prepare import prepare

SIZE = 48


@pytest.fixture(scope="module")
def prepared(mirror_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror with both label spaces prepared at 64 px."""
    mirror = mirror_factory(300, 0)
    for config in (LabelSpaceConfig(task="multiclass"), LabelSpaceConfig(task="multilabel")):
        prepare(mirror, 64, config, workers=1)
    return mirror


def _truth(mirror: Path) -> dict[str, Any]:
    return json.loads((mirror / "truth.json").read_text())


def _module(mirror: Path, **options: Any) -> MetDataModule:
    defaults: dict[str, Any] = {"image_size": SIZE, "batch_size": 16, "num_workers": 0}
    return MetDataModule(str(mirror), **{**defaults, **options})


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_batches_match_the_database(prepared: Path, task: str) -> None:
    truth = _truth(prepared)
    dm = _module(prepared, task=task, augment="trivial")
    dm.setup("fit")
    assert dm.source == "cache"
    records = load_records(prepared).set_index("object_id")
    seen: set[int] = set()
    for split in ("train", "val", "test"):
        loader = getattr(dm, f"{split}_dataloader")()
        for batch in loader:
            assert batch["image"].dtype == torch.uint8  # normalised on the device by the model
            assert batch["image"].shape[1:] == (3, SIZE, SIZE)
            for object_id, label in zip(batch["object_id"].tolist(), batch["label"], strict=True):
                assert records.loc[object_id, "split"] == split
                expected = truth["objects"][str(object_id)]
                if task == "multiclass":
                    assert label.dtype == torch.long and label.shape == ()
                    assert dm.label_names[int(label)] == expected["classification"]
                else:
                    assert label.shape == (dm.num_classes,)
                    names = {dm.label_names[i] for i in torch.nonzero(label).flatten().tolist()}
                    assert names == set(expected["tags"])
                seen.add(object_id)
    assert len(seen) >= len(dm.frame) - dm.batch_size  # train drops its last partial batch
    assert dm.label_space.manifest()["definition_hash"] == dm.label_space.definition_hash


def test_raw_fallback_warns_and_yields_the_same_labels(prepared: Path) -> None:
    cached = _module(prepared, task="multiclass")
    with pytest.warns(UserWarning, match="no prepared image cache"):
        raw = _module(prepared, task="multiclass", cache_size=512)
        raw.setup("fit")
    assert raw.source == "raw" and cached.source is None
    cached.setup("fit")
    assert raw.label_names == cached.label_names
    truncated = _truth(prepared)["specials"]["truncated"]
    assert set(raw.frame["object_id"]) - set(cached.frame["object_id"]) == {truncated}
    batch = next(iter(raw.val_dataloader()))
    assert batch["image"].shape[1:] == (3, SIZE, SIZE)


def test_bad_images_are_skipped_then_an_error(prepared: Path, tmp_path: Path) -> None:
    dm = _module(prepared, task="multiclass")
    frame = dm.frame.head(6).copy()
    good = list(frame["path"])
    frame["path"] = [str(tmp_path / "gone.jpg"), good[1], str(tmp_path / "gone2.jpg"), *good[3:]]
    dataset = MetImageDataset(
        frame, task="multiclass", num_classes=dm.num_classes,
        transform=build_transform(dm.data_config, train=False), max_consecutive_bad=3,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        item = dataset[0]
    assert int(item["object_id"]) == int(frame["object_id"].iloc[1])
    assert dataset.bad_images == 1
    broken = frame.assign(path=[str(tmp_path / f"gone{i}.jpg") for i in range(6)])
    dataset = MetImageDataset(
        broken, task="multiclass", num_classes=dm.num_classes,
        transform=build_transform(dm.data_config, train=False), max_consecutive_bad=3,
    )  # fmt: skip
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(BadImageError, match="3 unreadable images in a row"),
    ):
        dataset[0]


def test_ddp_shards_are_disjoint(prepared: Path) -> None:
    dm = _module(prepared, task="multiclass")
    dm.setup("fit")
    n_train = len(dm.datasets["train"])
    shards = [list(dm.train_sampler(num_replicas=2, rank=r)) for r in (0, 1)]  # type: ignore[arg-type]
    padding = n_train % 2  # DistributedSampler repeats this many to even out the shards
    assert len(shards[0]) == len(shards[1]) == (n_train + padding) // 2
    assert len(set(shards[0]) & set(shards[1])) <= padding
    assert set(shards[0]) | set(shards[1]) == set(range(n_train))
    for stage in ("val", "test", "predict"):
        eval_shards = [list(dm.eval_sampler(stage, num_replicas=2, rank=r)) for r in (0, 1)]  # type: ignore[arg-type]
        n = len(dm._dataset(stage))
        assert set(eval_shards[0]) | set(eval_shards[1]) == set(range(n))
        # every sample on exactly one rank: no padding repeats (exact DDP evaluation)
        assert len(eval_shards[0]) + len(eval_shards[1]) == n
        assert not set(eval_shards[0]) & set(eval_shards[1])


def test_class_balanced_sampler_shards_one_draw_and_balances(prepared: Path) -> None:
    dm = _module(prepared, task="multiclass", balanced_sampler=True)
    dm.setup("fit")
    samplers = [dm.train_sampler(num_replicas=2, rank=r) for r in (0, 1)]
    balanced = [s for s in samplers if isinstance(s, ClassBalancedSampler)]
    assert len(balanced) == 2
    first, second = (list(s) for s in balanced)
    draw = balanced[0].global_draw()
    assert len(first) == len(second) == len(draw) // 2
    assert first == draw[0::2] and second == draw[1::2]  # disjoint positions of one draw
    balanced[0].set_epoch(1)
    assert list(balanced[0]) != first
    big = ClassBalancedSampler(
        dm.datasets["train"], balanced[0].weights, num_samples=12_000, num_replicas=1, rank=0
    )
    targets = dm.datasets["train"].targets
    shares = Counter(int(targets[i]) for i in big)
    assert max(shares.values()) / min(shares.values()) < 1.3


def test_timm_data_config_and_workers(prepared: Path) -> None:
    config = resolve_data_config("inception_resnet_v2")
    assert config.input_size == 299 and config.mean == (0.5, 0.5, 0.5)
    assert resolve_data_config("resnet50", image_size=128).input_size == 128
    dm = _module(prepared, task="multilabel", num_workers=1, augment="randaugment")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="unknown augment"):
        _module(prepared, augment="mixup")


def test_eval_transform_matches_torchvision_reference() -> None:
    from PIL import Image
    from torchvision.transforms import v2

    config = resolve_data_config("resnet50", image_size=32)
    gradient = Image.linear_gradient("L")
    bands = (gradient, gradient.rotate(90), Image.radial_gradient("L"))
    image = Image.merge("RGB", bands).resize((200, 160))  # smooth and asymmetric
    ours = build_transform(config, train=False, normalize=True)(image)
    assert torch.equal(
        normalize_images(build_transform(config, train=False)(image), config.mean, config.std),
        ours,
    )
    reference = v2.Compose(
        [
            v2.Resize(int(32 / config.crop_pct), interpolation=v2.InterpolationMode.BICUBIC),
            v2.CenterCrop(32),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(config.mean, config.std),
        ]
    )(image)
    assert ours.shape == (3, 32, 32) and ours.is_contiguous()
    # One resize of the exactly centred region vs resize-then-crop at whole pixels: the same
    # image up to resampling and a sub-pixel shift (< 12/255 here; a wrong crop is ~10x that).
    assert (ours - reference).abs().max() < 0.2


def test_runs_under_a_lightning_trainer(prepared: Path) -> None:
    import lightning.pytorch as pl

    class Probe(pl.LightningModule):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, num_classes)
            self.predicted: list[int] = []

        def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.head(batch["image"].float().mean(dim=(2, 3)))

        def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
            return torch.nn.functional.binary_cross_entropy_with_logits(
                self._logits(batch), batch["label"]
            )

        def test_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
            self._logits(batch)

        def predict_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
            self.predicted += batch["object_id"].tolist()
            return self._logits(batch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _module(prepared, task="multilabel", balanced_sampler=True, predict_split="all")
    model = Probe(dm.num_classes)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_test_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    trainer.predict(model, datamodule=dm)
    assert sorted(model.predicted) == sorted(dm.frame["object_id"].tolist())
