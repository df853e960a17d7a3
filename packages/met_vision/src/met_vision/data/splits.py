"""Leak-free, stable train/val/test splits.

An object's split is a pure function of (salt, its key): the key is the object id, or the value of
a group key (the artist, the accession-number prefix) so that a whole group lands on one side.
Adding objects to the mirror never moves an existing object to another split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

SPLITS: tuple[str, str, str] = ("train", "val", "test")
GROUP_KEYS: tuple[str, ...] = ("artist", "accession_prefix")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1."""
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions!r} (sum {sum(fractions)})")
    train, val, test = (float(f) for f in fractions)
    return train, val, test


def hash_unit(key: str, salt: str) -> float:
    """Map `key` to a number in [0, 1) with a salted SHA-256 (stable across runs and machines)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(
    key: str | int, salt: str = "met", fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> str:
    """The split ('train', 'val' or 'test') of one object id or group key."""
    train, val, _ = check_fractions(fractions)
    unit = hash_unit(str(key), salt)
    if unit < train:
        return "train"
    if unit < train + val:
        return "val"
    return "test"


def group_value(group_key: str | None, record: dict[str, Any]) -> str:
    """The key an object is split by: its group (when it has one) or its own id.

    Args:
        group_key: None (split by object), 'artist' (artist_display_name, case-folded) or
            'accession_prefix' (accession_number before the first '.').
        record: a mapping with object_id, artist_display_name and accession_number.
    """
    object_key = f"object:{int(record['object_id'])}"
    if group_key is None:
        return object_key
    if group_key == "artist":
        artist = str(record.get("artist_display_name") or "").strip().casefold()
        return f"artist:{artist}" if artist else object_key
    if group_key == "accession_prefix":
        accession = str(record.get("accession_number") or "").strip()
        prefix = accession.split(".", 1)[0].strip()
        return f"accession:{prefix}" if prefix else object_key
    raise ValueError(f"unknown split group key {group_key!r}; use one of {', '.join(GROUP_KEYS)}")


def assign_splits(
    records: pd.DataFrame,
    *,
    salt: str = "met",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    group_key: str | None = None,
) -> pd.Series:
    """The split of every row of `records` (needs object_id; artist/accession columns for groups)."""
    check_fractions(fractions)
    if group_key is not None and group_key not in GROUP_KEYS:
        raise ValueError(
            f"unknown split group key {group_key!r}; use one of {', '.join(GROUP_KEYS)}"
        )
    columns = [c for c in ("object_id", "artist_display_name", "accession_number") if c in records]
    keys = [group_value(group_key, row) for row in records[columns].to_dict("records")]
    cache: dict[str, str] = {}
    splits = []
    for key in keys:
        if key not in cache:
            cache[key] = split_of(key, salt, fractions)
        splits.append(cache[key])
    return pd.Series(splits, index=records.index, name="split", dtype="object")


def split_report(frame: pd.DataFrame, names: Sequence[str], task: str) -> dict[str, Any]:
    """Object and class counts per split.

    Args:
        frame: rows with `split` and `target` (class index for multiclass, list of indices
            for multilabel).
        names: the label names, indexed by target.
        task: 'multiclass' or 'multilabel'.
    """
    report: dict[str, Any] = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        counts = dict.fromkeys(names, 0)
        for target in part["target"]:
            indices = [target] if task == "multiclass" else list(target)
            for index in indices:
                counts[names[int(index)]] += 1
        report[split] = {"objects": len(part), "class_counts": counts}
    return report
