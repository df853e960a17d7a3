"""The pointing game (Zhang et al. 2018) with its tolerance and two baselines that see no image.

A saliency map *hits* when its maximum lies within ``tolerance`` pixels of the object's box.
Zhang et al. ("Top-down Neural Attention by Excitation Backprop", IJCV 2018) use 15 px at a
224 px input; here the tolerance scales with the input (``round(15 * size / 224)``: 6 px at
96 px, 15 px at 224 px), so a score means the same at every size.

A pointing score alone cannot tell localisation from centre bias, so every evaluation also
reports:

- the **centre prior**: a map whose maximum is always the image centre;
- the **random map**: a map whose maximum falls on a uniformly random pixel; its expected hit
  rate is the share of pixels within the tolerance of the box (computed exactly, not sampled).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from met_vision.fairness.bias import box_mask, energy_in_box, pointing_hit

ZHANG_TOLERANCE_PX = 15
ZHANG_INPUT_PX = 224
TOLERANCE_RULE = "15 px at 224 px (Zhang et al. 2018), scaled with the input size"

Box = tuple[float, float, float, float]


def scaled_tolerance(input_size: int | tuple[int, int]) -> int:
    """The pointing-game tolerance in pixels for a square-ish input of ``input_size``."""
    side = input_size if isinstance(input_size, int) else min(input_size)
    return max(1, round(ZHANG_TOLERANCE_PX * side / ZHANG_INPUT_PX))


def _grown_box(height: int, width: int, box: Box, tolerance: int) -> NDArray[np.bool_]:
    """Pixels within ``tolerance`` (Chebyshev distance) of the box: where a hit may point."""
    mask = box_mask(height, width, box)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    grown = np.zeros_like(mask)
    r0, r1 = max(0, rows[0] - tolerance), min(height, rows[-1] + tolerance + 1)
    c0, c1 = max(0, cols[0] - tolerance), min(width, cols[-1] + tolerance + 1)
    grown[r0:r1, c0:c1] = True
    return grown


def centre_hit(height: int, width: int, box: Box, tolerance: int) -> bool:
    """Does the centre prior hit the box?"""
    return bool(_grown_box(height, width, box, tolerance)[height // 2, width // 2])


def random_hit_rate(height: int, width: int, box: Box, tolerance: int) -> float:
    """Expected hit rate of a map whose maximum is a uniformly random pixel."""
    return float(_grown_box(height, width, box, tolerance).mean())


def score(cam: NDArray[np.floating], box: Box, tolerance: int) -> dict[str, float | bool]:
    """The model's hit and energy in the box, and the two baselines, for one map and box."""
    height, width = cam.shape
    return {
        "hit": pointing_hit(cam, box, tolerance),
        "energy": energy_in_box(cam, box),
        "centre_hit": centre_hit(height, width, box, tolerance),
        "random_hit": random_hit_rate(height, width, box, tolerance),
    }
