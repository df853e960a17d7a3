"""MetObject: every real body parses and round-trips; bad records raise RecordError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.models import (
    Constituent,
    RecordError,
    canonical_json,
    content_sha256,
    parse_body,
    parse_object,
)

FOLDERS = ("objects", "objects-legacy", "objects-versions")


def sample_files() -> list[Path]:
    """Every real object body under the shared samples (empty when they are absent)."""
    return [p for folder in FOLDERS for p in sorted((MET_SAMPLES / folder).glob("*.json"))]


needs_samples = samples_required(MET_SAMPLES / "objects")


@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_body_parses_and_round_trips(path: Path) -> None:
    body = path.read_text(encoding="utf-8")
    data = json.loads(body)
    record, decoded = parse_body(body, data["objectID"])
    assert decoded == data
    assert record.object_id == data["objectID"]
    dumped = record.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if path.parent.name == "objects":
        # current schema: the model represents every key and value faithfully
        assert dumped == data
    assert set(dumped) == set(data)
    for tag in record.tag_list():
        assert tag.term.strip()
    for person in record.constituent_list():
        assert isinstance(person.stable_id(), int)


@needs_samples
def test_samples_cover_the_known_schema_drift() -> None:
    legacy = json.loads((MET_SAMPLES / "objects-legacy" / "10188.json").read_text())
    record = parse_object(legacy, 10188)
    assert [t.term for t in record.tag_list()] == ["Landscapes", "Trees", "Spring"]
    assert all(t.aat_url is None for t in record.tag_list())
    assert record.constituent_list()[0].constituent_id is None
    assert record.constituent_list()[0].stable_id() < 0
    assert record.accession_year is None  # key absent in 2019


def _minimal(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"objectID": 7, "title": "A", "tags": None, "constituents": None}
    data.update(fields)
    return data


def test_unknown_keys_are_kept() -> None:
    record = parse_object(_minimal(brandNewField={"x": 1}), 7)
    assert record.model_extra == {"brandNewField": {"x": 1}}


def test_odd_types_are_tolerated() -> None:
    record = parse_object(
        _minimal(
            objectBeginDate="1850",
            objectEndDate=1851.0,
            isPublicDomain="true",
            isHighlight=1,
            accessionYear=1916,
            department=None,
            culture=12,
            additionalImages=None,
            measurements="weird",
        ),
        7,
    )
    assert record.object_begin_date == 1850
    assert record.object_end_date == 1851
    assert record.is_public_domain is True
    assert record.is_highlight is True
    assert record.accession_year == "1916"
    assert record.department is None
    assert record.culture == "12"
    assert record.additional_images == []


def test_nonsense_in_lenient_fields_becomes_none() -> None:
    record = parse_object(_minimal(objectBeginDate="c. 1850", isPublicDomain="maybe"), 7)
    assert record.object_begin_date is None
    assert record.is_public_domain is None


def test_missing_keys_are_fine() -> None:
    record = parse_object({"objectID": 7}, 7)
    assert record.tag_list() == []
    assert record.constituent_list() == []


@pytest.mark.parametrize(
    ("data", "expected_id", "reason"),
    [
        (_minimal(objectID=8), 7, "objectID is 8, expected 7"),
        (_minimal(objectID="7"), 7, "objectID"),
        (_minimal(objectID=True), 7, "objectID"),
        (_minimal(objectID=7.0), 7, "objectID"),
        ({"title": "no id"}, 7, "objectID"),
        (["not", "an", "object"], 7, "not an object"),
        ("a string", 7, "not an object"),
        (_minimal(tags=[{"AAT_URL": "x"}]), 7, "tags.0.term"),
        (_minimal(tags=[["nested"]]), 7, "tags.0"),
        (_minimal(tags=42), 7, "tags"),
        (_minimal(constituents=["Rembrandt"]), 7, "constituents.0"),
    ],
)
def test_bad_records_raise_record_error(data: Any, expected_id: int, reason: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_object(data, expected_id)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_body_that_is_not_json() -> None:
    with pytest.raises(RecordError, match="not JSON"):
        parse_body("<html>Request unsuccessful. Incapsula incident ID</html>", 7)
    with pytest.raises(RecordError, match="not JSON"):
        parse_body('{"objectID": 7, "title": "trunc', 7)


def test_content_hash_ignores_key_order_and_whitespace() -> None:
    a = {"objectID": 1, "title": "é", "tags": [{"term": "x"}]}
    b = json.loads(json.dumps({"tags": [{"term": "x"}], "title": "é", "objectID": 1}, indent=4))
    assert content_sha256(a) == content_sha256(b)
    assert content_sha256(a) != content_sha256({**a, "title": "e"})
    assert canonical_json(a) == '{"objectID":1,"tags":[{"term":"x"}],"title":"é"}'


def test_stable_ids_for_constituents_without_ids() -> None:
    first = Constituent.model_validate({"name": "Robert Frederick Blum"})
    again = Constituent.model_validate({"name": "Robert Frederick Blum"})
    other = Constituent.model_validate({"name": "Thomas Newberry"})
    assert first.stable_id() == again.stable_id() < 0
    assert first.stable_id() != other.stable_id()
    assert Constituent.model_validate({"constituentID": 161757}).stable_id() == 161757
