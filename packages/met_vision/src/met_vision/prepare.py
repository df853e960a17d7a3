"""`python -m met_vision.prepare`: a cache of resized images and a frozen dataset index.

Layout under `<data-dir>/cache/<size>/`:

- `<sha[:2]>/<sha>.jpg`: the source blob `sha` scaled so its short side is `size` (never
  upscaled), RGB, JPEG quality 90. Content-addressed and shared by every label space; written
  atomically (temp file + rename), so a run can be interrupted and resumed.
- `failed.json`: source sha256 -> error, for blobs that could not be decoded (not retried).
- `datasets/<key>/index.parquet`: object_id, sha256, cache_path (relative to the data dir),
  target (class index, or list of label indices), split; `labels.json` (the label manifest) and
  `report.json` (exclusions, split report, what this run did). `<key>` hashes the label space and
  split options, so the DataModule finds the index for its own configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from met_vision.data import near_duplicates
from met_vision.data.images import (
    DECODE_ERRORS,
    JPEG_QUALITY,
    MAX_IMAGE_PIXELS,
    cache_path,
    make_cached_copy,
    open_rgb,
    resize_short_side,
    resized_jpeg,
    to_rgb,
)
from met_vision.data.labels import LabelSpace, LabelSpaceConfig, build_label_space
from met_vision.data.leakage import leakage_report, near_duplicate_links, regroup
from met_vision.data.mirror import load_records
from met_vision.data.shards import DEFAULT_SHARD_BYTES, SHARDS_DIR
from met_vision.data.shards import INDEX_FILE as SHARD_INDEX
from met_vision.data.splits import GROUP_KEYS, check_fractions, split_report


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask (cgroup/cpuset), capped by SLURM's
    `SLURM_CPUS_PER_TASK` when set; `os.cpu_count()` where there is no affinity call."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)


# Bumped when the split rule changes, so an index made under an older (leakier) rule is not reused.
SPLIT_RULE_VERSION = 2


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


def _labelled_records(
    data_dir: Path,
    config: LabelSpaceConfig | None,
    split: _SplitOptions,
    known_failures: dict[str, str],
) -> tuple[pd.DataFrame, LabelSpace | None, pd.DataFrame, list[tuple[int, int, int]] | None, int]:
    """(records, label space, kept records, near-duplicate links, images hashed): the splits
    regrouped by near-duplicates when asked, and the label space of the resulting splits."""
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
    return records, space, kept, links, hashed


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
    data_dir = Path(data_dir)
    fractions = check_fractions(split_fractions)
    cache_dir = data_dir / "cache" / str(size)
    failed_file = cache_dir / "failed.json"
    known_failures: dict[str, str] = (
        json.loads(failed_file.read_text()) if failed_file.exists() else {}
    )
    split = _SplitOptions(split_salt, fractions, group_key, near_duplicate_distance)
    records, space, kept, links, hashed = _labelled_records(data_dir, config, split, known_failures)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = dataset_key(config, split_salt, fractions, group_key, near_duplicate_distance)
    out_dir = cache_dir / "datasets" / key
    out_dir.mkdir(parents=True, exist_ok=True)
    if output == "shards":
        names = space.names if space is not None else None
        new_failures, work = _pack_shards(
            kept, known_failures, out_dir / SHARDS_DIR, cache_dir, size, names, workers, shard_bytes
        )
    else:
        new_failures, work = _cache_files(kept, cache_dir, known_failures, size, workers, progress)
    known_failures.update(new_failures)
    if new_failures:
        tmp = failed_file.with_name(".failed.json.tmp")
        tmp.write_text(json.dumps(known_failures, indent=1, sort_keys=True))
        tmp.replace(failed_file)

    ok = ~kept["image_sha256"].isin(list(known_failures))
    failed_objects = kept.loc[~ok, ["object_id", "image_sha256"]]
    index = _index_frame(kept[ok].reset_index(drop=True), cache_dir, data_dir)
    index_file = out_dir / (
        f"{SHARDS_DIR}/{SHARD_INDEX}" if output == "shards" else "index.parquet"
    )
    if output != "shards":
        tmp_index = out_dir / ".index.parquet.tmp"
        index.to_parquet(tmp_index, index=False)
        tmp_index.replace(index_file)

    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "size": size,
        "dataset_key": key,
        "format": output,
        "index": str(index_file.relative_to(data_dir)),
        "objects_indexed": len(index),
        **work,
        "failed_now": len(new_failures),
        "failed_objects": [
            {"object_id": int(oid), "sha256": sha, "error": known_failures[sha]}
            for oid, sha in zip(
                failed_objects["object_id"], failed_objects["image_sha256"], strict=True
            )
        ],
        "leakage": leakage_report(records, index, links, near_duplicate_distance, hashed),
    }
    if space is not None:
        _save_label_space(space, out_dir, output, len(failed_objects))
        report["exclusions"] = space.exclusions
        report["splits"] = split_report(index, space.names, space.task)
    tmp_report = out_dir / ".report.json.tmp"
    tmp_report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp_report.replace(out_dir / "report.json")
    return report


def add_label_space_arguments(parser: argparse.ArgumentParser) -> None:
    """The label-space and split options (shared with other command-line tools)."""
    group = parser.add_argument_group("label space")
    group.add_argument("--task", choices=("multiclass", "multilabel"), default="multilabel")
    group.add_argument("--label-column", default="classification", help="multiclass column")
    group.add_argument("--tag-group", default=None, help="multiclass from tags: comma-separated")
    group.add_argument("--min-count", type=int, default=1)
    group.add_argument("--top-k", type=int, default=None)
    group.add_argument("--other", action="store_true", help="multiclass: bucket rare classes")
    group.add_argument("--include", default=None, help="comma-separated label values to keep")
    group.add_argument("--exclude", default=None, help="comma-separated label values to drop")
    splits = parser.add_argument_group("splits")
    splits.add_argument("--split-salt", default="met")
    splits.add_argument("--split-fractions", default="0.8,0.1,0.1", help="train,val,test")
    splits.add_argument("--group-key", choices=GROUP_KEYS, default=None)
    splits.add_argument(
        "--near-duplicates",
        type=int,
        nargs="?",
        const=near_duplicates.DEFAULT_MAX_DISTANCE,
        default=None,
        metavar="BITS",
        help="also keep near-duplicate images in one split: pHash within BITS "
        f"(default {near_duplicates.DEFAULT_MAX_DISTANCE}) of each other",
    )


def _csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def config_from_args(args: argparse.Namespace) -> LabelSpaceConfig:
    """A LabelSpaceConfig from parsed `add_label_space_arguments` options."""
    return LabelSpaceConfig(
        task=args.task,
        column=args.label_column,
        tag_group=_csv_list(args.tag_group),
        min_count=args.min_count,
        top_k=args.top_k,
        other=args.other,
        include=_csv_list(args.include),
        exclude=_csv_list(args.exclude),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m met_vision.prepare",
        description="Cache resized images of a met_harvester mirror and write a dataset index.",
    )
    parser.add_argument("--data-dir", default="data", help="the harvester's data dir")
    parser.add_argument("--size", type=int, default=384, help="short side of cached images")
    parser.add_argument(
        "--workers", type=int, default=usable_cpus(), help="default: the CPUs this job may use"
    )
    parser.add_argument("--all", action="store_true", help="cache every object with an image")
    parser.add_argument(
        "--format",
        choices=("files", "shards"),
        default="files",
        help="files: one JPEG per image; shards: WebDataset tar shards (for clusters)",
    )
    parser.add_argument(
        "--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20, help="shard size, MiB"
    )
    parser.add_argument("--no-progress", action="store_true")
    add_label_space_arguments(parser)
    args = parser.parse_args(argv)
    try:
        fractions = [float(f) for f in args.split_fractions.split(",")]
        config = None if args.all else config_from_args(args)
        report = prepare(
            args.data_dir,
            args.size,
            config,
            workers=args.workers,
            split_salt=args.split_salt,
            split_fractions=fractions,
            group_key=args.group_key,
            near_duplicate_distance=args.near_duplicates,
            progress=not args.no_progress and sys.stderr.isatty(),
            output=args.format,
            shard_bytes=max(1, int(args.shard_mb * 2**20)),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"met_vision.prepare: error: {exc}", file=sys.stderr)
        return 2
    for failure in report["failed_objects"]:
        print(
            f"met_vision.prepare: skipped object {failure['object_id']}: undecodable image "
            f"{failure['sha256'][:12]}: {failure['error']}",
            file=sys.stderr,
        )
    shards = f", {report['shards']} shards" if args.format == "shards" else ""
    print(
        f"indexed {report['objects_indexed']} objects at {args.size}px{shards} "
        f"({report['resized']} resized, {report['already_cached']} already cached, "
        f"{len(report['failed_objects'])} undecodable) -> {Path(args.data_dir) / report['index']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [  # the image helpers stay importable from here (tests, bench)
    "DECODE_ERRORS",
    "JPEG_QUALITY",
    "MAX_IMAGE_PIXELS",
    "cache_path",
    "config_from_args",
    "dataset_key",
    "main",
    "make_cached_copy",
    "open_rgb",
    "prepare",
    "resize_short_side",
    "resized_jpeg",
    "to_rgb",
    "usable_cpus",
]
