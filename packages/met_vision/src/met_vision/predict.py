"""`python -m met_vision.predict`: batch inference over the mirror or over image files.

    python -m met_vision.predict --ckpt best.ckpt --data-dir data --split test --out preds.parquet
    python -m met_vision.predict --ckpt best.ckpt --data-dir data --object-ids 1,2 --write-db
    python -m met_vision.predict --ckpt best.ckpt --images a.jpg folder/ --out preds.csv --top-k 3
    python -m met_vision.predict --ckpt best.ckpt --data-dir data --out all.parquet \
        --device cuda --devices 4 --num-workers 8

The output table has one row per image and rank: object_id (empty for files), image, model_id,
label_manifest_hash, rank, label, score, predicted (above the tuned threshold / the argmax).
Images are decoded by ``--num-workers`` DataLoader workers and predicted on ``--device``
(``--devices N``: one process per device); on a CPU each process runs the forward pass in
channels-last layout with (usable CPUs / processes - workers) intra-op threads, so decoding and
compute do not oversubscribe the cores. Results are written chunk by chunk to
``<out>.parts/`` first, so a killed run, started again with the same command, resumes.
``--write-db`` stores one row per (object_id, model_id) in the `predictions` table of
``<data-dir>/vision.sqlite`` (met_vision's own database; the harvester's ``met.sqlite`` is
never written; see :mod:`met_vision.inference.store`).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from met_vision.inference import runner
from met_vision.inference.inputs import InputError, expand_images, parse_object_ids
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import Predictor, resolve_device
from met_vision.inference.store import PREDICTIONS_DDL, vision_db_path, write_predictions

PROG = "met_vision.predict"
__all__ = ["COLUMNS", "PREDICTIONS_DDL", "main", "top_k_table"]

COLUMNS = (
    "object_id",
    "image",
    "model_id",
    "label_manifest_hash",
    "rank",
    "label",
    "score",
    "predicted",
)


def top_k_table(
    loaded: Predictor,
    probs: np.ndarray,
    object_ids: Sequence[int | None],
    images: Sequence[str],
    k: int,
) -> pd.DataFrame:
    """Long table of the top ``k`` labels of every row of ``probs``."""
    k = max(1, min(k, len(loaded.names)))
    chosen = loaded.decisions(probs)
    rows = []
    for row, (oid, image) in enumerate(zip(object_ids, images, strict=True)):
        order = np.argsort(-probs[row])[:k]
        for rank, cls in enumerate(order, start=1):
            rows.append(
                (
                    oid,
                    image,
                    loaded.model_id,
                    loaded.manifest_hash,
                    rank,
                    loaded.names[int(cls)],
                    float(probs[row, cls]),
                    bool(chosen[row, cls]),
                )
            )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["object_id"] = frame["object_id"].astype("Int64")
    return frame


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog=PROG, description="Top-k predictions of a trained model.")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", choices=("train", "val", "test", "all"), help="default: all")
    source.add_argument("--object-ids", help="comma-separated object ids")
    source.add_argument("--images", nargs="+", help="image files or folders instead of the mirror")
    parser.add_argument("--out", type=Path, help="preds.parquet or preds.csv")
    parser.add_argument(
        "--write-db", action="store_true", help="upsert into <data-dir>/vision.sqlite"
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    add_inference_options(parser, multi_device=True)
    return parser


def _inputs(args: argparse.Namespace, predictor: Predictor) -> tuple[list[int | None], list[str]]:
    if args.images:
        paths = [str(p) for p in expand_images(args.images)]
        return [None] * len(paths), paths
    from met_vision.inference.mirror import mirror_images

    wanted = parse_object_ids(args.object_ids) if args.object_ids else None
    frame = mirror_images(predictor, args.data_dir, split=args.split, object_ids=wanted)
    return [int(i) for i in frame["object_id"]], [str(p) for p in frame["path"]]


def _parts_dir(args: argparse.Namespace, model_id: str) -> Path:
    if args.out is not None:
        return args.out.with_name(args.out.name + ".parts")
    return Path(args.data_dir) / "vision-parts" / model_id


def _write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)


def run(args: argparse.Namespace) -> tuple[int, str, int, list[str], int]:
    """Predict as the options say; returns (images predicted, model id, rows written to the
    database, per-image errors, chunks reused from a killed run)."""
    one = max(1, args.devices) == 1
    resolve_device(args.device)  # one clear error before any work
    predictor = Predictor.from_checkpoint(args.ckpt, args.device if one else "cpu")
    ids, paths = _inputs(args, predictor)
    spec = runner.RunSpec(
        ckpt=str(args.ckpt),
        device=args.device,
        devices=max(1, args.devices),
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        chunk_size=max(1, args.chunk_size),
    )
    parts = _parts_dir(args, predictor.model_id)
    ok, probs, errors, reused = runner.run(
        spec, predictor.model_id, paths, parts, predictor if one else None
    )
    keep = np.flatnonzero(ok)
    table = top_k_table(
        predictor, probs, [ids[i] for i in keep], [paths[i] for i in keep], args.top_k
    )
    if args.out is not None:
        _write_table(table, args.out)
    written = 0
    if args.write_db:
        written = write_predictions(vision_db_path(args.data_dir), predictor, table)
    shutil.rmtree(parts, ignore_errors=True)
    return len(keep), predictor.model_id, written, errors, reused


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.write_db:
        parser.error("give --out FILE and/or --write-db")
    if args.images and args.write_db:
        parser.error("--write-db stores predictions of mirror objects; it cannot take --images")
    try:
        count, model_id, written, errors, reused = run(args)
    except (InputError, FileNotFoundError, ValueError, sqlite3.Error) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for error in errors:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    where = f" -> {args.out}" if args.out else ""
    db = f"; {written} rows in {vision_db_path(args.data_dir)}" if args.write_db else ""
    resumed = f" ({reused} chunks reused from an interrupted run)" if reused else ""
    print(f"{count} images predicted by {model_id}{where}{db}{resumed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
