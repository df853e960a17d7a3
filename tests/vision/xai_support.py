"""Small trained models on synthetic mirrors, shared by the explain/audit/predict/embed tests.

Each model is trained once per test session (the result is cached in this module, so test
modules that import the fixtures share it) with the real stack: ``make_mirror`` writes a real
SQLite mirror and JPEG blobs, ``met_vision.prepare`` caches them, and ``MetDataModule`` +
``ClassificationTask`` train a tiny timm ResNet in a real Lightning loop. ``load_make_mirror``
(the fixture script as a module) is shared with ``conftest.py``.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
MAKE_MIRROR_SCRIPT = HERE / "data" / "make_mirror.py"
BACKBONE = "test_resnet"
IMAGE_SIZE = 96
# the audit and mitigation models need no fine CAMs: smaller inputs train faster
BIASED_IMAGE_SIZE = 48
# ... and more objects with a larger held-out share: at 1,500 objects the planted amplification
# (+0.11) was below what the audit can detect with Benjamini-Hochberg over ~24 pairs (0.17);
# 4,000 objects hold ~230 held-out and ~350 training Women, enough to see +0.1
AUDIT_SPLIT = (0.6, 0.1, 0.3)
AUDIT_OBJECTS = 4000
CACHE_SIZE = 112
N_OBJECTS = 1500
EPOCHS = 12
# CAMs of test_resnet's layer4 are 3x3 at 96 px: layer3 (6x6) localises motifs of ~20 px, and
# it is the default target layer there (the deepest at least 6x6).
CAM_LAYER = "layer3"
# The planted collection of the audit: the gender tags have no motif of their own, so a model can
# find "Women" only through the warm tint planted on 90% of them (and 5% of the others).
UNMARKED = ("Men", "Women")


@dataclass(frozen=True)
class TrainedModel:
    """A finished run: where its mirror and checkpoint are, and its test metrics."""

    data_dir: Path
    ckpt: Path
    truth: dict[str, Any]
    metrics: dict[str, Any]
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @property
    def truth_path(self) -> Path:
        """make_mirror's truth.json."""
        return self.data_dir / "truth.json"

    def split_ids(self, split: str, labelled_only: bool = True) -> list[int]:
        """Object ids (with images; by default labelled) of one split, as the splits assign them."""
        from met_vision.data.mirror import load_records

        records = load_records(self.data_dir, split_fractions=self.split_fractions)
        labelled = records["tags"].map(len) > 0  # multilabel: objects without tags are left out
        if not labelled_only:
            labelled[:] = True
        part = records[(records["split"] == split) & records["has_image"] & labelled]
        return [int(i) for i in part["object_id"]]


def load_make_mirror() -> ModuleType:
    """Import tests/vision/data/make_mirror.py (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("vision_make_mirror", MAKE_MIRROR_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(
    root: Path,
    *,
    bias: float | None,
    n_objects: int = N_OBJECTS,
    seed: int = 3,
    cache_size: int = CACHE_SIZE,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    unmarked_tags: tuple[str, ...] = (),
) -> Path:
    """A prepared synthetic mirror under ``root`` (multilabel over all tags)."""
    from met_vision.data.labels import LabelSpaceConfig
    from met_vision.prepare import prepare

    data_dir = root / "data"
    if not (data_dir / "met.sqlite").exists():
        load_make_mirror().make_mirror(
            data_dir,
            n_objects,
            seed,
            bias,
            specials=False,
            csv_only_rate=0.0,
            unmarked_tags=unmarked_tags,
        )
        config = LabelSpaceConfig(task="multilabel")
        prepare(data_dir, cache_size, config, split_fractions=split_fractions)
    return data_dir


def train(
    root: Path,
    *,
    bias: float | None,
    group_balance: str = "none",
    epochs: int = EPOCHS,
    data_dir: Path | None = None,
    seed: int = 0,
    n_objects: int = N_OBJECTS,
    image_size: int = IMAGE_SIZE,
    max_steps: int = -1,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    unmarked_tags: tuple[str, ...] = (),
) -> TrainedModel:
    """Train a multilabel tag model on a (new or given) synthetic mirror."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from met_vision.data.datamodule import MetDataModule
    from met_vision.trainers.classification import ClassificationTask

    data_dir = data_dir or make_data(
        root,
        bias=bias,
        n_objects=n_objects,
        cache_size=max(CACHE_SIZE, image_size + 16),
        split_fractions=split_fractions,
        unmarked_tags=unmarked_tags,
    )
    pl.seed_everything(seed, workers=True)
    torch.set_num_threads(2)
    extra: dict[str, Any] = {}
    if group_balance != "none":  # the mitigation: balance (gender group, background) cells
        extra = {"group_balance": group_balance, "group_balance_attribute": "warm"}
    dm = MetDataModule(
        data_dir=str(data_dir),
        task="multilabel",
        model_name=BACKBONE,
        image_size=image_size,
        batch_size=32,
        num_workers=0,
        augment="flip",
        crop_scale=(0.6, 1.0),
        seed=seed,
        split_fractions=split_fractions,
        **extra,
    )
    task = ClassificationTask(
        task="multilabel",
        backbone=BACKBONE,
        num_classes=dm.num_classes,
        labels=dm.label_space.manifest(),
        lr=4e-3,
        weight_decay=0.01,
        warmup_epochs=0.5,
    )
    run_dir = root / f"run-{group_balance}"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val/score", mode="max"
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=run_dir,
        deterministic=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=dm)
        trainer.test(task, datamodule=dm, ckpt_path=checkpoint.best_model_path, verbose=False)
    metrics = dict(task.test_results.get("metrics", {}))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    truth = json.loads((data_dir / "truth.json").read_text())
    return TrainedModel(data_dir, Path(checkpoint.best_model_path), truth, metrics, split_fractions)


_CACHE: dict[str, TrainedModel] = {}


def cached(key: str, factory: pytest.TempPathFactory, **kwargs: Any) -> TrainedModel:
    """Train once per session per key."""
    if key not in _CACHE:
        _CACHE[key] = train(factory.mktemp(key), **kwargs)
    return _CACHE[key]


@pytest.fixture(scope="session")
def control_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Trained on the unbiased control collection (tint independent of tags)."""
    return cached("control", tmp_path_factory, bias=None)


@pytest.fixture(scope="session")
def biased_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Trained on the planted-bias collection: "Women" has no motif and a warm tint in 90% of
    cases (5% of the others), so the model learns "warm means Women"."""
    return cached(
        "biased",
        tmp_path_factory,
        bias=0.9,
        image_size=BIASED_IMAGE_SIZE,
        split_fractions=AUDIT_SPLIT,
        unmarked_tags=UNMARKED,
        n_objects=AUDIT_OBJECTS,
        epochs=10,
    )


@pytest.fixture(scope="session")
def unmarked_control_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """The planted collection's control: the same unmarked gender tags (unlearnable: nothing in
    the image says "Men" or "Women"), the warm tint on 10% of objects, independent of tags."""
    return cached(
        "unmarked-control",
        tmp_path_factory,
        bias=None,
        image_size=BIASED_IMAGE_SIZE,
        split_fractions=AUDIT_SPLIT,
        unmarked_tags=UNMARKED,
        n_objects=AUDIT_OBJECTS,
        epochs=10,
    )


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A barely trained model on a small mirror: for fast tests of the commands' mechanics."""
    return cached(
        "quick", tmp_path_factory, bias=None, n_objects=160, epochs=1, max_steps=3, image_size=64
    )


@pytest.fixture(scope="session")
def mitigated_model(
    tmp_path_factory: pytest.TempPathFactory, biased_model: TrainedModel
) -> TrainedModel:
    """Trained on the biased model's mirror with group-balanced sampling."""
    return cached(
        "mitigated",
        tmp_path_factory,
        bias=0.9,
        group_balance="sampler",
        data_dir=biased_model.data_dir,
        image_size=BIASED_IMAGE_SIZE,
        split_fractions=AUDIT_SPLIT,
        unmarked_tags=UNMARKED,
        n_objects=AUDIT_OBJECTS,
        epochs=10,
    )
