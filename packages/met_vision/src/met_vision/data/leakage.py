"""Leakage between splits: near-duplicate grouping and the checks `prepare` reports.

`prepare` runs these on every finished index and writes the result to `report.json` under
`leakage`: which checks ran, how many shared values they saw, how many straddle splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from met_vision.data import near_duplicates
from met_vision.data.splits import assign_splits


def leakage_check(frame: pd.DataFrame, column: str = "sha256") -> dict[str, Any]:
    """Values of `column` (an image sha256, a group key) that occur in more than one split.

    Returns ``{"column", "shared_values", "straddling": n, "examples": [...]}``: `shared_values`
    counts the values held by two or more objects, `straddling` those found in several splits.
    """
    values = frame[[column, "split"]].dropna()
    per_value = values.groupby(column)["split"]
    shared = per_value.size()
    straddling = per_value.nunique()
    bad = sorted(straddling[straddling > 1].index.astype(str))
    return {
        "column": column,
        "shared_values": int((shared > 1).sum()),
        "straddling": len(bad),
        "examples": bad[:5],
    }


def near_duplicate_links(
    kept: pd.DataFrame, failures: Mapping[str, str], max_distance: int
) -> tuple[list[tuple[int, int, int]], int]:
    """Near-duplicate object pairs among `kept` (hashes of the source images), and how many."""
    files = [
        (int(oid), Path(source))
        for oid, sha, source in zip(
            kept["object_id"], kept["image_sha256"], kept["image_path"], strict=True
        )
        if sha not in failures
    ]
    hashes = near_duplicates.hashes_of(files)
    return near_duplicates.near_duplicate_pairs(hashes, max_distance), len(hashes)


def regroup(
    records: pd.DataFrame,
    links: list[tuple[int, int, int]],
    split_salt: str,
    fractions: Sequence[float],
    group_key: str | None,
) -> pd.DataFrame:
    """`records` with splits that also keep every near-duplicate pair together."""
    split = assign_splits(
        records,
        salt=split_salt,
        fractions=fractions,
        group_key=group_key,
        extra_links=[(a, b) for a, b, _ in links],
    )
    return records.assign(split=split)


def leakage_report(
    records: pd.DataFrame,
    index: pd.DataFrame,
    links: list[tuple[int, int, int]] | None,
    near_duplicate_distance: int | None,
    hashed: int,
) -> dict[str, Any]:
    """The leakage checks run on a finished index, and what they found (for `report.json`)."""
    in_index = records[records["object_id"].isin(index["object_id"])]
    every_image = in_index[["image_sha256s", "split"]].explode("image_sha256s")
    checks = [
        {"check": "primary image sha256 in one split", **leakage_check(index, "sha256")},
        {
            "check": "any stored image sha256 in one split",
            **leakage_check(every_image.rename(columns={"image_sha256s": "sha"}), "sha"),
        },
    ]
    report: dict[str, Any] = {
        "split_unit": "union-find groups: objects sharing an image sha256"
        + (", near-duplicate images" if near_duplicate_distance is not None else "")
        + "; the salted hash of the group's smallest key decides its split",
        "vocabulary_split": "train",
        "checks": checks,
    }
    if near_duplicate_distance is not None and links is not None:
        split_of_object = dict(zip(index["object_id"], index["split"], strict=True))
        straddling = [
            (a, b)
            for a, b, _ in links
            if a in split_of_object
            and b in split_of_object
            and split_of_object[a] != split_of_object[b]
        ]
        report["near_duplicates"] = {
            "hash": near_duplicates.HASH_NAME,
            "max_hamming_distance": near_duplicate_distance,
            "images_hashed": hashed,
            "pairs": len(links),
            "objects_linked": len({o for a, b, _ in links for o in (a, b)}),
            "straddling_pairs": len(straddling),
            "examples": [list(pair) for pair in links[:5]],
        }
        checks.append({"check": "near-duplicate pairs in one split", "straddling": len(straddling)})
    report["passed"] = all(check["straddling"] == 0 for check in checks)
    return report
