"""Building the prepared cache: resized images and a frozen dataset index (`prepare`).

`python -m met_vision.prepare` is the command line around `prepare`; the layout it writes under
`<data-dir>/cache/<size>/` is described there, and `met_vision.data.prepared_index` finds and
reads it again (`dataset_key` names each dataset's directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from met_vision.data.images import cache_path, make_cached_copy
from met_vision.data.labels import LabelSpace, LabelSpaceConfig, build_label_space
from met_vision.data.leakage import leakage_report, near_duplicate_links, regroup
from met_vision.data.mirror import load_records
from met_vision.data.prepared_index import dataset_key
from met_vision.data.shards import DEFAULT_SHARD_BYTES, SHARDS_DIR
from met_vision.data.shards import INDEX_FILE as SHARD_INDEX
from met_vision.data.splits import check_fractions, split_report


def _run_jobs(
    jobs: list[tuple[str, str]], size: int, workers: int, progress: bool
) -> dict[str, str]:
    """Resize every (source, target); returns source -> error for the failures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    failures: dict[str, str] = {}
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"resizing to {size}px", total=len(jobs))
        results: Iterable[tuple[str, str | None]]
        if workers <= 1:
            results = (make_cached_copy(src, dst, size) for src, dst in jobs)
            for source, error in results:
                if error:
                    failures[source] = error
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(64, len(jobs) // (workers * 8) or 1))
                sources, targets = zip(*jobs, strict=True) if jobs else ((), ())
                for source, error in pool.map(
                    make_cached_copy, sources, targets, [size] * len(jobs), chunksize=chunk
                ):
                    if error:
                        failures[source] = error
                    bar.advance(task)
    return failures


def _cache_files(
    kept: pd.DataFrame,
    cache_dir: Path,
    known_failures: dict[str, str],
    size: int,
    workers: int,
    progress: bool,
) -> tuple[dict[str, str], dict[str, int]]:
    """Resize the images missing from the per-file cache; (sha256 -> new error, counts)."""
    jobs: dict[str, tuple[str, str]] = {}
    already_cached: set[str] = set()
    for sha, source in zip(kept["image_sha256"], kept["image_path"], strict=True):
        target = cache_path(cache_dir, sha)
        if sha in jobs or sha in known_failures or sha in already_cached:
            continue
        if target.exists():
            already_cached.add(sha)
        else:
            jobs[sha] = (source, str(target))
    by_source = {source: sha for sha, (source, _) in jobs.items()}
    new_failures = _run_jobs(list(jobs.values()), size, workers, progress)
    failures = {by_source[source]: error for source, error in new_failures.items()}
    counts = {"resized": len(jobs) - len(failures), "already_cached": len(already_cached)}
    return failures, counts


def _label(
    records: pd.DataFrame, config: LabelSpaceConfig | None
) -> tuple[LabelSpace | None, pd.DataFrame]:
    """The label space (vocabulary from the training split) and its objects, or every image."""
    if config is not None:
        return build_label_space(records, config)
    kept = records[records["has_image"] & ~records["withdrawn"]].reset_index(drop=True)
    return None, kept.assign(target=None)


def _pack_shards(
    kept: pd.DataFrame,
    known_failures: dict[str, str],
    shard_dir: Path,
    cache_dir: Path,
    size: int,
    names: list[str] | None,
    workers: int,
    shard_bytes: int,
) -> tuple[dict[str, str], dict[str, int]]:
    """Write or top up the dataset's shards; (sha256 -> new error, counts)."""
    from met_vision.data.shard_prepare import build_shards

    rows = kept[~kept["image_sha256"].isin(list(known_failures))].rename(
        columns={"image_sha256": "sha256"}
    )[["object_id", "sha256", "image_path", "target", "split"]]
    _, failures, counts = build_shards(
        rows, shard_dir, cache_dir, size, names=names, workers=workers, max_bytes=shard_bytes
    )
    work = {"resized": counts.pop("resized"), "already_cached": counts.pop("reused")}
    return failures, {**work, **counts}


def _index_frame(kept: pd.DataFrame, cache_dir: Path, data_dir: Path) -> pd.DataFrame:
    """The dataset index of the kept records: object_id, sha256, cache_path (relative to the
    data dir), target, split."""
    return pd.DataFrame(
        {
            "object_id": kept["object_id"].astype("int64"),
            "sha256": kept["image_sha256"],
            "cache_path": [
                str(cache_path(cache_dir, sha).relative_to(data_dir))
                for sha in kept["image_sha256"]
            ],
            "target": kept["target"],
            "split": kept["split"],
        }
    )


def _save_label_space(space: LabelSpace, out_dir: Path, output: str, undecodable: int) -> None:
    """labels.json beside the index (and the shards), noting the undecodable images."""
    space.extra = {"undecodable_images": undecodable, "vocabulary_split": "train"}
    space.save(out_dir / "labels.json")
    if output == "shards":
        space.save(out_dir / SHARDS_DIR / "labels.json")


@dataclass(frozen=True)
class _SplitOptions:
    salt: str
    fractions: Sequence[float]
    group_key: str | None
    near_duplicate_distance: int | None


@dataclass(frozen=True)
class _Destination:
    """Where one `prepare` run writes, and how."""

    data_dir: Path
    size: int
    key: str  # the dataset's directory (`dataset_key`)
    output: str  # 'files' or 'shards'
    workers: int
    progress: bool
    shard_bytes: int

    @property
    def cache_dir(self) -> Path:
        """The cache of this size: `<data-dir>/cache/<size>`."""
        return self.data_dir / "cache" / str(self.size)

    @property
    def out_dir(self) -> Path:
        """The dataset's directory: `<cache>/datasets/<key>`."""
        return self.cache_dir / "datasets" / self.key


@dataclass
class _Labelled:
    """Every record, the label space and the objects it keeps, and the near-duplicate links
    (with the number of images hashed) the splits were regrouped by."""

    records: pd.DataFrame
    space: LabelSpace | None
    kept: pd.DataFrame
    links: list[tuple[int, int, int]] | None
    hashed: int
    split: _SplitOptions

    def leakage(self, index: pd.DataFrame) -> dict[str, Any]:
        """The leakage checks of ``index`` (see `met_vision.data.leakage`)."""
        distance = self.split.near_duplicate_distance
        return leakage_report(self.records, index, self.links, distance, self.hashed)


def _labelled_records(
    data_dir: Path,
    config: LabelSpaceConfig | None,
    split: _SplitOptions,
    known_failures: dict[str, str],
) -> _Labelled:
    """The records and their label space: the splits regrouped by near-duplicates when asked,
    and the label space of the resulting splits."""
    records = load_records(
        data_dir,
        include_withdrawn=True,
        split_salt=split.salt,
        split_fractions=split.fractions,
        group_key=split.group_key,
    )
    space, kept = _label(records, config)
    links: list[tuple[int, int, int]] | None = None
    hashed = 0
    if split.near_duplicate_distance is not None:  # hashes of the source images, before caching
        links, hashed = near_duplicate_links(kept, known_failures, split.near_duplicate_distance)
        records = regroup(records, links, split.salt, split.fractions, split.group_key)
        space, kept = _label(records, config)  # the vocabulary of the new training split
    return _Labelled(records, space, kept, links, hashed, split)


def _cache_images(
    labelled: _Labelled, known_failures: dict[str, str], dest: _Destination
) -> tuple[dict[str, str], dict[str, int]]:
    """Resize the kept records' images into the per-file cache or the dataset's shards;
    (sha256 -> new error, counts)."""
    kept, size, workers = labelled.kept, dest.size, dest.workers
    if dest.output == "shards":
        names = labelled.space.names if labelled.space is not None else None
        shard_dir = dest.out_dir / SHARDS_DIR
        return _pack_shards(
            kept, known_failures, shard_dir, dest.cache_dir, size, names, workers, dest.shard_bytes
        )
    return _cache_files(kept, dest.cache_dir, known_failures, size, workers, dest.progress)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_failures(cache_dir: Path) -> dict[str, str]:
    """The cache's ``failed.json``: source sha256 -> error of the blobs that did not decode."""
    failed_file = cache_dir / "failed.json"
    return json.loads(failed_file.read_text()) if failed_file.exists() else {}


def _record_failures(
    cache_dir: Path, known_failures: dict[str, str], new_failures: dict[str, str]
) -> None:
    """Add ``new_failures`` to ``known_failures`` and, when there are any, to ``failed.json``."""
    known_failures.update(new_failures)
    if new_failures:
        text = json.dumps(known_failures, indent=1, sort_keys=True)
        _write_atomic(cache_dir / "failed.json", text)


def _write_index(
    kept: pd.DataFrame, known_failures: dict[str, str], dest: _Destination
) -> tuple[pd.DataFrame, Path, list[dict[str, Any]]]:
    """(index, its file, the objects left out as undecodable) of the kept records; the file
    is written here for 'files' (the shard index was written with the shards)."""
    ok = ~kept["image_sha256"].isin(list(known_failures))
    failed = kept.loc[~ok, ["object_id", "image_sha256"]]
    index = _index_frame(kept[ok].reset_index(drop=True), dest.cache_dir, dest.data_dir)
    shards = dest.output == "shards"
    index_file = dest.out_dir / (f"{SHARDS_DIR}/{SHARD_INDEX}" if shards else "index.parquet")
    if not shards:
        tmp_index = dest.out_dir / ".index.parquet.tmp"
        index.to_parquet(tmp_index, index=False)
        tmp_index.replace(index_file)
    failed_objects = [
        {"object_id": int(oid), "sha256": sha, "error": known_failures[sha]}
        for oid, sha in zip(failed["object_id"], failed["image_sha256"], strict=True)
    ]
    return index, index_file, failed_objects


def _write_report(
    dest: _Destination,
    labelled: _Labelled,
    work: dict[str, int],
    new_failures: dict[str, str],
    known_failures: dict[str, str],
) -> dict[str, Any]:
    """Write the index, labels.json and report.json of the dataset; returns the report."""
    index, index_file, failed_objects = _write_index(labelled.kept, known_failures, dest)
    report: dict[str, Any] = {
        "data_dir": str(dest.data_dir),
        "size": dest.size,
        "dataset_key": dest.key,
        "format": dest.output,
        "index": str(index_file.relative_to(dest.data_dir)),
        "objects_indexed": len(index),
        **work,
        "failed_now": len(new_failures),
        "failed_objects": failed_objects,
        "leakage": labelled.leakage(index),
    }
    space = labelled.space
    if space is not None:
        _save_label_space(space, dest.out_dir, dest.output, len(failed_objects))
        report["exclusions"] = space.exclusions
        report["splits"] = split_report(index, space.names, space.task)
    _write_atomic(dest.out_dir / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def prepare(
    data_dir: Path | str,
    size: int,
    config: LabelSpaceConfig | None,
    *,
    workers: int = 1,
    split_salt: str = "met",
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    group_key: str | None = None,
    near_duplicate_distance: int | None = None,
    progress: bool = False,
    output: Literal["files", "shards"] = "files",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> dict[str, Any]:
    """Build (or top up) the cache of one size and write the dataset index.

    Args:
        data_dir: the harvester's data dir.
        size: short side of the cached images, in pixels.
        config: the label space whose objects are cached; None caches every object with an
            image (index without targets).
        workers: worker processes (<= 1: in this process).
        split_salt, split_fractions, group_key: the split options (see `met_vision.data.splits`).
        near_duplicate_distance: also keep objects whose images are near-duplicates (pHash
            within this many bits, see `met_vision.data.near_duplicates`) in one split; None: off.
        progress: show a rich progress bar.
        output: 'files' (one JPEG per image, `index.parquet`) or 'shards' (WebDataset tar
            shards under `shards/`, see `met_vision.data.shards`).
        shard_bytes: size at which a shard is closed.

    Returns:
        The report also written to `report.json`.
    """
    if size < 8:
        raise ValueError(f"--size must be at least 8 pixels, got {size}")
    if output not in ("files", "shards"):
        raise ValueError(f"--format must be files or shards, not {output!r}")
    fractions = check_fractions(split_fractions)
    key = dataset_key(config, split_salt, fractions, group_key, near_duplicate_distance)
    dest = _Destination(Path(data_dir), size, key, output, workers, progress, shard_bytes)
    known_failures = _read_failures(dest.cache_dir)
    split = _SplitOptions(split_salt, fractions, group_key, near_duplicate_distance)
    labelled = _labelled_records(dest.data_dir, config, split, known_failures)
    dest.out_dir.mkdir(parents=True, exist_ok=True)
    new_failures, work = _cache_images(labelled, known_failures, dest)
    _record_failures(dest.cache_dir, known_failures, new_failures)
    return _write_report(dest, labelled, work, new_failures, known_failures)
