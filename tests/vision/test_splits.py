"""Deterministic, stable, group-aware splits."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from met_vision.data.labels import LabelSpaceConfig, build_label_space
from met_vision.data.mirror import load_records
from met_vision.data.splits import assign_splits, split_of, split_report


def test_split_of_is_deterministic_and_follows_fractions() -> None:
    ids = range(1, 20_001)
    splits = [split_of(i, "met", (0.7, 0.2, 0.1)) for i in ids]
    assert splits == [split_of(i, "met", (0.7, 0.2, 0.1)) for i in ids]
    shares = {k: v / len(splits) for k, v in Counter(splits).items()}
    assert shares["train"] == pytest.approx(0.7, abs=0.015)
    assert shares["val"] == pytest.approx(0.2, abs=0.015)
    assert shares["test"] == pytest.approx(0.1, abs=0.015)
    other_salt = [split_of(i, "other", (0.7, 0.2, 0.1)) for i in ids]
    assert sum(a != b for a, b in zip(splits, other_salt, strict=True)) > 1000


def test_no_object_changes_split_when_objects_arrive(fresh_mirror: Path) -> None:
    before = load_records(fresh_mirror).set_index("object_id")["split"]
    conn = sqlite3.connect(fresh_mirror / "met.sqlite")
    with conn:
        for offset in range(1, 201):
            new_id = 10_000_000 + offset
            conn.execute(
                "INSERT INTO objects(object_id, raw_json, content_sha256, first_seen_at, fetched_at, "
                "classification, artist_display_name) VALUES (?, '{}', 'x', 'now', 'now', 'Prints', ?)",
                (new_id, f"New Artist {offset % 7}"),
            )
    conn.close()
    after = load_records(fresh_mirror).set_index("object_id")["split"]
    assert len(after) == len(before) + 200
    pd.testing.assert_series_equal(after.loc[before.index], before)
    # Fractions changes move objects; the salt is what keeps splits the same across runs.
    moved = load_records(fresh_mirror, split_fractions=(0.5, 0.25, 0.25)).set_index("object_id")
    assert (moved.loc[before.index, "split"] != before).any()


@pytest.mark.parametrize("group_key", ["artist", "accession_prefix"])
def test_group_key_keeps_groups_on_one_side(tiny_mirror: Path, group_key: str) -> None:
    records = load_records(tiny_mirror, group_key=group_key)
    if group_key == "artist":
        groups = records["artist_display_name"].str.casefold()
    else:
        groups = records["accession_number"].str.split(".").str[0]
    grouped = records.assign(group=groups)[groups != ""]
    per_group = grouped.groupby("group")["split"].nunique()
    assert (per_group == 1).all()
    assert (grouped.groupby("group").size() > 1).any(), "the fixture should have shared groups"


def test_unknown_group_key_and_bad_fractions_are_errors() -> None:
    frame = pd.DataFrame({"object_id": [1, 2]})
    with pytest.raises(ValueError, match="group key"):
        assign_splits(frame, group_key="medium")
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(frame, fractions=(0.8, 0.3, 0.1))


def test_split_report_counts_classes_per_split(tiny_mirror: Path) -> None:
    records = load_records(tiny_mirror)
    space, kept = build_label_space(records, LabelSpaceConfig(task="multilabel"))
    report = split_report(kept, space.names, space.task)
    assert sum(part["objects"] for part in report.values()) == len(kept)
    for name in space.names:
        assert sum(part["class_counts"][name] for part in report.values()) == space.counts[name]
    truth = json.loads((tiny_mirror / "truth.json").read_text())
    val_ids = set(kept.loc[kept["split"] == "val", "object_id"])
    women = sum("Women" in truth["objects"][str(oid)]["tags"] for oid in val_ids)
    assert report["val"]["class_counts"]["Women"] == women
