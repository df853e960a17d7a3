"""Scoring CAMs against ground-truth boxes: the truth file, each box mapped into the model's
input crop, the pointing game per CAM and the summary beside the image-blind baselines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from met_vision.explain import pointing
from met_vision.explain.items import Item
from met_vision.explain.pointing import Box
from met_vision.inference.predictor import InputError


def load_truth(path: str | Path) -> dict[str, dict[str, Any]]:
    """Truth records keyed by object id string (make_mirror's truth.json, a list, or a dict)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"truth file {str(file)!r} does not exist")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"truth file {str(file)!r} is not JSON: {exc}") from None
    if isinstance(data, dict) and "objects" in data:
        data = data["objects"]
    if isinstance(data, list):
        data = {str(rec["object_id"]): rec for rec in data}
    if not isinstance(data, dict):
        raise InputError(f"truth file {str(file)!r} holds no per-object records")
    return {str(k): v for k, v in data.items()}


def crop_box(
    box: Sequence[float], width: int, height: int, size: int, crop_pct: float
) -> Box | None:
    """Map a box normalised to the full image into the evaluation crop (resize short side to
    ``size / crop_pct``, centre crop ``size``). None when less than half of it stays visible."""
    resize_to = int(np.floor(size / crop_pct))
    scale = resize_to / min(width, height)
    rw, rh = width * scale, height * scale
    left, top = (rw - size) / 2, (rh - size) / 2
    x0, y0, x1, y1 = (box[0] * rw - left, box[1] * rh - top, box[2] * rw - left, box[3] * rh - top)
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(size, x1), min(size, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    if (cx1 - cx0) * (cy1 - cy0) < 0.5 * (x1 - x0) * (y1 - y0):
        return None
    return (cx0 / size, cy0 / size, cx1 / size, cy1 / size)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pointing accuracy and mean energy-in-box, overall and per label, beside the baselines."""

    def mean(part: list[dict[str, Any]], key: str) -> float | None:
        return float(np.mean([r[key] for r in part])) if part else None

    def stats(part: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "n": len(part),
            "pointing": mean(part, "hit"),
            "energy_in_box": mean(part, "energy"),
            "pointing_centre_baseline": mean(part, "centre_hit"),
            "pointing_random_baseline": mean(part, "random_hit"),
        }

    labels = sorted({r["label"] for r in rows})
    return {
        "overall": stats(rows),
        "per_label": {label: stats([r for r in rows if r["label"] == label]) for label in labels},
    }


def point_in_box(
    cam: Any,
    item: Item,
    label: str,
    truth: dict[str, dict[str, Any]],
    config: Any,
    tolerance: int,
    skipped: dict[str, int],
) -> tuple[Box, dict[str, Any]] | None:
    """The label's motif box mapped into the model's input and the pointing-game scores of
    ``cam`` against it; None (counted in ``skipped``) without truth, box, or when the crop cuts
    the box off."""
    record = truth.get(item.key)
    box = (record or {}).get("boxes", {}).get(label)
    if record is None:
        skipped["no_truth"] += 1
        return None
    if box is None:
        skipped["no_box"] += 1
        return None
    with Image.open(item.path) as probe:
        width, height = probe.size
    mapped = crop_box(box, width, height, config.input_size, config.crop_pct)
    if mapped is None:
        skipped["cropped_out"] += 1
        return None
    return mapped, pointing.score(cam, mapped, tolerance)
