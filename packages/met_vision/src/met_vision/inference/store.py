"""Where predictions live: ``<data-dir>/vision.sqlite``, a database of met_vision's own.

The harvester's ``met.sqlite`` belongs to the harvester (its daemon writes it, its migrations
define it), so met_vision never writes there. ``vision.sqlite`` sits beside it and is joined to
it with ``ATTACH`` (see docs/schema.md).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from met_vision.inference.predictor import Predictor

VISION_DB = "vision.sqlite"

PREDICTIONS_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    object_id            INTEGER NOT NULL,  -- objects.object_id of the mirror's met.sqlite
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

UPSERT = (
    "INSERT INTO predictions(object_id, model_id, label_manifest_hash, task, top_k, "
    "predicted, checkpoint, predicted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(object_id, model_id) DO UPDATE SET "
    "label_manifest_hash=excluded.label_manifest_hash, task=excluded.task, "
    "top_k=excluded.top_k, predicted=excluded.predicted, "
    "checkpoint=excluded.checkpoint, predicted_at=excluded.predicted_at"
)


def vision_db_path(data_dir: str | Path) -> Path:
    """``<data-dir>/vision.sqlite``."""
    return Path(data_dir) / VISION_DB


def write_predictions(db_path: str | Path, predictor: Predictor, table: pd.DataFrame) -> int:
    """Upsert one row per (object_id, model_id) of a long top-k ``table``; returns rows written."""
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
                predictor.model_id,
                predictor.manifest_hash,
                predictor.task_type,
                json.dumps(top),
                json.dumps(predicted),
                str(predictor.ckpt_path),
                now,
            )
        )
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        with conn:
            conn.execute(PREDICTIONS_DDL)
            conn.executemany(UPSERT, rows)
    finally:
        conn.close()
    return len(rows)
