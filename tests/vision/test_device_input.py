"""uint8 batches normalised on the device, device JPEG decoding, compile and fused AdamW wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from met_vision.data import MetDataModule
from met_vision.data.transforms import build_transform, resolve_data_config
from met_vision.trainers.classification import ClassificationTask

MANIFEST = {"task": "multiclass", "names": ["a", "b", "c"]}


def _image(size: tuple[int, int] = (80, 60)) -> Image.Image:
    gradient = Image.linear_gradient("L")
    return Image.merge("RGB", (gradient, gradient.rotate(90), Image.radial_gradient("L"))).resize(
        size
    )


def test_on_after_batch_transfer_normalises_without_a_trainer(tmp_path: Path) -> None:
    """What `met_vision`'s inference calls on every batch: no trainer, no data module."""
    task = ClassificationTask(backbone="vit_tiny_patch16_224", labels=MANIFEST, channels_last=True)
    config = resolve_data_config("vit_tiny_patch16_224", image_size=32)
    assert task.input_normalization == (config.mean, config.std)  # (0.5, 0.5, 0.5)
    image = _image()
    uint8 = build_transform(config, train=False)(image)
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, 32, 32)
    batch = {"image": torch.stack([uint8, uint8]), "label": torch.tensor([0, 1])}
    out = task.on_after_batch_transfer(batch, 0)
    expected = build_transform(config, train=False, normalize=True)(image)
    assert out["image"].dtype == torch.float32
    assert torch.equal(out["image"][0], expected)  # bit-identical to normalising in the worker
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(task.on_after_batch_transfer(out, 0)["image"], out["image"])  # float: as is
    assert batch["image"].dtype == torch.uint8  # the caller's batch is not changed


def test_the_data_modules_normalisation_travels_with_the_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    task = ClassificationTask(backbone="test_resnet", labels=MANIFEST)
    task._input_norm = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))  # as setup() takes it from the data
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_epochs=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert loaded.input_normalization == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_compile_is_in_place_and_adamw_fuses_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    task = ClassificationTask(backbone="test_resnet", labels=MANIFEST, compile=True)
    keys = set(task.state_dict())
    task.setup("fit")
    assert task.model._compiled_call_impl is not None  # type: ignore[attr-defined]
    assert set(task.state_dict()) == keys  # checkpoints keep their keys
    seen: dict[str, Any] = {}
    real = torch.optim.AdamW

    def spy(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)

    import lightning.pytorch as pl

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    batches = [{"image": images, "label": torch.tensor([0, 1, 2, 0])}]
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, max_steps=1,
    )  # fmt: skip
    eager = ClassificationTask(backbone="test_resnet", labels=MANIFEST)
    trainer.fit(eager, torch.utils.data.DataLoader(batches, batch_size=None))
    assert seen["fused"] is None  # CPU parameters: the default (foreach) implementation


def test_device_decode_gives_the_cpu_pipelines_batch(tiny_mirror: Path) -> None:
    """Raw originals decoded by torchvision.io.decode_jpeg (here on the CPU device) come out as
    the CPU transform's batch, up to resampling."""
    options: dict[str, Any] = {
        "task": "multiclass", "image_size": 32, "cache_size": 4096, "num_workers": 0,
        "batch_size": 64, "augment": "flip",
    }  # fmt: skip
    with pytest.warns(UserWarning, match="no prepared image cache"):
        cpu = MetDataModule(str(tiny_mirror), **options)
        device = MetDataModule(str(tiny_mirror), device_decode=True, **options)
        cpu.setup()
        device.setup()
    task = ClassificationTask(backbone="test_resnet", labels=cpu.label_space.manifest())
    reference = task.on_after_batch_transfer(next(iter(cpu.val_dataloader())), 0)
    encoded = next(iter(device.val_dataloader()))
    assert isinstance(encoded["jpeg"], list) and "image" not in encoded
    decoded = task.on_after_batch_transfer(encoded, 0)
    assert torch.equal(decoded["object_id"], reference["object_id"])
    assert decoded["image"].shape == reference["image"].shape
    assert (decoded["image"] - reference["image"]).abs().mean() < 0.1  # ~0.03: resampling
    train = task.on_after_batch_transfer(next(iter(device.train_dataloader())), 0)
    assert train["image"].shape[1:] == (3, 32, 32) and train["image"].dtype == torch.float32
    with pytest.raises(ValueError, match="device_decode supports"):
        MetDataModule(str(tiny_mirror), device_decode=True, augment="trivial")
