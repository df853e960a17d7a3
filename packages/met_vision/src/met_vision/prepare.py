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

This module holds the command line; `met_vision.data.prepare_cache.prepare` does the work (and
its names stay importable from here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from met_vision.cluster.cpus import usable_cpus
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
from met_vision.data.labels import LabelSpaceConfig
from met_vision.data.prepare_cache import prepare
from met_vision.data.prepared_index import SPLIT_RULE_VERSION, dataset_key
from met_vision.data.shards import DEFAULT_SHARD_BYTES
from met_vision.data.splits import GROUP_KEYS

PROG = "met_vision.prepare"


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
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
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for failure in report["failed_objects"]:
        print(
            f"{PROG}: skipped object {failure['object_id']}: undecodable image "
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


__all__ = [  # the library names stay importable from here (tests, bench)
    "DECODE_ERRORS",
    "JPEG_QUALITY",
    "MAX_IMAGE_PIXELS",
    "SPLIT_RULE_VERSION",
    "add_label_space_arguments",
    "build_parser",
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
