"""Sync priority: the order of CSV-known, unfetched ids, its status counts, and a real sync
against the fake API fetching in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from csvgen import met_rows, record_to_csv_row, write_csv
from harvester_support import FakeApiFactory, object_fetches

from met_harvester.csvimport import import_csv
from met_harvester.db import connect_sync, open_db, records, trouble
from met_harvester.models import parse_body
from met_harvester.priority import (
    DEFAULT_PRIORITY,
    order_ids,
    order_ids_sync,
    parse_priority,
    priority_status,
)
from met_harvester.settings import HarvesterSettings
from met_harvester.status import collect_status
from met_harvester.sync import run_sync
from met_harvester.testing import FakeMetAPI

# id -> (public domain, tags, highlight)
FLAGS: dict[int, tuple[bool, str, bool]] = {
    10: (False, "", False),
    11: (True, "Women|Men", False),
    12: (True, "", True),
    13: (False, "Horses", True),
    14: (True, "Birds", False),
    15: (True, "", False),
    16: (False, "", True),
}
UNKNOWN = 5  # not in the CSV


def write_flag_csv(path: Path) -> Path:
    rows = []
    for (object_id, (public, tags, highlight)), row in zip(
        FLAGS.items(), met_rows(len(FLAGS), seed=11), strict=True
    ):
        row.update(
            {
                "Object ID": str(object_id),
                "Is Public Domain": str(public),
                "Is Highlight": str(highlight),
                "Tags": tags,
                "Tags AAT URL": "",
                "Tags Wikidata URL": "",
            }
        )
        rows.append(row)
    write_csv(path, rows)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    import_csv(write_flag_csv(tmp_path / "flags.csv"), tmp_path / "data")
    return tmp_path / "data"


ALL = [16, 15, 14, 13, 12, 11, 10, UNKNOWN]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (DEFAULT_PRIORITY, [11, 14, 12, 15, UNKNOWN, 10, 13, 16]),
        ("pd", [11, 12, 14, 15, UNKNOWN, 10, 13, 16]),
        ("tagged,pd", [11, 13, 14, 12, 15, UNKNOWN, 10, 16]),
        ("highlight,pd-tagged", [12, 13, 16, 11, 14, UNKNOWN, 10, 15]),
        (" PD-Tagged , rest ", [11, 14, UNKNOWN, 10, 12, 13, 15, 16]),
        ("id", [UNKNOWN, 10, 11, 12, 13, 14, 15, 16]),
        ("rest", [UNKNOWN, 10, 11, 12, 13, 14, 15, 16]),
    ],
)
async def test_order_ids_follows_the_spec(data_dir: Path, spec: str, expected: list[int]) -> None:
    db = await open_db(data_dir)
    try:
        assert await order_ids(db, ALL, spec) == expected
        assert await order_ids(db, [*ALL, 11, 11], spec) == expected  # duplicates dropped
        assert await order_ids(db, [], spec) == []
    finally:
        await db.close()
    conn = connect_sync(data_dir)
    try:
        assert order_ids_sync(conn, ALL, spec) == expected
    finally:
        conn.close()


async def test_long_id_lists_scan_the_table_once_and_agree(data_dir: Path) -> None:
    many = list(range(30_000, 0, -1))  # above the chunked-lookup threshold
    db = await open_db(data_dir)
    try:
        ordered = await order_ids(db, many, DEFAULT_PRIORITY)
    finally:
        await db.close()
    assert ordered[:4] == [11, 14, 12, 15]
    assert ordered[4:] == sorted(set(many) - {11, 12, 14, 15})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pd,famous", "unknown group 'famous'"),
        ("", "empty group"),
        ("pd,,rest", "empty group"),
        ("id,pd", "'id' must be used alone"),
        ("pd,pd", "group 'pd' given twice"),
    ],
)
def test_invalid_specs_are_refused_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_priority(spec)


def test_parse_priority_ends_with_rest() -> None:
    assert parse_priority("pd") == ["pd", "rest"]
    assert parse_priority("rest,pd") == ["rest"]  # nothing can follow rest
    assert parse_priority("id") == []


def _record(object_id: int) -> records.FetchedRecord:
    body = json.dumps({"objectID": object_id, "title": "x", "isPublicDomain": True})
    record, data = parse_body(body, object_id)
    return records.FetchedRecord(record=record, data=data, body=body)


async def test_priority_status_counts_what_is_still_unfetched(data_dir: Path) -> None:
    db = await open_db(data_dir)
    try:
        before = await priority_status(db)
        await records.save_objects(db, [_record(11), _record(16)])  # fetched from the API
        await trouble.save_missing(db, [trouble.MissingObject(12, 404, "Not a valid object")])
        await db.commit()
        after = await priority_status(db)
        by_id = await priority_status(db, "id")
        shown = (await collect_status(db))["csv"]
    finally:
        await db.close()
    groups = ("csv_objects", "unfetched", "pd-tagged", "pd", "rest", "priority")
    assert [before[k] for k in groups] == [7, 7, 2, 2, 3, DEFAULT_PRIORITY]
    assert [after[k] for k in groups] == [7, 4, 1, 1, 2, DEFAULT_PRIORITY]
    assert before["last_import"] is not None
    assert (by_id["unfetched"], by_id["id"]) == (4, 4)
    assert shown == after  # `met-harvester status` shows it


def _priority_group(record: dict[str, Any]) -> int:
    """The record's group in the default order: 0 pd-tagged, 1 pd, 2 rest."""
    if record["isPublicDomain"] and record["tags"]:
        return 0
    return 1 if record["isPublicDomain"] else 2


def _import_api_records_as_csv(tmp_path: Path, api: FakeMetAPI) -> list[dict[str, Any]]:
    """Write the fake API's records as a Met CSV and import it into `tmp_path / "data"`."""
    records = [api.collection.record(i, api.base_url) for i in api.collection.object_ids]
    write_csv(tmp_path / "met.csv", [record_to_csv_row(r) for r in records])
    import_csv(tmp_path / "met.csv", tmp_path / "data")
    return records


async def test_first_full_sync_after_import_csv_fetches_in_priority_order(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    """The very first pass is full; with the CSV imported it still fetches pd-tagged first,
    then pd, then the rest (ascending ids within a group), as the server sees the requests."""
    api: FakeMetAPI = await fake_api_factory(n_objects=40, seed=3)  # shuffled listing
    records = _import_api_records_as_csv(tmp_path, api)
    settings = HarvesterSettings(
        data_dir=tmp_path / "data",
        api_url=api.api_url,
        rate=5000.0,
        concurrency=1,  # one request at a time: the server's log order is the fetch order
        images=False,
        batch_size=10,
    )
    report = await run_sync(settings)
    assert (report.mode, report.status) == ("full", "completed")
    groups = {r["objectID"]: _priority_group(r) for r in records}
    assert len(set(groups.values())) == 3  # the test sees all three groups
    assert object_fetches(api) == sorted(groups, key=lambda i: (groups[i], i))


async def test_sync_fetches_csv_known_ids_in_priority_order(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    """After import-csv, a sync fetches the unfetched ids pd-tagged first, then pd, then the rest.

    The first pass here is partial (`--limit 5`), as an interrupted first pass would be: the
    next pass is then incremental and orders what is left by the CSV.
    """
    api: FakeMetAPI = await fake_api_factory(n_objects=40, seed=3)
    records = _import_api_records_as_csv(tmp_path, api)
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "api_url": api.api_url,
        "rate": 5000.0,
        "concurrency": 1,
        "images": False,
        "batch_size": 10,
    }
    settings = HarvesterSettings(**values)
    assert (await run_sync(settings, limit=5)).status == "completed"
    first_pass = object_fetches(api)
    report = await run_sync(settings)
    assert report.status == "completed"
    fetched = [i for i in object_fetches(api)[len(first_pass) :] if i not in first_pass]

    groups = {r["objectID"]: _priority_group(r) for r in records}
    assert sorted(fetched + first_pass) == sorted(groups)
    assert [groups[i] for i in fetched] == sorted(groups[i] for i in fetched)
    assert len({groups[i] for i in fetched}) == 3  # the test saw all three groups
