"""`explain`: CAMs of a model's labels for a list of images, their overlays and scores."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from met_vision.explain import pointing
from met_vision.explain.cam import TargetLayer, compute_cams, resolve_target_layer
from met_vision.explain.cam import overlay as blend
from met_vision.explain.evaluation import point_in_box, summarize
from met_vision.explain.gallery import slug, write_grid, write_html
from met_vision.explain.items import Item
from met_vision.inference.predictor import (
    InputError,
    LoadedModel,
    denormalize,
    forward_probs,
    iter_batches,
)


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


@dataclass
class _Run:
    """What every batch of one `explain` call shares, and what the batches collect."""

    loaded: LoadedModel
    out: Path
    method: str
    target: str
    k: int
    truth: dict[str, dict[str, Any]] | None
    layer: TargetLayer
    batch_size: int
    tolerance: int
    cells: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # pointing scores, one per box
    skipped: dict[str, int] = field(
        default_factory=lambda: {"no_box": 0, "cropped_out": 0, "no_truth": 0}
    )
    errors: list[str] = field(default_factory=list)


def _check_target(loaded: LoadedModel, target: str, truth: dict[str, Any] | None) -> None:
    if target not in ("predicted", "top-k", "truth") and target not in loaded.names:
        raise InputError(
            f"--target {target!r} is not predicted, top-k, truth or a label of the model"
        )
    if target == "truth" and truth is None:
        raise InputError("--target truth needs --evaluate truth.json")


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
    _check_target(loaded, target, truth)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    config = loaded.data_config
    layer = resolve_target_layer(loaded.network, target_layer, input_size=config.input_size)
    if tolerance is None:
        tolerance = pointing.scaled_tolerance(config.input_size)
    run = _Run(loaded, out, method, target, k, truth, layer, batch_size, tolerance)
    for positions, batch, errs in iter_batches([it.path for it in items], loaded, batch_size):
        run.errors.extend(errs)
        if positions:
            _explain_batch(run, [items[p] for p in positions], batch)
    return _write_results(run)


def _explain_batch(run: _Run, batch_items: list[Item], batch: torch.Tensor) -> None:
    """The overlays (and pointing scores) of one batch's chosen labels."""
    loaded = run.loaded
    probs = forward_probs(loaded, batch)
    pairs = _targets(loaded, probs, batch_items, run.target, run.k, run.truth)
    if not pairs:
        return
    cams = compute_cams(
        loaded.network,
        batch[[r for r, _ in pairs]],
        [c for _, c in pairs],
        method=run.method,
        target=run.layer,
        batch_size=run.batch_size,
    )
    pictures = denormalize(batch, loaded.data_config)
    for (row, cls), cam in zip(pairs, cams, strict=True):
        item = batch_items[row]
        label = loaded.names[cls]
        name = f"overlays/{slug(item.key)}_{slug(label)}.png"
        Image.fromarray(blend(pictures[row], cam)).save(run.out / name)
        cell: dict[str, Any] = {
            "key": item.key,
            "object_id": item.object_id,
            "image": item.path,
            "title": item.title,
            "label": label,
            "score": float(probs[row, cls]),
            "overlay": name,
        }
        if run.truth is not None:
            _score_cell(run, cell, cam, item, label, run.truth)
        run.cells.append(cell)


def _score_cell(
    run: _Run,
    cell: dict[str, Any],
    cam: Any,
    item: Item,
    label: str,
    truth: dict[str, dict[str, Any]],
) -> None:
    """Add the pointing-game scores of ``cam`` to its cell and to the run's rows."""
    config = run.loaded.data_config
    scores = point_in_box(cam, item, label, truth, config, run.tolerance, run.skipped)
    if scores is not None:
        mapped, row_scores = scores
        cell.update(hit=row_scores["hit"], energy_in_box=row_scores["energy"], box=list(mapped))
        run.rows.append({"label": label, **row_scores})


def _write_results(run: _Run) -> dict[str, Any]:
    """grid.png, index.html, cams.json and (with truth) evaluation.json of a finished run."""
    loaded, out, cells = run.loaded, run.out, run.cells
    title = f"{run.method} · {loaded.model_id} · target {run.target}"
    if cells:
        write_grid(cells, out / "grid.png", title)
    write_html(cells, out / "index.html", title)
    evaluation = None
    if run.truth is not None:
        evaluation = {
            "method": run.method,
            "target": run.target,
            "target_layer": run.layer.name,
            "model_id": loaded.model_id,
            "tolerance_px": run.tolerance,
            "tolerance_rule": pointing.TOLERANCE_RULE,
            **summarize(run.rows),
            "skipped": run.skipped,
        }
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    summary = {
        "model_id": loaded.model_id,
        "method": run.method,
        "target": run.target,
        "target_layer": run.layer.name,
        "cells": cells,
        "errors": run.errors,
    }
    (out / "cams.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"cells": cells, "evaluation": evaluation, "errors": run.errors}
