"""`prepare --format shards`: WebDataset tar shards that train exactly like the per-file cache."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from PIL import Image

from met_vision.data import MetDataModule
from met_vision.data.labels import LabelSpaceConfig
from met_vision.data.shards import ShardReader, scan_shard
from met_vision.prepare import main, open_rgb, prepare, usable_cpus
from met_vision.trainers.classification import ClassificationTask

SIZE = 64
SHARD_BYTES = 48 * 1024  # several shards per split on the tiny mirror
MULTICLASS = LabelSpaceConfig(task="multiclass")


def _shard_dir(mirror: Path, report: dict[str, Any]) -> Path:
    return (mirror / report["index"]).parent


@pytest.fixture(scope="module")
def both_formats(mirror_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private mirror prepared as per-file cache and as shards (multiclass, 64 px)."""
    import shutil

    out = tmp_path_factory.mktemp("shards") / "data"
    shutil.copytree(mirror_factory(300, 0), out, ignore=shutil.ignore_patterns("cache"))
    prepare(out, SIZE, MULTICLASS, workers=1)
    prepare(out, SIZE, MULTICLASS, workers=2, output="shards", shard_bytes=SHARD_BYTES)
    return out


def _module(mirror: Path, data_format: str, **options: Any) -> MetDataModule:
    defaults: dict[str, Any] = {"image_size": 32, "batch_size": 16, "num_workers": 0}
    return MetDataModule(
        str(mirror), task="multiclass", data_format=data_format, **{**defaults, **options}
    )  # type: ignore[arg-type]


def test_shards_are_standard_tars_carrying_index_labels_and_split(both_formats: Path) -> None:
    files = _module(both_formats, "files")
    shards = _module(both_formats, "shards")
    files.setup()
    shards.setup()
    assert (files.source, shards.source) == ("cache", "shards")
    assert shards.index_path is not None
    root = shards.index_path.parent
    tars = sorted(root.glob("*.tar"))
    assert 3 < len(tars) < len(shards.frame) / 4  # a few large files, not one per image
    index = pd.read_parquet(root / "index.parquet")
    cache = pd.read_parquet(files.index_path)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(
        index[["object_id", "sha256", "target", "split"]], cache.drop(columns="cache_path")
    )  # the same samples, in the same order
    by_id = cache.set_index("object_id")
    seen = 0
    for tar_path in tars:
        split = tar_path.name.split("-")[0]
        members = scan_shard(tar_path)
        names = [name for name, _, _ in members]
        assert [n.rsplit(".", 1)[1] for n in names] == ["jpg", "json"] * (len(names) // 2)
        with tarfile.open(tar_path) as tar:
            for jpg, meta_name in zip(names[::2], names[1::2], strict=True):
                key = jpg.split(".")[0]
                assert meta_name == f"{key}.json"  # WebDataset: consecutive, same key
                meta = json.loads(tar.extractfile(meta_name).read())  # type: ignore[union-attr]
                row = by_id.loc[int(key)]
                assert (meta["object_id"], meta["split"], meta["target"]) == (
                    int(key), split, int(row["target"])
                )  # fmt: skip
                assert meta["labels"] == [shards.label_names[meta["target"]]]
                data = tar.extractfile(jpg).read()  # type: ignore[union-attr]
                assert data == (both_formats / row["cache_path"]).read_bytes()
                seen += 1
    assert seen == len(index)


def test_items_are_identical_with_augmentation(both_formats: Path) -> None:
    files, shards = (
        _module(both_formats, "files", augment="trivial"),
        _module(both_formats, "shards", augment="trivial"),
    )
    files.setup()
    shards.setup()
    for split in ("train", "val", "test"):
        a, b = files.datasets[split], shards.datasets[split]
        assert len(a) == len(b)
        for i in range(0, len(a), 7):
            torch.manual_seed(i)
            x = a[i]
            torch.manual_seed(i)
            y = b[i]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


class _CheckpointMidEpochAndStop(pl.Callback):
    """Save a checkpoint after batch 4 of epoch 1 (as a preempted job's hpc_ckpt), then stop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1 and args[-1] == 4:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def test_training_from_shards_equals_training_from_files(
    both_formats: Path, tmp_path: Path
) -> None:
    """Same seed, same samples: the test metrics are equal, also when the shard run is stopped
    in the middle of its second epoch and resumed from that checkpoint (the epoch's order is
    f(seed, epoch), and the resumed loader skips the batches already trained on)."""

    def fit(data_format: str, stop_early: bool, ckpt: Path | None) -> ClassificationTask:
        pl.seed_everything(7, workers=True)
        dm = _module(both_formats, data_format, num_workers=1, augment="none", seed=7)
        model = ClassificationTask(
            task="multiclass", backbone="test_resnet", labels=dm.label_space.manifest(), lr=3e-3
        )
        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            default_root_dir=tmp_path / data_format, deterministic=True,
            callbacks=[_CheckpointMidEpochAndStop(tmp_path / "mid.ckpt")] if stop_early else [],
        )  # fmt: skip
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        if not stop_early:
            trainer.test(model, datamodule=dm, verbose=False)
        return model

    files = fit("files", stop_early=False, ckpt=None)
    fit("shards", stop_early=True, ckpt=None)
    assert (tmp_path / "mid.ckpt").is_file()
    shards = fit("shards", stop_early=False, ckpt=tmp_path / "mid.ckpt")
    assert shards.trainer.current_epoch == files.trainer.current_epoch == 2
    assert shards.test_results["metrics"] == files.test_results["metrics"]
    assert shards.test_results["confusion_matrix"] == files.test_results["confusion_matrix"]
    n_test = int((_module(both_formats, "files").frame["split"] == "test").sum())
    assert shards.test_results["num_samples"] == n_test


def test_stage_to_copies_the_shards_and_workers_open_each_shard_once(
    both_formats: Path, tmp_path: Path
) -> None:
    staged = _module(both_formats, "shards", stage_to=str(tmp_path / "local"))
    staged.prepare_data()
    staged.setup()
    assert staged.index_path is not None
    assert staged.index_path.is_relative_to(tmp_path / "local")
    source = _module(both_formats, "shards")
    source.setup()
    assert source.index_path is not None
    copied = {p.name: p.read_bytes() for p in staged.index_path.parent.iterdir() if p.is_file()}
    originals = {p.name: p.read_bytes() for p in source.index_path.parent.iterdir()}
    assert {k: v for k, v in copied.items() if not k.startswith(".")} == originals
    dataset = staged.datasets["train"]
    for i in range(len(dataset)):
        dataset[i]
    assert dataset.reader is not None
    train_shards = {s for s in staged.frame["shard"][staged.frame["split"] == "train"]}
    assert dataset.reader.opened == len(train_shards)  # one open per shard, not per image
    # the frame's `path` of a shard sample is a member address that open_rgb reads (for the
    # tools that take paths: predict, audit, explain)
    first = staged.frame.iloc[0]
    assert open_rgb(first["path"]).size == Image.open(io.BytesIO(
        ShardReader(staged.index_path.parent).read(first["shard"], first["offset"], first["size"])
    )).size  # fmt: skip


def test_prepare_shards_is_incremental(fresh_mirror: Path) -> None:
    """Objects joining the label space go into new shards; untouched shards stay as they are."""
    db = fresh_mirror / "met.sqlite"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT object_id FROM objects WHERE withdrawn_at IS NULL ORDER BY object_id DESC"
        ).fetchall()
        late = [r[0] for r in rows[:3]]
        conn.executemany(
            "UPDATE objects SET withdrawn_at = '2026-01-01T00:00:00Z' WHERE object_id = ?",
            [(oid,) for oid in late],
        )
    first = prepare(fresh_mirror, SIZE, None, output="shards", shard_bytes=SHARD_BYTES)
    shard_dir = _shard_dir(fresh_mirror, first)
    before = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.tar")}
    again = prepare(fresh_mirror, SIZE, None, output="shards", shard_bytes=SHARD_BYTES)
    assert again["resized"] == 0 and again["shards_written"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.tar")} == before
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE objects SET withdrawn_at = NULL WHERE object_id IN (?, ?, ?)", late)
    grown = prepare(fresh_mirror, SIZE, None, output="shards", shard_bytes=SHARD_BYTES)
    assert grown["objects_indexed"] == first["objects_indexed"] + 3
    assert grown["resized"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.tar")}
    assert set(after) > set(before) and {k: after[k] for k in before} == before
    index = pd.read_parquet(shard_dir / "index.parquet")
    reader = ShardReader(shard_dir)
    assert set(late) <= set(index["object_id"])
    for shard, offset, size in zip(index["shard"], index["offset"], index["size"], strict=True):
        assert reader.read(shard, offset, size)[:2] == b"\xff\xd8"  # a JPEG, where the index says


def test_cli_writes_shards_and_workers_default_to_the_allocation(
    fresh_mirror: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data-dir", str(fresh_mirror), "--size", "32", "--task", "multiclass"]
    assert main([*args, "--format", "shards", "--shard-mb", "0.02", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert " shards " in out and "shards/index.parquet" in out
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    import os

    assert usable_cpus() == len(os.sched_getaffinity(0))
