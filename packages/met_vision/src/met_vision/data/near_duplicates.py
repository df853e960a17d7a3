"""Near-duplicate images by a perceptual hash, for splits that keep re-photographed objects together.

The hash is the 64-bit DCT perceptual hash (pHash, Zauner 2010): the image in grey, resized to
32x32, its 8x8 lowest-frequency DCT coefficients, one bit per coefficient (above the median or
not). Two copies of one photograph, resized, re-scanned or re-encoded, differ in a few bits;
unrelated images in about 32. Pairs within `DEFAULT_MAX_DISTANCE` bits are treated as one object
for the split (`met_vision.prepare --near-duplicates [BITS]`). Very plain pictures (a smooth
background and little else) can hash alike: a false link only merges two groups, it never leaks.

Candidates are found without comparing every pair: cut the 64 bits into ``d + 1`` bands; two
hashes within ``d`` bits agree exactly on at least one band (pigeonhole), so only hashes sharing a
band are compared.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

HASH_NAME = "phash-64"
# 0 bits: the same picture; re-encoded or resized copies stay within a few bits; unrelated
# pictures sit near 32. 6 of 64 bits catches re-encodes and keeps false links rare.
DEFAULT_MAX_DISTANCE = 6


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT32 = _dct_matrix(32)


def phash(path: Path | str) -> int:
    """The 64-bit perceptual hash of an image file (a JPEG is DCT-downscaled on decode)."""
    from met_vision.data.images import open_rgb

    grey = open_rgb(path, min_size=64).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8].flatten()
    median = float(np.median(low[1:]))  # the DC term says only how bright the picture is
    return int(sum(1 << i for i, value in enumerate(low) if value > median))


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of ``max_distance + 1`` bands covering 64 bits."""
    count = max_distance + 1
    edges = [round(i * 64 / count) for i in range(count + 1)]
    return [(edges[i], edges[i + 1] - edges[i]) for i in range(count)]


def near_duplicate_pairs(
    hashes: Mapping[int, int], max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[tuple[int, int, int]]:
    """Every pair of keys whose hashes differ in at most `max_distance` bits.

    Args:
        hashes: key (an object id) -> 64-bit hash.
        max_distance: the largest Hamming distance that counts as a near-duplicate (0..31).

    Returns:
        ``(key_a, key_b, distance)`` with ``key_a < key_b``, sorted.
    """
    if not 0 <= max_distance < 32:
        raise ValueError(f"the near-duplicate distance must be in 0..31 bits, got {max_distance}")
    found: set[tuple[int, int, int]] = set()
    for shift, width in _bands(max_distance):
        mask = (1 << width) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for key, value in hashes.items():
            buckets[(value >> shift) & mask].append(key)
        for keys in buckets.values():
            ordered = sorted(keys)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1 :]:
                    distance = hamming(hashes[a], hashes[b])
                    if distance <= max_distance:
                        found.add((a, b, distance))
    return sorted(found)


def hashes_of(files: Iterable[tuple[int, Path]]) -> dict[int, int]:
    """key -> pHash of its file; unreadable files are left out."""
    out: dict[int, int] = {}
    for key, path in files:
        try:
            out[key] = phash(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    return out
