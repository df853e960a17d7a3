"""Label spaces built from a real tiny mirror, compared with the generator's ground truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from met_vision.data.labels import OTHER, LabelSpace, LabelSpaceConfig, build_label_space
from met_vision.data.mirror import load_records


@pytest.fixture(scope="module")
def truth(tiny_mirror: Path) -> dict[str, Any]:
    return json.loads((tiny_mirror / "truth.json").read_text())


@pytest.fixture(scope="module")
def records(tiny_mirror: Path) -> pd.DataFrame:
    return load_records(tiny_mirror, include_withdrawn=True)


def _with_image(truth: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in truth["objects"].items() if v["has_image"]}


def test_records_take_api_first_then_csv(records: pd.DataFrame, truth: dict[str, Any]) -> None:
    by_id = records.set_index("object_id")
    assert set(by_id.index) == {int(k) for k in truth["objects"]}
    for oid in truth["csv_only"]:
        assert by_id.loc[oid, "source"] == "csv"
        assert sorted(by_id.loc[oid, "tags"]) == sorted(truth["objects"][str(oid)]["tags"])
    for oid in truth["stale_csv"]:
        assert by_id.loc[oid, "source"] == "api"
        assert by_id.loc[oid, "classification"] == truth["objects"][str(oid)]["classification"]
    specials = truth["specials"]
    for kind in ("missing_blob", "pending"):
        assert not by_id.loc[specials[kind], "has_image"]
    assert by_id.loc[specials["withdrawn"], "withdrawn"]
    assert by_id.loc[specials["truncated"], "has_image"]  # stored; only decoding fails


def test_multiclass_classification_matches_truth(
    records: pd.DataFrame, truth: dict[str, Any]
) -> None:
    space, kept = build_label_space(
        records, LabelSpaceConfig(task="multiclass"), vocabulary_split=None
    )
    expected = _with_image(truth)
    assert space.names == sorted({o["classification"] for o in expected.values()})
    assert space.counts == dict(Counter(o["classification"] for o in expected.values()))
    for oid, target in zip(kept["object_id"], kept["target"], strict=True):
        assert space.names[target] == expected[oid]["classification"]
    assert space.exclusions["withdrawn"] == 1
    assert space.exclusions["no_image"] == sum(
        1 for o in truth["objects"].values() if not o["has_image"] and o["special"] != "withdrawn"
    )
    assert space.exclusions["kept"] == len(expected) == len(kept)
    csv_counts = Counter(o["classification"] for o in expected.values() if o["source"] == "csv")
    assert {name: s["csv"] for name, s in space.sources.items()} == {
        name: csv_counts.get(name, 0) for name in space.names
    }


def test_top_k_with_and_without_other(records: pd.DataFrame) -> None:
    records = records.assign(split="train")  # the vocabulary split is every object here
    full, _ = build_label_space(records, LabelSpaceConfig(task="multiclass"))
    top3 = sorted(full.names, key=lambda n: (-full.counts[n], n))[:3]
    dropped = sum(n for name, n in full.counts.items() if name not in top3)
    with_other, kept = build_label_space(
        records, LabelSpaceConfig(task="multiclass", top_k=3, other=True)
    )
    assert with_other.names == [*sorted(top3), OTHER]
    assert with_other.counts[OTHER] == dropped
    assert len(kept) == full.exclusions["kept"]
    without, kept = build_label_space(records, LabelSpaceConfig(task="multiclass", top_k=3))
    assert without.names == sorted(top3)
    assert without.exclusions["rare_class"] == dropped
    assert len(kept) == full.exclusions["kept"] - dropped


def test_min_count_drops_rare_classes(records: pd.DataFrame) -> None:
    full, _ = build_label_space(records, LabelSpaceConfig(task="multiclass"))
    threshold = sorted(full.counts.values())[1]  # drops at least the rarest class
    space, _ = build_label_space(records, LabelSpaceConfig(task="multiclass", min_count=threshold))
    assert space.names == sorted(n for n, c in full.counts.items() if c >= threshold)


def test_tag_group_excludes_ambiguous_and_unlabelled(
    records: pd.DataFrame, truth: dict[str, Any]
) -> None:
    config = LabelSpaceConfig(task="multiclass", tag_group=["Men", "Women"])
    space, kept = build_label_space(records, config)
    expected = _with_image(truth)
    both = [o for o in expected.values() if {"Men", "Women"} <= set(o["tags"])]
    neither = [o for o in expected.values() if not {"Men", "Women"} & set(o["tags"])]
    assert both, "the fixture should hold objects tagged both Men and Women"
    assert space.names == ["Men", "Women"]
    assert space.exclusions["ambiguous"] == len(both)
    assert space.exclusions["no_label"] == len(neither)
    for oid, target in zip(kept["object_id"], kept["target"], strict=True):
        assert space.names[target] in expected[oid]["tags"]


def test_multilabel_multi_hot_top_k_include_exclude(
    records: pd.DataFrame, truth: dict[str, Any]
) -> None:
    expected = _with_image(truth)
    frequency = Counter(t for o in expected.values() for t in o["tags"])
    config = LabelSpaceConfig(task="multilabel", top_k=5, exclude=["Men"])
    space, kept = build_label_space(records, config, vocabulary_split=None)
    ranked = sorted((t for t in frequency if t != "Men"), key=lambda t: (-frequency[t], t))
    assert space.names == sorted(ranked[:5])
    assert space.exclusions["no_label"] == sum(1 for o in expected.values() if not o["tags"])
    for oid, target in zip(kept["object_id"], kept["target"], strict=True):
        assert [space.names[i] for i in target] == sorted(
            set(expected[oid]["tags"]) & set(space.names)
        )
    only, _ = build_label_space(
        records,
        LabelSpaceConfig(task="multilabel", include=["Birds", "Boats"]),
        vocabulary_split=None,
    )
    assert only.names == ["Birds", "Boats"]
    assert only.counts == {"Birds": frequency["Birds"], "Boats": frequency["Boats"]}


def test_pipe_joined_value_is_ambiguous() -> None:
    records = pd.DataFrame(
        {
            "object_id": [1, 2, 3, 4],
            "classification": ["Prints", "Prints|Ephemera", "", "Paintings"],
            "tags": [[], [], [], []],
            "source": ["api", "api", "csv", "csv"],
            "has_image": [True, True, True, False],
        }
    )
    space, kept = build_label_space(records, LabelSpaceConfig(task="multiclass"))
    assert space.names == ["Prints"]
    assert space.exclusions == {
        "objects": 4, "no_image": 1, "no_label": 1, "ambiguous": 1, "rare_class": 0, "kept": 1,
    }  # fmt: skip
    assert kept["object_id"].tolist() == [1]


def test_manifest_round_trip_and_hash(records: pd.DataFrame, tmp_path: Path) -> None:
    config = LabelSpaceConfig(
        task="multilabel", top_k=4, include=["Women", "Men", "Birds", "Trees", "Boats"]
    )
    space, _ = build_label_space(records, config)
    path = tmp_path / "labels.json"
    space.save(path)
    loaded = LabelSpace.load(path)
    assert loaded.manifest() == space.manifest()
    manifest = json.loads(path.read_text())
    assert manifest["names"] == space.names and manifest["task"] == "multilabel"
    assert manifest["source_columns"] and manifest["exclusions"]["kept"] > 0
    assert manifest["definition_hash"] == space.definition_hash
    # The same definition (include order aside) hashes the same; a different one does not.
    again, _ = build_label_space(
        records, LabelSpaceConfig(task="multilabel", top_k=4, include=sorted(config.include or []))
    )
    assert again.definition_hash == space.definition_hash
    other, _ = build_label_space(records, LabelSpaceConfig(task="multilabel", top_k=3))
    assert other.definition_hash != space.definition_hash
    manifest["names"] = list(reversed(manifest["names"]))
    with pytest.raises(ValueError, match="definition_hash"):
        LabelSpace.from_manifest(manifest)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "multiclass", "column": "medium"}, "unknown label column"),
        ({"task": "multilabel", "other": True}, "other"),
        ({"task": "multiclass", "min_count": 0}, "min_count"),
        ({"task": "regression"}, "task"),
    ],
)
def test_bad_config_is_a_clear_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelSpaceConfig(**options)


def test_vocabulary_and_counts_come_from_the_training_split(records: pd.DataFrame) -> None:
    train = records["split"] == "train"
    # a tag seen only in held-out objects must not enter the vocabulary
    held_out_only = records.copy()
    first_test = held_out_only.index[
        (held_out_only["split"] == "test") & held_out_only["has_image"]
    ]
    held_out_only.at[first_test[0], "tags"] = [*held_out_only.at[first_test[0], "tags"], "Unseen"]
    space, kept = build_label_space(held_out_only, LabelSpaceConfig(task="multilabel"))
    assert "Unseen" not in space.names
    assert first_test[0] in set(held_out_only.index)  # the object itself stays, without the tag
    usable = records[train & records["has_image"] & ~records["withdrawn"]]
    expected = Counter(t for tags in usable["tags"] for t in set(tags))
    assert space.counts == {name: expected[name] for name in space.names}
    assert len(kept[kept["split"] != "train"]) > 0
