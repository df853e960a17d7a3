"""Leak-free, stable train/val/test splits.

An object's split is a pure function of (salt, the key of its group). Groups are the connected
components of a union-find over three kinds of links:

- objects that share an image (the same sha256: the Met reuses one photograph for several objects);
- optionally, near-duplicate images (a perceptual hash within a Hamming distance, see
  `met_vision.data.near_duplicates`), for objects photographed again;
- optionally, a group key: the artist, or the accession-number prefix (the accession lot).

A group's key is the smallest member key (``object:<id>`` for an object on its own), so an object
that shares nothing keeps the split of its own id, and adding objects to the mirror never moves an
existing object unless a new object links it to another group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
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


def accession_prefix(accession_number: str) -> str:
    """The accession lot of a Met accession number: the number without its last component.

    A Met accession number is ``<year>.<lot>.<item>`` (sometimes with sub-lots), so objects of one
    gift or purchase share everything but the last component. Real numbers from the API:
    ``"29.100.5"`` -> ``"29.100"`` (the H. O. Havemeyer Collection, 1929), ``"1975.1.1341"`` ->
    ``"1975.1"`` (the Robert Lehman Collection), ``"2011.604.1.6084"`` -> ``"2011.604.1"``,
    ``"14.40.448a, b"`` -> ``"14.40"``. A two-part number such as ``"12.75"`` or ``"1987.1022"``
    is a lot of its own (one object acquired alone), and a number without dots (``"CP54"``) is
    kept whole: both give the number itself.
    """
    number = accession_number.strip()
    parts = number.split(".")
    if len(parts) < 3:
        return number
    return ".".join(parts[:-1]).strip()


def group_value(group_key: str | None, record: dict[str, Any]) -> str:
    """The key an object is split by: its group (when it has one) or its own id.

    Args:
        group_key: None (split by object), 'artist' (artist_display_name, case-folded) or
            'accession_prefix' (the accession lot, see `accession_prefix`).
        record: a mapping with object_id, artist_display_name and accession_number.
    """
    object_key = f"object:{int(record['object_id'])}"
    if group_key is None:
        return object_key
    if group_key == "artist":
        artist = str(record.get("artist_display_name") or "").strip().casefold()
        return f"artist:{artist}" if artist else object_key
    if group_key == "accession_prefix":
        prefix = accession_prefix(str(record.get("accession_number") or ""))
        return f"accession:{prefix}" if prefix else object_key
    raise ValueError(f"unknown split group key {group_key!r}; use one of {', '.join(GROUP_KEYS)}")


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving, union by size)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        """The representative of i's set."""
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Merge the sets of a and b."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def _link_equal(uf: UnionFind, values: Iterable[Iterable[Hashable]]) -> None:
    """Union every two rows that share a value (each row holds zero or more values)."""
    first: dict[Hashable, int] = {}
    for row, row_values in enumerate(values):
        for value in row_values:
            if value is None or value == "":
                continue
            if value in first:
                uf.union(first[value], row)
            else:
                first[value] = row


def _image_values(records: pd.DataFrame) -> list[list[str]]:
    """Per row, every image sha256 it has: `image_sha256` and the list column `image_sha256s`."""
    rows: list[list[str]] = [[] for _ in range(len(records))]
    for column in ("image_sha256", "image_sha256s"):
        if column not in records:
            continue
        for row, cell in enumerate(records[column]):
            if isinstance(cell, str):
                rows[row].append(cell)
            elif isinstance(cell, list | tuple | set):
                rows[row].extend(str(sha) for sha in cell)
    return rows


def split_group_keys(
    records: pd.DataFrame,
    *,
    group_key: str | None = None,
    link_images: bool = True,
    extra_links: Iterable[tuple[int, int]] = (),
) -> list[str]:
    """The key of every row's split group (see the module docstring).

    Args:
        records: rows with object_id (and artist/accession columns for a group key,
            image_sha256 / image_sha256s for image links).
        group_key: None, 'artist' or 'accession_prefix'.
        link_images: objects sharing an image sha256 form one group.
        extra_links: (object_id, object_id) pairs to join as well (near-duplicate images).
    """
    if group_key is not None and group_key not in GROUP_KEYS:
        raise ValueError(
            f"unknown split group key {group_key!r}; use one of {', '.join(GROUP_KEYS)}"
        )
    columns = [c for c in ("object_id", "artist_display_name", "accession_number") if c in records]
    own = [group_value(group_key, row) for row in records[columns].to_dict("records")]
    uf = UnionFind(len(own))
    _link_equal(uf, ([key] for key in own))
    if link_images:
        _link_equal(uf, _image_values(records))
    row_of = {int(oid): row for row, oid in enumerate(records["object_id"])}
    for a, b in extra_links:
        if int(a) in row_of and int(b) in row_of:
            uf.union(row_of[int(a)], row_of[int(b)])
    smallest: dict[int, str] = {}
    for row, key in enumerate(own):
        root = uf.find(row)
        if root not in smallest or key < smallest[root]:
            smallest[root] = key
    return [smallest[uf.find(row)] for row in range(len(own))]


def assign_splits(
    records: pd.DataFrame,
    *,
    salt: str = "met",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    group_key: str | None = None,
    link_images: bool = True,
    extra_links: Iterable[tuple[int, int]] = (),
) -> pd.Series:
    """The split of every row of `records` (arguments as in `split_group_keys`)."""
    check_fractions(fractions)
    keys = split_group_keys(
        records, group_key=group_key, link_images=link_images, extra_links=extra_links
    )
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
