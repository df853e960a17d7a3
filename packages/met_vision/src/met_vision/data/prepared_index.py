"""Finding and reading the labelled frame `MetDataModule` trains on.

`prepare` freezes a label space and its splits into an index under
`<data-dir>/cache/<size>/datasets/<key>/` (`index.parquet` over the per-file cache, or
`shards/index.parquet` over tar shards). `find_index` picks the prepared index for a
configuration (`dataset_key` names its directory), `stage_index` copies shards to node-local disk, and the `read_*` functions turn
an index (or, without one, the raw image store) into a `LabelledFrame`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from met_vision.data.labels import LabelSpace, LabelSpaceConfig, build_label_space
from met_vision.data.mirror import load_records
from met_vision.data.shards import SHARDS_DIR, member_address, stage_shards

log = logging.getLogger("met_vision.data")
INDEX_NAMES = {
    "files": ["index.parquet"],
    "shards": [f"{SHARDS_DIR}/index.parquet"],
    "auto": [f"{SHARDS_DIR}/index.parquet", "index.parquet"],
}
# Bumped when the split rule changes, so an index made under an older (leakier) rule is not reused.
SPLIT_RULE_VERSION = 2


@dataclass
class LabelledFrame:
    """Every labelled object (`object_id`, `path`, `target`, `split`; shard columns for
    shards), its label space, and where they were read from."""

    frame: pd.DataFrame
    label_space: LabelSpace
    source: Literal["cache", "shards", "raw"]
    index_path: Path | None = None
    shard_root: Path | None = None


def dataset_key(
    config: LabelSpaceConfig | None,
    split_salt: str,
    split_fractions: Sequence[float],
    group_key: str | None,
    near_duplicates: int | None = None,
) -> str:
    """The directory name of a dataset index: a hash of label-space and split options."""
    split: dict[str, Any] = {
        "salt": split_salt,
        "fractions": list(split_fractions),
        "group": group_key,
        "rule": SPLIT_RULE_VERSION,
    }
    if near_duplicates is not None:
        split["near_duplicates"] = int(near_duplicates)
    payload = {"labels": config.to_dict() if config is not None else "all", "split": split}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def find_index(
    data_dir: Path, key: str, cache_size: int | None, data_format: str, input_size: int
) -> Path | None:
    """The prepared index of dataset `key`: in the cache of size `cache_size`, else the
    smallest prepared size >= `input_size` that has one, else the largest; None without any."""
    cache_root = data_dir / "cache"
    if cache_size is not None:
        sizes = [cache_size]
    else:
        sizes = sorted(int(p.name) for p in cache_root.glob("*") if p.name.isdigit())
    found: list[tuple[int, Path]] = []
    for size in sizes:
        paths = [
            cache_root / str(size) / "datasets" / key / name for name in INDEX_NAMES[data_format]
        ]
        found += [(size, path) for path in paths if path.is_file()][:1]
    if not found:
        return None
    large_enough = [item for item in found if item[0] >= input_size]
    return (large_enough[0] if large_enough else found[-1])[1]


def stage_index(index_path: Path | None, stage_to: str | None) -> Path | None:
    """A shard index copied (with its shards) under `stage_to`; other indexes unchanged."""
    if index_path is None or index_path.parent.name != SHARDS_DIR or not stage_to:
        return index_path
    size, key = index_path.parents[3].name, index_path.parents[1].name
    dest = Path(stage_to) / "met_vision-shards" / f"{size}-{key}" / SHARDS_DIR
    log.info("staging %s to %s", index_path.parent, dest)
    return stage_shards(index_path.parent, dest) / index_path.name


def _manifest(path: Path, config: LabelSpaceConfig) -> LabelSpace:
    space = LabelSpace.load(path)
    if space.config.to_dict() != config.to_dict():
        raise ValueError(f"{path} does not match this label space")
    return space


def read_shard_index(index_path: Path, config: LabelSpaceConfig) -> LabelledFrame:
    """The frame of a shard index; `path` holds each sample's member address."""
    root = index_path.parent
    space = _manifest(root / "labels.json", config)
    index = pd.read_parquet(index_path)
    locations = zip(index["shard"], index["offset"], index["size"], strict=True)
    paths = [member_address(root / shard, offset, size) for shard, offset, size in locations]
    log.info("reading the shards %s (%d objects)", root, len(index))
    frame = index.assign(path=paths)[
        ["object_id", "path", "target", "split", "shard", "offset", "size"]
    ]
    return LabelledFrame(frame, space, "shards", index_path, root)


def read_file_index(index_path: Path, data_dir: Path, config: LabelSpaceConfig) -> LabelledFrame:
    """The frame of a per-file cache index; `path` is each resized image's file."""
    index = pd.read_parquet(index_path)
    space = _manifest(index_path.parent / "labels.json", config)
    paths = [str(data_dir / p) for p in index["cache_path"]]
    frame = index.assign(path=paths)[["object_id", "path", "target", "split"]]
    log.info("reading the prepared cache %s (%d objects)", index_path.parent, len(frame))
    return LabelledFrame(frame, space, "cache", index_path)


def read_raw_store(
    data_dir: Path,
    config: LabelSpaceConfig,
    split_salt: str,
    split_fractions: Sequence[float],
    group_key: str | None,
    size_hint: int,
    near_duplicates: int | None,
) -> LabelledFrame:
    """Without a prepared index: the label space built from the database over the raw image
    store (with a warning naming the `prepare` command that makes loading fast)."""
    if near_duplicates is not None:
        raise ValueError(
            "near-duplicate grouping needs the prepared index: run `python -m "
            f"met_vision.prepare --data-dir {data_dir} --near-duplicates "
            f"{near_duplicates}` with the same label options"
        )
    message = (
        f"no prepared image cache for this label space under {data_dir / 'cache'}; "
        "reading the raw image store (slower). Run `python -m met_vision.prepare "
        f"--data-dir {data_dir} --size {size_hint}` with the same label options."
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)
    records = load_records(
        data_dir,
        include_withdrawn=True,
        split_salt=split_salt,
        split_fractions=split_fractions,
        group_key=group_key,
    )
    space, kept = build_label_space(records, config)
    frame = kept.rename(columns={"image_path": "path"})[["object_id", "path", "target", "split"]]
    return LabelledFrame(frame, space, "raw")


def read_labelled(
    index_path: Path | None,
    data_dir: Path,
    config: LabelSpaceConfig,
    split_salt: str,
    split_fractions: Sequence[float],
    group_key: str | None,
    size_hint: int,
    near_duplicates: int | None,
) -> LabelledFrame:
    """The labelled frame of a prepared index (shards or per-file cache), or, without one
    (`index_path` None), of the raw image store (see `read_raw_store`)."""
    if index_path is not None and index_path.parent.name == SHARDS_DIR:
        return read_shard_index(index_path, config)
    if index_path is not None:
        return read_file_index(index_path, data_dir, config)
    return read_raw_store(
        data_dir, config, split_salt, split_fractions, group_key, size_hint, near_duplicates
    )


def with_index_targets(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """Multilabel targets as lists of int64 class indices (parquet gives arrays); renumbered."""
    if task == "multilabel":
        frame = frame.assign(target=[list(np.asarray(t, dtype=np.int64)) for t in frame["target"]])
    return frame.reset_index(drop=True)
