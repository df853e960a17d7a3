"""`prepare --format shards`: pack a dataset's resized images into WebDataset tar shards,
incrementally.

A shard written by an earlier run is kept as it is when every sample in it is still in the
dataset with the same image, target and split; the samples of any other shard and the new ones
are packed into new shards (the old shard files are deleted once the new index is in place).
JPEG bytes come from the old shards, else the per-file cache, else a fresh resize of the
original in `workers` processes, so a top-up run reads only what changed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from met_vision.data.images import DECODE_ERRORS, cache_path, resized_jpeg
from met_vision.data.shards import (
    INDEX_FILE,
    LOCATION_COLUMNS,
    MANIFEST_FILE,
    SHARD_FORMAT,
    Location,
    ShardReader,
    ShardWriter,
    read_index,
)

CHUNK = 1024  # samples resized and written per round (bounds memory)
_NUMBER = re.compile(r"^(?P<split>.+)-(?P<number>\d{6})\.tar$")


def target_json(target: Any) -> str:
    """A target as canonical JSON (class index, list of label indices, or null)."""
    if target is None or (isinstance(target, float) and np.isnan(target)):
        return "null"
    if isinstance(target, list | tuple | np.ndarray):
        return json.dumps([int(t) for t in target])
    return json.dumps(int(target))


def _resize_job(source: str, size: int) -> tuple[bytes | None, str | None]:
    try:
        return resized_jpeg(source, size), None
    except DECODE_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _signature(frame: pd.DataFrame) -> pd.Series:
    """One string per sample that changes when its image, target or split changes."""
    return (
        frame["sha256"].astype(str)
        + "|"
        + frame["target"].map(target_json)
        + "|"
        + frame["split"].astype(str)
    ).set_axis(frame["object_id"].to_numpy())


def _kept_shards(old: pd.DataFrame, wanted: pd.Series, shard_dir: Path) -> set[str]:
    """Old shards whose every sample is still wanted unchanged (and whose file is there)."""
    old_signature = _signature(old)
    same = old_signature.index.isin(wanted.index)
    same[same] = wanted.loc[old_signature.index[same]].to_numpy() == old_signature[same].to_numpy()
    intact = pd.Series(same).groupby(old["shard"].to_numpy()).all()
    return {name for name, ok in intact.items() if ok and (shard_dir / str(name)).is_file()}


class _ByteSource:
    """JPEG bytes of a pending sample: from an old shard, the per-file cache, or a resize."""

    def __init__(self, old: pd.DataFrame | None, shard_dir: Path, cache_dir: Path) -> None:
        self.reader = ShardReader(shard_dir)
        self.cache_dir = cache_dir
        self.old: dict[str, Location] = {}
        if old is not None:
            for sha, shard, offset, size in old[["sha256", *LOCATION_COLUMNS]].itertuples(
                index=False
            ):
                if (shard_dir / shard).is_file():
                    self.old.setdefault(sha, Location(shard, int(offset), int(size)))

    def stored(self, sha: str) -> bytes | None:
        """The bytes if they are already prepared somewhere."""
        location = self.old.get(sha)
        if location is not None:
            return self.reader.read(location.shard, location.offset, location.size)
        cached = cache_path(self.cache_dir, sha)
        return cached.read_bytes() if cached.is_file() else None


def _next_numbers(old: pd.DataFrame | None, shard_dir: Path) -> dict[str, int]:
    numbers: dict[str, int] = {}
    names = [p.name for p in shard_dir.glob("*.tar")]
    names += list(old["shard"].unique()) if old is not None else []
    for name in names:
        match = _NUMBER.match(name)
        if match:
            split = match["split"]
            numbers[split] = max(numbers.get(split, 0), int(match["number"]) + 1)
    return numbers


def _kept_locations(
    old: pd.DataFrame | None, rows: pd.DataFrame, shard_dir: Path
) -> dict[int, Location]:
    """object_id -> location of the samples in the old shards that are kept."""
    if old is None:
        return {}
    kept = _kept_shards(old, _signature(rows), shard_dir)
    columns = old[["object_id", *LOCATION_COLUMNS]].itertuples(index=False)
    return {
        int(oid): Location(shard, int(offset), int(length))
        for oid, shard, offset, length in columns
        if shard in kept
    }


def _chunk_bytes(
    chunk: pd.DataFrame, source: _ByteSource, pool: Any, size: int, failures: dict[str, str]
) -> tuple[dict[str, bytes], int]:
    """sha256 -> JPEG bytes of a chunk's images (stored, else resized in `pool`), and how many
    were resized; undecodable ones go into `failures`."""
    data: dict[str, bytes] = {}
    todo: dict[str, str] = {}
    for sha, image_path in zip(chunk["sha256"], chunk["image_path"], strict=True):
        if sha in data or sha in todo:
            continue
        stored = source.stored(sha)
        if stored is None:
            todo[sha] = image_path
        else:
            data[sha] = stored
    mapper = pool.map if pool is not None else map
    resized = 0
    for sha, (jpeg, error) in zip(
        todo, mapper(_resize_job, todo.values(), [size] * len(todo)), strict=True
    ):
        if jpeg is None:
            failures[sha] = str(error)
        else:
            data[sha] = jpeg
            resized += 1
    return data, resized


class _Packer:
    """One `ShardWriter` per split; writes a sample with its JSON metadata."""

    def __init__(
        self, shard_dir: Path, names: list[str] | None, max_bytes: int, numbers: dict[str, int]
    ) -> None:
        self.shard_dir, self.names, self.max_bytes, self.numbers = (
            shard_dir,
            names,
            max_bytes,
            numbers,
        )
        self.writers: dict[str, ShardWriter] = {}

    def add(self, row: Any, jpeg: bytes) -> Location:
        """Write one index row's sample; returns where its JPEG lies."""
        split = str(row.split)
        if split not in self.writers:
            first = self.numbers.get(split, 0)
            self.writers[split] = ShardWriter(self.shard_dir, split, first, self.max_bytes)
        target = json.loads(target_json(row.target))
        meta: dict[str, Any] = {
            "object_id": int(row.object_id), "sha256": row.sha256, "target": target, "split": split,
        }  # fmt: skip
        if self.names is not None and target is not None:
            meta["labels"] = [
                self.names[i] for i in (target if isinstance(target, list) else [target])
            ]
        return self.writers[split].add(str(row.object_id), jpeg, meta)

    def close(self) -> dict[str, dict[str, Any]]:
        """Finish every open shard; {name: {split, samples, bytes}} of those written."""
        written: dict[str, dict[str, Any]] = {}
        for writer in self.writers.values():
            written.update(writer.close())
        return written


def _chunks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), CHUNK):
        yield frame.iloc[start : start + CHUNK]


def _open_shard_dir(shard_dir: Path) -> pd.DataFrame | None:
    """Create the shard directory, drop the temporary files an interrupted run left, and
    return the old index (None on a first run)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stray in shard_dir.glob(".*.tmp"):
        stray.unlink()
    return read_index(shard_dir) if (shard_dir / INDEX_FILE).is_file() else None


def _shard_index(rows: pd.DataFrame, locations: dict[int, Location]) -> pd.DataFrame:
    """The index of the rows that have a location, in dataset order, with shard, offset, size."""
    done = rows[rows["object_id"].isin(list(locations))].reset_index(drop=True)
    where = [locations[int(oid)] for oid in done["object_id"]]
    return done[["object_id", "sha256", "target", "split"]].assign(
        shard=[w.shard for w in where],
        offset=np.array([w.offset for w in where], dtype=np.int64),
        size=np.array([w.size for w in where], dtype=np.int64),
    )


def build_shards(
    rows: pd.DataFrame,
    shard_dir: Path,
    cache_dir: Path,
    size: int,
    *,
    names: list[str] | None,
    workers: int = 1,
    max_bytes: int,
) -> tuple[pd.DataFrame, dict[str, str], dict[str, int]]:
    """Write (or top up) the shards of one dataset.

    Args:
        rows: the dataset in index order: object_id, sha256, image_path, target, split.
        shard_dir: the dataset's shard directory.
        cache_dir: the per-file cache of this size (bytes are taken from it when present).
        size: short side of the resized images.
        names: label names (written into each sample's JSON), or None.
        workers: resize processes (<= 1: in this process).
        max_bytes: a shard is closed once it reaches this size.

    Returns:
        (the shard index in dataset order, sha256 -> error of images that failed now, counts).
    """
    old = _open_shard_dir(shard_dir)
    rows = rows.reset_index(drop=True)
    locations = _kept_locations(old, rows, shard_dir)
    pending = rows[~rows["object_id"].isin(list(locations))]
    source = _ByteSource(old, shard_dir, cache_dir)
    packer = _Packer(shard_dir, names, max_bytes, _next_numbers(old, shard_dir))
    failures: dict[str, str] = {}
    counts = {"reused": len(rows) - len(pending), "resized": 0}
    pool_context: Any = (
        ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(pending) else nullcontext()
    )
    with pool_context as pool:
        for chunk in _chunks(pending):
            data, resized = _chunk_bytes(chunk, source, pool, size, failures)
            counts["reused"] += len(data) - resized
            counts["resized"] += resized
            for row in chunk.itertuples(index=False):
                if row.sha256 in data:
                    locations[int(row.object_id)] = packer.add(row, data[row.sha256])
    written = packer.close()
    source.reader.close()
    index = _shard_index(rows, locations)
    _write_index(shard_dir, index)
    counts.update(
        shards_kept=index["shard"].nunique() - len(written),
        shards_written=len(written),
        shards=index["shard"].nunique(),
    )
    return index, failures, counts


def _write_index(shard_dir: Path, index: pd.DataFrame) -> None:
    """Write index and manifest atomically, then delete the shards nothing refers to."""
    tmp = shard_dir / f".{INDEX_FILE}.{os.getpid()}.tmp"
    index.to_parquet(tmp, index=False)
    tmp.replace(shard_dir / INDEX_FILE)
    in_use = set(index["shard"])
    per_shard = index.groupby("shard").agg(split=("split", "first"), samples=("object_id", "size"))
    manifest = {
        "format": SHARD_FORMAT,
        "version": 1,
        "samples": len(index),
        "shards": {
            str(name): {
                "split": str(row.split),
                "samples": int(row.samples),
                "bytes": (shard_dir / str(name)).stat().st_size,
            }
            for name, row in per_shard.iterrows()
        },
    }
    tmp_manifest = shard_dir / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp_manifest.replace(shard_dir / MANIFEST_FILE)
    for path in shard_dir.glob("*.tar"):
        if path.name not in in_use:
            path.unlink()
