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
from met_vision.data.splits import accession_prefix, assign_splits, split_of, split_report


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
        groups = records["accession_number"].map(accession_prefix)
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
    for name in space.names:  # the manifest counts the training split (vocabulary, weights)
        assert report["train"]["class_counts"][name] == space.counts[name]
    truth = json.loads((tiny_mirror / "truth.json").read_text())
    val_ids = set(kept.loc[kept["split"] == "val", "object_id"])
    women = sum("Women" in truth["objects"][str(oid)]["tags"] for oid in val_ids)
    assert report["val"]["class_counts"]["Women"] == women


@pytest.mark.parametrize(
    ("number", "lot"),
    [  # real accession numbers from ../shared/met-samples
        ("29.100.5", "29.100"),
        ("1975.1.1341", "1975.1"),
        ("2011.604.1.6084", "2011.604.1"),
        ("14.40.448a, b", "14.40"),
        ("12.75", "12.75"),
        ("CP54", "CP54"),
    ],
)
def test_accession_prefix_is_the_accession_lot(number: str, lot: str) -> None:
    assert accession_prefix(number) == lot


def share_images(data_dir: Path, groups: int = 8, per_group: int = 6) -> list[list[int]]:
    """Reuse `groups` photographs across `per_group` objects each (as the Met does), in SQLite."""
    conn = sqlite3.connect(data_dir / "met.sqlite")
    with conn:
        rows = conn.execute(
            "SELECT object_id, sha256 FROM images WHERE status = 'ok' AND role = 'primary' "
            "AND is_current = 1 AND sha256 IS NOT NULL ORDER BY object_id"
        ).fetchall()
        by_object = dict(rows)
        ids = sorted(by_object)
        sets = [ids[g::groups][:per_group] for g in range(groups)]
        for members in sets:
            shared = by_object[members[0]]
            for oid in members[1:]:
                conn.execute(
                    "UPDATE images SET sha256 = ? WHERE object_id = ? AND role = 'primary'",
                    (shared, oid),
                )
    conn.close()
    return sets


def test_objects_sharing_an_image_never_straddle_splits(fresh_mirror: Path) -> None:
    sets = share_images(fresh_mirror)
    records = load_records(fresh_mirror).set_index("object_id")
    for members in sets:
        assert records.loc[members, "split"].nunique() == 1, members
    # without the image links the same objects would straddle: the check has teeth
    unlinked = assign_splits(records.reset_index(), link_images=False)
    spread = records.reset_index().assign(split=unlinked).set_index("object_id")
    assert any(spread.loc[m, "split"].nunique() > 1 for m in sets)
    # the prepared index says so in report.json
    from met_vision.prepare import prepare

    report = prepare(fresh_mirror, 32, LabelSpaceConfig(task="multilabel"))
    checks = report["leakage"]["checks"]
    assert report["leakage"]["passed"] and all(c["straddling"] == 0 for c in checks)
    assert checks[0]["shared_values"] >= 1


def test_near_duplicate_photographs_are_grouped(fresh_mirror: Path) -> None:
    """A re-photographed object (resized, re-encoded copy) joins its twin's split."""
    import hashlib
    import io

    from PIL import Image

    from met_vision.data.mirror import blob_path
    from met_vision.data.near_duplicates import hamming, phash
    from met_vision.prepare import prepare

    records = load_records(fresh_mirror)
    usable = records[records["has_image"] & (records["tags"].map(len) > 0)]
    train = usable[usable["split"] == "train"].iloc[0]
    test = usable[usable["split"] == "test"].iloc[0]
    with Image.open(train["image_path"]) as source:
        copy = source.convert("RGB").resize((source.width * 9 // 10, source.height * 9 // 10))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=70)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    blob_path(fresh_mirror, sha).parent.mkdir(parents=True, exist_ok=True)
    blob_path(fresh_mirror, sha).write_bytes(data)
    assert hamming(phash(train["image_path"]), phash(blob_path(fresh_mirror, sha))) <= 3
    conn = sqlite3.connect(fresh_mirror / "met.sqlite")
    with conn:
        conn.execute(
            "UPDATE images SET sha256 = ? WHERE object_id = ? AND role = 'primary'",
            (sha, int(test["object_id"])),
        )
    conn.close()
    report = prepare(
        fresh_mirror, 96, LabelSpaceConfig(task="multilabel"), near_duplicate_distance=6
    )
    index = pd.read_parquet(fresh_mirror / report["index"]).set_index("object_id")
    pair = [int(train["object_id"]), int(test["object_id"])]
    assert index.loc[pair, "split"].nunique() == 1
    near = report["leakage"]["near_duplicates"]
    assert pair in near["examples"] or near["pairs"] >= 1
    assert near["straddling_pairs"] == 0 and near["max_hamming_distance"] == 6
