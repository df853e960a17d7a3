"""Pointing game per Grad-CAM target layer at several input sizes: does the default layer rule
(the deepest stage at least 6x6, `met_vision.explain.cam.default_target_layer`) pick the layer that
localises?

For each input size: a synthetic mirror (`tests/vision/data/make_mirror.py`), `prepare`, a small
multilabel `test_resnet` trained at that size, then `met_vision.explain.explainer.explain` on the
test split with `--target truth` at every stage and at the default, beside the centre-prior and
random-map baselines (tolerance 15 px at 224 px, scaled). Prints one table.

    .venv/bin/python bench/cam_layers.py [--sizes 64,96,128] [--objects 800] [--epochs 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("layer2", "layer3", "layer4")


def _make_mirror(out: Path, objects: int) -> Path:
    spec = importlib.util.spec_from_file_location("mm", ROOT / "tests/vision/data/make_mirror.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data_dir = out / "data"
    module.make_mirror(data_dir, objects, 3, None, specials=False, csv_only_rate=0.0)
    return data_dir


def _train(data_dir: Path, size: int, epochs: int, run_dir: Path) -> Path:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from met_vision.data import MetDataModule
    from met_vision.trainers.classification import ClassificationTask

    pl.seed_everything(0, workers=True)
    dm = MetDataModule(
        data_dir=str(data_dir),
        task="multilabel",
        model_name="test_resnet",
        image_size=size,
        batch_size=32,
        num_workers=0,
        crop_scale=(0.6, 1.0),
    )
    task = ClassificationTask(
        task="multilabel",
        backbone="test_resnet",
        num_classes=dm.num_classes,
        labels=dm.label_space.manifest(),
        global_pool="max",
        lr=4e-3,
        weight_decay=0.01,
        warmup_epochs=0.5,
    )
    checkpoint = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/score", mode="max")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=run_dir,
    )
    trainer.fit(task, datamodule=dm)
    return Path(checkpoint.best_model_path)


def _pointing(ckpt: Path, data_dir: Path, out: Path, layer: str | None) -> dict[str, Any]:
    from met_vision.explain.evaluation import load_truth
    from met_vision.explain.explainer import explain
    from met_vision.explain.items import mirror_items
    from met_vision.inference.predictor import load_model

    loaded = load_model(ckpt)
    items = mirror_items(loaded, str(data_dir), None, "test")[:150]
    truth = load_truth(data_dir / "truth.json")
    result = explain(loaded, items, out, target="truth", truth=truth, target_layer=layer)
    evaluation = result["evaluation"] or {}
    return {"layer": evaluation.get("target_layer"), **evaluation.get("overall", {})}


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,96,128")
    parser.add_argument("--objects", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    from met_vision.data.labels import LabelSpaceConfig
    from met_vision.data.prepare_cache import prepare

    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        data_dir = _make_mirror(root, args.objects)
        sizes = [int(s) for s in args.sizes.split(",")]
        prepare(data_dir, max(sizes) + 16, LabelSpaceConfig(task="multilabel"))
        for size in sizes:
            ckpt = _train(data_dir, size, args.epochs, root / f"run-{size}")
            for layer in (*STAGES, None):
                found = _pointing(ckpt, data_dir, root / f"x-{size}-{layer}", layer)
                rows.append({"size": size, "default": layer is None, **found})
    print(
        f"{'size':>4} {'layer':<10} {'default':<7} {'n':>4} {'pointing':>8} {'centre':>7} "
        f"{'random':>7} {'energy':>7}"
    )
    for r in rows:
        print(
            f"{r['size']:>4} {r['layer']:<10} {'yes' if r['default'] else '':<7} {r['n']:>4} "
            f"{r['pointing']:>8.3f} {r['pointing_centre_baseline']:>7.3f} "
            f"{r['pointing_random_baseline']:>7.3f} {r['energy_in_box']:>7.3f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
