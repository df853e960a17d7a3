"""`MetDataModule`: labelled images of the mirror for Lightning.

The DataModule reads the frozen index that `python -m met_vision.prepare` wrote for its label
space and split options (`<data-dir>/cache/<size>/datasets/<key>/`), and the resized images of
that cache. Without a prepared index it builds the label space from the database and reads the
raw blobs (with a warning: slower, and every DDP rank reads the database itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from met_vision.data.datasets import BadImageError, MetImageDataset
from met_vision.data.labels import LabelSpace, LabelSpaceConfig
from met_vision.data.prepared_index import (
    dataset_key,
    find_index,
    read_labelled,
    stage_index,
    with_index_targets,
)
from met_vision.data.resumable import ResumableLoader
from met_vision.data.samplers import (
    ClassBalancedSampler,
    class_balanced_weights,
    distributed_context,
)
from met_vision.data.shards import ShardReader
from met_vision.data.splits import check_fractions
from met_vision.data.transforms import DataConfig, build_transform, resolve_data_config

log = logging.getLogger("met_vision.data")
Stage = Literal["train", "val", "test", "predict"]


class MetDataModule(pl.LightningDataModule):
    """Train/val/test/predict loaders over a mirror's labelled images.

    Args:
        data_dir: the harvester's data dir.
        task: 'multiclass' or 'multilabel'.
        label_column: multiclass column (classification, department, object_name, culture).
        tag_group: multiclass from tags: exactly one of these tags labels an object.
        top_k, min_count, include, exclude, other: label space options (`LabelSpaceConfig`).
        model_name: timm model whose input size and mean/std are used.
        image_size: input size; overrides the model's.
        cache_size: which prepared cache to read (default: the smallest prepared size >= the
            input size that has an index for this configuration, else the largest).
        batch_size, num_workers, pin_memory (None: when CUDA is available), persistent_workers.
        augment: 'none' | 'flip' | 'trivial' | 'randaugment'.
        crop_scale: RandomResizedCrop area range.
        balanced_sampler: draw training samples class-balanced (with replacement).
        group_balance: 'sampler' draws training samples so that gender groups are balanced
            (bias mitigation; weights from `met_vision.fairness.groups.datamodule_train_weights`).
        group_balance_by: 'depicted' (gender tags) or 'artist' (artist/constituent gender).
        group_balance_attribute: None balances each (group, label) cell; 'warm' balances each
            (group, warm background) cell.
        gender_vocab: tag -> group, e.g. 'Women=female,Men=male' (default: met_vision.fairness.groups).
        split_salt, split_fractions, group_key: see `met_vision.data.splits`.
        near_duplicates: the `prepare --near-duplicates` distance the index was built with
            (None: off); part of the index key.
        predict_split: which objects predict_dataloader covers: a split or 'all'.
        max_consecutive_bad: unreadable images in a row that make loading fail.
        data_format: which prepared form to read: 'shards' (tar shards of
            `prepare --format shards`), 'files' (the per-file cache) or 'auto' (shards when
            prepared, else files); without either, the raw image store.
        stage_to: copy the shards to this (node-local) directory first, e.g. `$TMPDIR`.
        device_decode: workers read the JPEG bytes only; the model decodes, crops and resizes
            them on its device (nvJPEG on CUDA; see `met_vision.data.device_decode`). For the raw
            path's multi-MB originals; augment must be 'none' or 'flip'.
        seed: seed of the training shuffle / balanced draw.
    """

    def __init__(
        self,
        data_dir: str = "data",
        task: Literal["multiclass", "multilabel"] = "multilabel",
        label_column: str = "classification",
        top_k: int | None = None,
        min_count: int = 1,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        model_name: str | None = None,
        image_size: int | None = None,
        cache_size: int | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        augment: str = "flip",
        balanced_sampler: bool = False,
        split_salt: str = "met",
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        group_key: str | None = None,
        tag_group: list[str] | None = None,
        other: bool = False,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        predict_split: Literal["train", "val", "test", "all"] = "test",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        max_consecutive_bad: int = 20,
        seed: int = 0,
        group_balance: Literal["none", "sampler"] = "none",
        group_balance_by: Literal["depicted", "artist"] = "depicted",
        group_balance_attribute: str | None = None,
        gender_vocab: str | None = None,
        data_format: Literal["auto", "files", "shards"] = "auto",
        stage_to: str | None = None,
        device_decode: bool = False,
        near_duplicates: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.task = task
        self.config = LabelSpaceConfig(
            task=task,
            column=label_column,
            tag_group=tag_group,
            min_count=min_count,
            top_k=top_k,
            other=other,
            include=include,
            exclude=exclude,
        )
        self.split_fractions = check_fractions(split_fractions)
        self.data_config: DataConfig = resolve_data_config(model_name, image_size)
        build_transform(self.data_config, train=True, augment=augment)  # validates `augment`
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.crop_scale = crop_scale
        self.balanced_sampler = balanced_sampler
        self.split_salt = split_salt
        self.group_key = group_key
        self.near_duplicates = near_duplicates
        self.predict_split = predict_split
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.max_consecutive_bad = max_consecutive_bad
        self.seed = seed
        _check_options(group_balance, data_format, device_decode, augment)
        self.group_balance = group_balance
        self.data_format = data_format
        self.stage_to = stage_to
        self.device_decode = device_decode
        self._shard_root: Path | None = None
        self._resume_epoch = 0
        self._resume_batches = 0
        self._label_space: LabelSpace | None = None
        self._frame: pd.DataFrame | None = None
        self.source: Literal["cache", "shards", "raw"] | None = None
        self.index_path: Path | None = None
        self.datasets: dict[str, MetImageDataset] = {}

    # --- the data ---------------------------------------------------------------------------
    @property
    def label_space(self) -> LabelSpace:
        """The label space (read from the prepared index, else built from the database)."""
        if self._label_space is None:
            self._load()
        assert self._label_space is not None
        return self._label_space

    @property
    def num_classes(self) -> int:
        """Number of outputs the model needs."""
        return self.label_space.num_classes

    @property
    def label_names(self) -> list[str]:
        """Label names, indexed like the model's outputs."""
        return self.label_space.names

    @property
    def frame(self) -> pd.DataFrame:
        """Every labelled object: object_id, path, target, split."""
        if self._frame is None:
            self._load()
        assert self._frame is not None
        return self._frame

    def find_index(self) -> Path | None:
        """The prepared index for this configuration, if any (see `cache_size` and
        `data_format`): `.../datasets/<key>/index.parquet` or `.../<key>/shards/index.parquet`."""
        key = dataset_key(
            self.config, self.split_salt, self.split_fractions, self.group_key, self.near_duplicates
        )
        return find_index(
            self.data_dir, key, self.cache_size, self.data_format, self.data_config.input_size
        )

    def prepare_data(self) -> None:
        """Stage the shards to `stage_to` (Lightning runs this once per node)."""
        self._staged_index()

    def _staged_index(self) -> Path | None:
        return stage_index(self.find_index(), self.stage_to)

    def _load(self) -> None:
        loaded = read_labelled(
            self._staged_index(),
            self.data_dir,
            self.config,
            self.split_salt,
            self.split_fractions,
            self.group_key,
            self.cache_size or 384,
            self.near_duplicates,
        )
        self._label_space, self.source = loaded.label_space, loaded.source
        self.index_path, self._shard_root = loaded.index_path, loaded.shard_root
        self._frame = with_index_targets(loaded.frame, self.task)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of every split (once)."""
        if self.datasets:
            return
        frame = self.frame
        space = self.label_space
        for split in ("train", "val", "test", "all"):
            part = frame if split == "all" else frame[frame["split"] == split]
            train = split == "train"
            self.datasets[split] = self._dataset_class()(
                part.reset_index(drop=True),
                task=self.task,
                num_classes=space.num_classes,
                transform=build_transform(
                    self.data_config, train=train, augment=self.augment, crop_scale=self.crop_scale
                ),
                decode_size=self.data_config.input_size,
                max_consecutive_bad=self.max_consecutive_bad,
                reader=ShardReader(self._shard_root) if self._shard_root is not None else None,
            )
            if self.device_decode:
                self.datasets[split].collate = self._encoded_collate(train)

    def _dataset_class(self) -> type[MetImageDataset]:
        if not self.device_decode:
            return MetImageDataset
        from met_vision.data.device_decode import EncodedImageDataset

        return EncodedImageDataset

    def _encoded_collate(self, train: bool) -> Callable[[list[dict[str, Any]]], Any]:
        from met_vision.data.device_decode import CropSpec, EncodedCollate

        config = self.data_config
        train = train and self.augment != "none"
        spec = CropSpec(
            config.input_size, train, config.crop_pct, config.interpolation, self.crop_scale
        )
        return EncodedCollate(spec)

    # --- loaders ----------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return distributed_context(None, None)

    def _loader(
        self,
        dataset: MetImageDataset,
        sampler: Sampler | None,
        shuffle: bool,
        drop_last: bool,
        **resumable: Any,
    ) -> DataLoader:
        return (ResumableLoader if resumable else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=drop_last,
            collate_fn=dataset.collate,
            **resumable,
        )

    def train_sampler(
        self, num_replicas: int | None = None, rank: int | None = None
    ) -> Sampler | None:
        """The training sampler: class-balanced, else a shuffling DistributedSampler (seeded by
        `seed` and the epoch; one replica when not under DDP)."""
        dataset = self.datasets["train"]
        world, rank = (
            self._world() if num_replicas is None or rank is None else (num_replicas, rank)
        )
        if self.group_balance == "sampler":
            from met_vision.fairness.groups import datamodule_train_weights

            group_weights = torch.as_tensor(datamodule_train_weights(self), dtype=torch.double)
            return ClassBalancedSampler(
                dataset, group_weights, num_replicas=world, rank=rank, seed=self.seed
            )
        if self.balanced_sampler:
            weights = class_balanced_weights(dataset.targets, self.task)
            return ClassBalancedSampler(
                dataset, weights, num_replicas=world, rank=rank, seed=self.seed
            )
        # one process too: each epoch's order is f(seed, epoch), so a resumed run sees the same
        return DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )

    def eval_sampler(
        self, stage: Stage, num_replicas: int | None = None, rank: int | None = None
    ) -> Sampler | None:
        """Under DDP: every sample on exactly one rank (`met_vision.data.eval_sharding`), no padding."""
        from met_vision.data.eval_sharding import exact_eval_sampler

        world, rank = (
            self._world() if num_replicas is None or rank is None else (num_replicas, rank)
        )
        return exact_eval_sampler(self._dataset(stage), stage, world, rank)

    def _dataset(self, stage: Stage) -> MetImageDataset:
        self.setup()
        return self.datasets[self.predict_split if stage == "predict" else stage]

    def _epochs_done(self) -> int:
        trainer = self.trainer
        return int(trainer.fit_loop.epoch_progress.current.processed) if trainer else 0  # type: ignore[attr-defined]

    def _batches_done(self) -> int:
        """Batches of the current epoch trained on; 0 once the epoch is complete."""
        trainer = self.trainer
        if trainer is None:
            return 0
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)  # type: ignore[attr-defined]
        return done if done < trainer.num_training_batches else 0

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the epoch whose order the training sampler draws next, and the
        batches of it already trained on (see `met_vision.data.resumable`)."""
        return {"train_epoch": self._epochs_done(), "train_batches_done": self._batches_done()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore `state_dict()` (Lightning calls this when resuming)."""
        self._resume_epoch = int(state_dict.get("train_epoch", 0))
        self._resume_batches = int(state_dict.get("train_batches_done", 0))

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) training batches."""
        dataset = self._dataset("train")
        world, _ = self._world()
        sampler = self.train_sampler()
        if sampler is not None and hasattr(sampler, "set_epoch"):
            # Lightning starts the first iterator (workers prefetch at once) before it calls
            # set_epoch and before it restores its loops: a resumed run would replay epoch 0
            sampler.set_epoch(max(self._resume_epoch, self._epochs_done()))
        drop_last = len(dataset) // world > self.batch_size
        skip, self._resume_batches = self._resume_batches, 0  # once, for the resumed epoch
        return self._loader(dataset, sampler, True, drop_last, skip_batches=skip)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self._dataset("val"), self.eval_sampler("val"), False, False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader(self._dataset("test"), self.eval_sampler("test"), False, False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of `predict_split` in a fixed order."""
        return self._loader(self._dataset("predict"), self.eval_sampler("predict"), False, False)


def _check_options(group_balance: str, data_format: str, device_decode: bool, augment: str) -> None:
    if group_balance not in ("none", "sampler"):
        raise ValueError(f"group_balance must be 'none' or 'sampler', got {group_balance!r}")
    if data_format not in ("auto", "files", "shards"):
        raise ValueError(f"data_format must be auto, files or shards, not {data_format!r}")
    if device_decode and augment not in ("none", "flip"):
        raise ValueError(f"device_decode supports augment 'none' or 'flip', not {augment!r}")


__all__ = ["BadImageError", "MetDataModule", "MetImageDataset"]
