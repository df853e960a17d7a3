"""`python -m met_vision.predict`: batch inference over the mirror or over image files.

    python -m met_vision.predict --ckpt best.ckpt --data-dir data --split test --out preds.parquet
    python -m met_vision.predict --ckpt best.ckpt --data-dir data --object-ids 1,2 --write-db
    python -m met_vision.predict --ckpt best.ckpt --images a.jpg b.jpg --out preds.csv --top-k 3

The output table has one row per image and rank: object_id (empty for files), image, model_id,
label_manifest_hash, rank, label, score, predicted (above the tuned threshold / the argmax).
``--write-db`` stores one row per (object_id, model_id) in the `predictions` table of the
mirror's ``met.sqlite`` (created with CREATE TABLE IF NOT EXISTS; see :data:`PREDICTIONS_DDL`).
No harvested table is ever written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from met_vision.inference.predictor import (
    InputError,
    LoadedModel,
    decisions,
    load_model,
    predict_paths,
)

PROG = "met_vision.predict"

PREDICTIONS_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    object_id            INTEGER NOT NULL,
    model_id             TEXT NOT NULL,     -- <backbone>-<sha256 of the checkpoint, 12 hex>
    label_manifest_hash  TEXT NOT NULL,     -- LabelSpace.definition_hash of the model's labels
    task                 TEXT NOT NULL,     -- multiclass | multilabel
    top_k                TEXT NOT NULL,     -- JSON [{"label": ..., "score": ...}, ...], best first
    predicted            TEXT NOT NULL,     -- JSON [label, ...]: argmax / above the threshold
    checkpoint           TEXT NOT NULL,     -- path of the checkpoint file when predicted
    predicted_at         TEXT NOT NULL,     -- ISO-8601 UTC
    PRIMARY KEY (object_id, model_id)
)
"""

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
    loaded: LoadedModel,
    probs: np.ndarray,
    object_ids: Sequence[int | None],
    images: Sequence[str],
    k: int,
) -> pd.DataFrame:
    """Long table of the top ``k`` labels of every row of ``probs``."""
    k = max(1, min(k, len(loaded.names)))
    chosen = decisions(loaded, probs)
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


def write_predictions_db(data_dir: str | Path, loaded: LoadedModel, table: pd.DataFrame) -> int:
    """Upsert one row per (object_id, model_id) into ``predictions``; returns rows written.

    Only the ``predictions`` table is created or written; harvested tables are not touched.
    """
    path = Path(data_dir) / "met.sqlite"
    if not path.is_file():
        raise InputError(f"no mirror database at {path}")
    rows = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    for oid, part in table.dropna(subset=["object_id"]).groupby("object_id", sort=True):
        part = part.sort_values("rank")
        top = [
            {"label": lab, "score": round(float(s), 6)}
            for lab, s in zip(part["label"], part["score"], strict=True)
        ]
        predicted = [lab for lab, p in zip(part["label"], part["predicted"], strict=True) if p]
        rows.append(
            (
                int(oid),  # type: ignore[call-overload]
                loaded.model_id,
                loaded.manifest_hash,
                loaded.task_type,
                json.dumps(top),
                json.dumps(predicted),
                str(loaded.ckpt_path),
                now,
            )
        )
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            conn.execute(PREDICTIONS_DDL)
            conn.executemany(
                "INSERT INTO predictions(object_id, model_id, label_manifest_hash, task, top_k, "
                "predicted, checkpoint, predicted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(object_id, model_id) DO UPDATE SET "
                "label_manifest_hash=excluded.label_manifest_hash, task=excluded.task, "
                "top_k=excluded.top_k, predicted=excluded.predicted, "
                "checkpoint=excluded.checkpoint, predicted_at=excluded.predicted_at",
                rows,
            )
    finally:
        conn.close()
    return len(rows)


def mirror_inputs(
    loaded: LoadedModel, data_dir: str, split: str | None, object_ids: Sequence[int] | None
) -> tuple[list[int | None], list[str]]:
    """(object ids, image paths) of a split / ids / every object of the mirror with an image.

    Labelled objects are read from the prepared cache the model was trained on (when there is
    one); objects outside the label space (e.g. without tags) from the raw image store.
    """
    from met_vision.data.mirror import load_records_as_trained
    from met_vision.inference.predictor import mirror_frame

    labelled = mirror_frame(loaded, data_dir)
    records = load_records_as_trained(data_dir, loaded.datamodule_hparams)
    records = records[records["has_image"]]
    cached = dict(zip(labelled["object_id"].astype(int), labelled["path"], strict=True))
    frame = pd.DataFrame(
        {
            "object_id": records["object_id"].astype(int),
            "path": [
                cached.get(int(oid), raw)
                for oid, raw in zip(records["object_id"], records["image_path"], strict=True)
            ],
            "split": records["split"],
        }
    )
    if object_ids is not None:
        known = set(int(i) for i in frame["object_id"])
        unknown = [i for i in object_ids if i not in known]
        if unknown:
            raise InputError(f"object ids {unknown[:10]} have no stored image in {data_dir}")
        frame = frame[frame["object_id"].isin(object_ids)]
    elif split not in (None, "all"):
        frame = frame[frame["split"] == split]
    return [int(i) for i in frame["object_id"]], [str(p) for p in frame["path"]]


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog=PROG, description="Top-k predictions of a trained model.")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", choices=("train", "val", "test", "all"), help="default: all")
    source.add_argument("--object-ids", help="comma-separated object ids")
    source.add_argument("--images", nargs="+", help="image files instead of the mirror")
    parser.add_argument("--out", type=Path, help="preds.parquet or preds.csv")
    parser.add_argument("--write-db", action="store_true", help="upsert into the predictions table")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.write_db:
        parser.error("give --out FILE and/or --write-db")
    if args.images and args.write_db:
        parser.error("--write-db stores predictions of mirror objects; it cannot take --images")
    try:
        loaded = load_model(args.ckpt)
        if args.images:
            missing = [p for p in args.images if not Path(p).is_file()]
            if missing:
                raise InputError(f"image file(s) not found: {', '.join(missing[:5])}")
            ids: list[int | None] = [None] * len(args.images)
            paths = list(args.images)
        else:
            wanted = None
            if args.object_ids:
                try:
                    wanted = [int(p) for p in args.object_ids.split(",") if p.strip()]
                except ValueError:
                    raise InputError(
                        f"--object-ids must be integers, got {args.object_ids!r}"
                    ) from None
            ids, paths = mirror_inputs(loaded, args.data_dir, args.split, wanted)
        ok, probs, errors = predict_paths(loaded, paths, args.batch_size)
        keep = np.flatnonzero(ok)
        table = top_k_table(
            loaded, probs[keep], [ids[i] for i in keep], [paths[i] for i in keep], args.top_k
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            if args.out.suffix == ".csv":
                table.to_csv(args.out, index=False)
            else:
                table.to_parquet(args.out, index=False)
        written = write_predictions_db(args.data_dir, loaded, table) if args.write_db else 0
    except (InputError, FileNotFoundError, ValueError, sqlite3.Error) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for error in errors:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    where = f" -> {args.out}" if args.out else ""
    db = f"; {written} rows in predictions" if args.write_db else ""
    print(f"{len(keep)} images predicted by {loaded.model_id}{where}{db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
