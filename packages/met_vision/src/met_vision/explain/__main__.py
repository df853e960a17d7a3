"""`python -m met_vision.explain`: Grad-CAM overlays for a trained model, optionally scored.

    python -m met_vision.explain --ckpt runs/x/checkpoints/best.ckpt --data-dir data \\
        --object-ids 1,2 --method gradcam --target predicted --out explain/
    python -m met_vision.explain --ckpt best.ckpt --images a.jpg b.jpg --target top-k --k 3 --out x/
    python -m met_vision.explain --ckpt best.ckpt --data-dir data --split test --target truth \\
        --evaluate data/truth.json --out x/

Writes one overlay PNG per image and label (``overlays/``), ``grid.png`` and ``index.html``
(title, label and score of every cell) and ``cams.json``. ``--evaluate truth.json`` scores each
CAM whose label has a ground-truth box (the synthetic collection's motif boxes): the pointing
game (is the CAM's maximum inside the box, give or take the tolerance?) and the share of CAM
energy inside the box, per label and overall, beside two baselines that look at no image: a
centre prior (always point at the centre) and a random map (the chance that a uniformly random
maximum falls in the grown box), written to ``evaluation.json``. The tolerance follows Zhang et
al. 2018 (15 px at 224 px), scaled with the input: 6 px at 96 px. See `met_vision.explain.pointing`.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from met_vision.explain import pointing
from met_vision.explain.cam import METHODS, compute_cams, resolve_target_layer
from met_vision.explain.cam import overlay as blend
from met_vision.inference.inputs import parse_object_ids
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import (
    InputError,
    LoadedModel,
    denormalize,
    forward_probs,
    iter_batches,
    load_model,
)

PROG = "met_vision.explain"
GRID_MAX_CELLS = 60
Box = tuple[float, float, float, float]


@dataclass
class Item:
    """One image to explain."""

    key: str  # object id or file stem
    path: str
    title: str
    object_id: int | None = None


# --- inputs -------------------------------------------------------------------------------------


def mirror_items(
    loaded: LoadedModel, data_dir: str, object_ids: Sequence[int] | None, split: str | None
) -> list[Item]:
    """Items for object ids (or a whole split) of the mirror, with their titles."""
    from met_vision.data.mirror import connect_ro
    from met_vision.inference.mirror import mirror_frame

    frame = mirror_frame(loaded, data_dir)
    if object_ids is not None:
        known = set(frame["object_id"].astype(int))
        unknown = [i for i in object_ids if i not in known]
        if unknown:
            raise InputError(
                f"object ids {unknown[:10]} are not labelled objects with an image in {data_dir}"
            )
        order = {oid: i for i, oid in enumerate(object_ids)}
        frame = frame[frame["object_id"].isin(order)]
        frame = frame.assign(_order=frame["object_id"].map(order)).sort_values("_order")
    elif split is not None:
        frame = frame[frame["split"] == split] if split != "all" else frame
    conn = connect_ro(data_dir)
    try:
        titles = dict(conn.execute("SELECT object_id, COALESCE(title, '') FROM objects").fetchall())
    finally:
        conn.close()
    return [
        Item(str(oid), str(path), str(titles.get(int(oid), "")) or f"object {oid}", int(oid))
        for oid, path in zip(frame["object_id"], frame["path"], strict=True)
    ]


def file_items(paths: Sequence[str]) -> list[Item]:
    """Items for image files (missing files are an error)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"image file(s) not found: {', '.join(missing[:5])}")
    items = []
    for p in paths:
        stem = Path(p).stem
        items.append(Item(stem, str(p), Path(p).name, int(stem) if stem.isdigit() else None))
    return items


def choose_targets(
    loaded: LoadedModel, probs: np.ndarray, target: str, k: int, truth_labels: list[str] | None
) -> list[int]:
    """Label indices to explain for one image."""
    names = loaded.names
    order = [int(i) for i in np.argsort(-probs)]
    if target == "top-k":
        return order[:k]
    if target == "predicted":
        if loaded.task_type == "multiclass":
            return order[:1]
        chosen = [i for i in order if probs[i] >= loaded.thresholds()[i]]
        return chosen or order[:1]
    if target == "truth":
        return [names.index(t) for t in truth_labels or [] if t in names]
    return [names.index(target)]


# --- truth boxes --------------------------------------------------------------------------------


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


# --- outputs ------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "label"


def write_grid(cells: list[dict[str, Any]], path: Path, title: str) -> None:
    """A PNG grid of overlays, each with the image title, label and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = cells[:GRID_MAX_CELLS]
    cols = min(6, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, cell in zip(axes.ravel(), shown, strict=False):
        ax.imshow(np.asarray(Image.open(path.parent / cell["overlay"])))
        ax.set_title(f"{cell['title'][:22]}\n{cell['label']} {cell['score']:.2f}", fontsize=7)
    extra = f" (first {GRID_MAX_CELLS} of {len(cells)})" if len(cells) > len(shown) else ""
    fig.suptitle(title + extra, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.7 * rows + 0.4)))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_html(cells: list[dict[str, Any]], path: Path, title: str) -> None:
    """An HTML page listing every overlay with its title, label and score."""
    rows = "\n".join(
        "<figure><img src='{src}' width='192'><figcaption><b>{t}</b><br>{label} — {score:.3f}"
        "{ev}</figcaption></figure>".format(
            src=html.escape(c["overlay"]),
            t=html.escape(c["title"]),
            label=html.escape(c["label"]),
            score=c["score"],
            ev="" if c.get("hit") is None else f"<br>pointing {'hit' if c['hit'] else 'miss'}",
        )
        for c in cells
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}figure{display:inline-block;margin:6px;"
        "font-size:12px;width:192px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{rows}\n</body></html>\n"
    )
    path.write_text(page)


# --- the command --------------------------------------------------------------------------------


def _targets(
    loaded: LoadedModel,
    probs: Any,
    batch_items: list[Item],
    target: str,
    k: int,
    truth: dict[str, dict[str, Any]] | None,
) -> list[tuple[int, int]]:
    """(row in the batch, class) of every CAM to compute for a batch."""
    pairs: list[tuple[int, int]] = []
    for row, item in enumerate(batch_items):
        record = truth.get(item.key) if truth is not None else None
        labels = list(record.get("boxes", {})) if record else []
        for cls in choose_targets(loaded, probs[row], target, k, labels):
            pairs.append((row, cls))
    return pairs


def _point(
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


def explain(
    loaded: LoadedModel,
    items: list[Item],
    out: Path,
    *,
    method: str = "gradcam",
    target: str = "predicted",
    k: int = 3,
    truth: dict[str, dict[str, Any]] | None = None,
    target_layer: str | None = None,
    batch_size: int = 16,
    tolerance: int | None = None,
) -> dict[str, Any]:
    """Compute CAMs for ``items``, write overlays, grid, HTML and (with ``truth``) scores.

    Returns:
        ``{"cells": [...], "evaluation": {...} | None, "errors": [...]}``.
    """
    if target not in ("predicted", "top-k", "truth") and target not in loaded.names:
        raise InputError(
            f"--target {target!r} is not predicted, top-k, truth or a label of the model"
        )
    if target == "truth" and truth is None:
        raise InputError("--target truth needs --evaluate truth.json")
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    config = loaded.data_config
    layer = resolve_target_layer(loaded.network, target_layer, input_size=config.input_size)
    if tolerance is None:
        tolerance = pointing.scaled_tolerance(config.input_size)
    cells: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    skipped = {"no_box": 0, "cropped_out": 0, "no_truth": 0}
    errors: list[str] = []
    for positions, batch, errs in iter_batches([it.path for it in items], loaded, batch_size):
        errors.extend(errs)
        if not positions:
            continue
        probs = forward_probs(loaded, batch)
        pairs = _targets(loaded, probs, [items[p] for p in positions], target, k, truth)
        if not pairs:
            continue
        cams = compute_cams(
            loaded.network,
            batch[[r for r, _ in pairs]],
            [c for _, c in pairs],
            method=method,
            target=layer,
            batch_size=batch_size,
        )
        pictures = denormalize(batch, config)
        for (row, cls), cam in zip(pairs, cams, strict=True):
            item = items[positions[row]]
            label = loaded.names[cls]
            name = f"overlays/{slug(item.key)}_{slug(label)}.png"
            Image.fromarray(blend(pictures[row], cam)).save(out / name)
            cell: dict[str, Any] = {
                "key": item.key,
                "object_id": item.object_id,
                "image": item.path,
                "title": item.title,
                "label": label,
                "score": float(probs[row, cls]),
                "overlay": name,
            }
            if truth is not None:
                scores = _point(cam, item, label, truth, config, tolerance, skipped)
                if scores is not None:
                    mapped, row_scores = scores
                    cell.update(
                        hit=row_scores["hit"], energy_in_box=row_scores["energy"], box=list(mapped)
                    )
                    rows.append({"label": label, **row_scores})
            cells.append(cell)
    title = f"{method} · {loaded.model_id} · target {target}"
    write_grid(cells, out / "grid.png", title) if cells else None
    write_html(cells, out / "index.html", title)
    evaluation = None
    if truth is not None:
        evaluation = {
            "method": method,
            "target": target,
            "target_layer": layer.name,
            "model_id": loaded.model_id,
            "tolerance_px": tolerance,
            "tolerance_rule": pointing.TOLERANCE_RULE,
            **summarize(rows),
            "skipped": skipped,
        }
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    summary = {
        "model_id": loaded.model_id,
        "method": method,
        "target": target,
        "target_layer": layer.name,
        "cells": cells,
        "errors": errors,
    }
    (out / "cams.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"cells": cells, "evaluation": evaluation, "errors": errors}


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Grad-CAM explanations of a trained model."
    )
    parser.add_argument("--ckpt", required=True, help="a ClassificationTask checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--object-ids", help="comma-separated object ids of the mirror")
    source.add_argument("--images", nargs="+", help="image files")
    source.add_argument(
        "--split", choices=("train", "val", "test", "all"), help="a split of the mirror"
    )
    parser.add_argument(
        "--data-dir", default="data", help="the mirror (for --object-ids / --split)"
    )
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    parser.add_argument(
        "--target", default="predicted", help="predicted | top-k | truth | <label name>"
    )
    parser.add_argument("--k", type=int, default=3, help="labels per image with --target top-k")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--evaluate", help="truth.json with motif boxes: score the CAMs")
    parser.add_argument(
        "--target-layer",
        help="module name to explain (default: the deepest layer at least 6x6 at the input size)",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=None,
        help="pointing-game tolerance in pixels (default: 15 px at 224 px, scaled with the input)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="explain at most this many images")
    add_inference_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        loaded = load_model(args.ckpt, args.device, num_workers=args.num_workers)
        if args.images:
            items = file_items(args.images)
        else:
            ids = parse_object_ids(args.object_ids) if args.object_ids else None
            items = mirror_items(loaded, args.data_dir, ids, args.split)
        if args.limit is not None:
            items = items[: args.limit]
        truth = load_truth(args.evaluate) if args.evaluate else None
        result = explain(
            loaded,
            items,
            args.out,
            method=args.method,
            target=args.target,
            k=args.k,
            truth=truth,
            target_layer=args.target_layer,
            batch_size=args.batch_size,
            tolerance=args.tolerance,
        )
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result['cells'])} overlays in {args.out}")
    if result["evaluation"] is not None:
        overall = result["evaluation"]["overall"]
        print(
            f"pointing {overall['pointing']} (centre baseline "
            f"{overall['pointing_centre_baseline']}, random map "
            f"{overall['pointing_random_baseline']}), energy in box "
            f"{overall['energy_in_box']} over {overall['n']} boxes"
        )
    for error in result["errors"]:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
