"""Where the model looks, per group: Grad-CAM border-against-centre shares in the bias audit."""

from __future__ import annotations

from typing import Any

import numpy as np

from met_vision.fairness import bias
from met_vision.fairness.audit_data import AuditData, AuditOptions
from met_vision.inference.predictor import LoadedModel


def saliency(
    loaded: LoadedModel,
    data: AuditData,
    analyses: list[tuple[str, np.ndarray, list[str]]],
    options: AuditOptions,
) -> dict[str, Any]:
    """Grad-CAM border/centre shares of the top-1 label on a sample of images, per group."""
    from met_vision.explain.cam import compute_cams, resolve_target_layer
    from met_vision.inference.predictor import iter_batches

    rng = np.random.default_rng(options.seed)
    n = len(data.frame)
    chosen = np.sort(rng.choice(n, size=min(n, options.cam_samples), replace=False))
    layer = resolve_target_layer(
        loaded.network, options.target_layer, input_size=loaded.data_config.input_size
    )
    shares = np.full(n, np.nan)
    ratios = np.full(n, np.nan)
    paths = [str(data.frame["path"][i]) for i in chosen]
    for positions, batch, _ in iter_batches(paths, loaded, 32):
        if not positions:
            continue
        rows = chosen[positions]
        top = data.probs[rows].argmax(axis=1)
        cams = compute_cams(
            loaded.network, batch, top.tolist(), method=options.cam_method, target=layer
        )
        stats = bias.saliency_border_stats(cams, options.border)
        shares[rows] = stats["border_share"]
        ratios[rows] = stats["border_to_centre"]
    area = float(bias.border_mask(64, 64, options.border).mean())
    out: dict[str, Any] = {
        "method": options.cam_method,
        "target_layer": layer.name,
        "images": len(chosen),
        "border_fraction": options.border,
        "border_area_share": area,
        "overall": {
            "border_share": float(np.nanmean(shares)),
            "border_to_centre": float(np.nanmean(ratios)),
        },
        "by_analysis": {},
    }
    for name, membership, names in analyses:
        per_group = {}
        for j, gname in enumerate(names):
            mask = membership[:, j] & np.isfinite(shares)
            per_group[gname] = {
                "images": int(mask.sum()),
                "border_share": float(shares[mask].mean()) if mask.any() else None,
                "border_to_centre": float(ratios[mask].mean()) if mask.any() else None,
            }
        out["by_analysis"][name] = per_group
    out["_per_image"] = shares
    return out
