"""diff-csv: the CSV and the API mirror agree on the same objects (a CSV written from the fake
API's records, the API side synced over loopback); mutations on either side are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from csvgen import met_rows, record_to_csv_row, write_csv
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.csvimport import import_csv
from met_harvester.csvimport.diff import CATEGORIES, diff_csv_api
from met_harvester.db import connect_sync, open_db, records
from met_harvester.models import parse_body
from met_harvester.settings import HarvesterSettings
from met_harvester.sync import run_sync
from met_harvester.testing import FakeMetAPI


def settings_for(data_dir: Path, api: FakeMetAPI) -> HarvesterSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "api_url": api.api_url,
        "rate": 5000.0,
        "images": False,
        "batch_size": 50,
    }
    return HarvesterSettings(**values)


def diff(data_dir: Path) -> dict[str, Any]:
    conn = connect_sync(data_dir)
    try:
        return diff_csv_api(conn, sample_size=100).to_json()
    finally:
        conn.close()


def sample_ids(result: dict[str, Any], category: str) -> list[int]:
    return [entry["object_id"] for entry in result["categories"][category]["sample"]]


async def mirror_both(tmp_path: Path, api: FakeMetAPI) -> tuple[Path, list[dict[str, str]]]:
    records = [api.collection.record(i, api.base_url) for i in api.collection.object_ids]
    rows = [record_to_csv_row(r) for r in records]
    data = tmp_path / "data"
    write_csv(tmp_path / "met.csv", rows)
    assert import_csv(tmp_path / "met.csv", data).inserted == len(rows)
    assert (await run_sync(settings_for(data, api))).status == "completed"
    return data, rows


async def test_csv_and_api_agree_on_the_same_objects(tmp_path: Path, fake_api_factory: Any) -> None:
    api: FakeMetAPI = await fake_api_factory(n_objects=60, seed=5)
    data, rows = await mirror_both(tmp_path, api)
    result = diff(data)
    assert (result["csv_objects"], result["api_objects"], result["in_both"]) == (60, 60, 60)
    assert {name: result["categories"][name]["count"] for name in CATEGORIES} == dict.fromkeys(
        CATEGORIES, 0
    )
    tagged = sum(1 for row in rows if row["Tags"])
    assert 0 < tagged < 60  # the comparison covered tagged and untagged objects
    conn = connect_sync(data)
    try:
        both = conn.execute(
            "SELECT COUNT(*) FROM (SELECT object_id, tag_id FROM object_tags WHERE source = 'csv' "
            "INTERSECT SELECT object_id, tag_id FROM object_tags WHERE source = 'api')"
        ).fetchone()[0]
        csv_links = conn.execute(
            "SELECT COUNT(*) FROM object_tags WHERE source = 'csv'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert both == csv_links > 0  # both sources link the same tags rows


async def test_disagreements_on_either_side_are_reported(
    tmp_path: Path, fake_api_factory: Any
) -> None:
    api: FakeMetAPI = await fake_api_factory(n_objects=60, seed=6)
    data, rows = await mirror_both(tmp_path, api)
    by_id = {int(row["Object ID"]): row for row in rows}
    ids = sorted(by_id)
    tagged = [i for i in ids if by_id[i]["Tags"]]
    # --- the CSV side changes ---------------------------------------------------------------
    dept_id, pd_id, dropped_id = ids[1], ids[2], ids[3]
    tags_id = tagged[0]
    by_id[dept_id]["Department"] = "Department of Typos"
    by_id[pd_id]["Is Public Domain"] = (
        "False" if by_id[pd_id]["Is Public Domain"] == "True" else "True"
    )
    by_id[tags_id]["Tags"] += "|Unicorns"
    by_id[tags_id]["Tags AAT URL"] += "|"
    by_id[tags_id]["Tags Wikidata URL"] += "|"
    del by_id[dropped_id]
    extra = next(iter(met_rows(1, seed=1, start_id=ids[-1] + 1000)))
    new_csv = tmp_path / "newer.csv"
    write_csv(new_csv, [*by_id.values(), extra])
    conn = connect_sync(data)
    conn.execute("DELETE FROM csv_objects WHERE object_id = ?", (dropped_id,))  # an older import
    conn.commit()
    conn.close()
    assert import_csv(new_csv, data).updated == 3
    # --- the API side changes ---------------------------------------------------------------
    api_tags_id, api_dept_id = tagged[1], ids[10]
    api.mutate(api_tags_id, tags=None)
    api.mutate(api_dept_id, department="Moved Upstairs")
    assert (await run_sync(settings_for(data, api))).status == "completed"

    result = diff(data)
    assert sample_ids(result, "only_in_csv") == [int(extra["Object ID"])]
    assert sample_ids(result, "only_in_api") == [dropped_id]
    assert sample_ids(result, "department_differs") == sorted([dept_id, api_dept_id])
    assert sample_ids(result, "public_domain_differs") == [pd_id]
    assert sample_ids(result, "tags_differ") == sorted([tags_id, api_tags_id])
    tag_entries = {e["object_id"]: e for e in result["categories"]["tags_differ"]["sample"]}
    assert tag_entries[tags_id]["csv_only"] == ["Unicorns"]
    assert tag_entries[tags_id]["api_only"] == []
    assert tag_entries[api_tags_id]["csv_only"] == sorted(by_id[api_tags_id]["Tags"].split("|"))
    assert dict(result["terms_only_in_csv"])["Unicorns"] == 1
    dept = {e["object_id"]: e for e in result["categories"]["department_differs"]["sample"]}
    assert dept[api_dept_id]["api"] == "Moved Upstairs"
    assert dept[dept_id]["csv"] == "Department of Typos"

    # --- the CLI: Markdown by default, --json, --out ------------------------------------------
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "met_harvester", "diff-csv", "--data-dir", str(data)]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=120, check=False
        )

    markdown = cli()
    assert markdown.returncode == 0, markdown.stderr
    assert "| Department differs | 2 |" in markdown.stdout
    assert "Department of Typos" in markdown.stdout
    out = tmp_path / "report.json"
    written = cli("--json", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert str(out) in written.stdout
    assert json.loads(out.read_text(encoding="utf-8"))["categories"] == result["categories"] | {
        name: {
            "count": result["categories"][name]["count"],
            "sample": result["categories"][name]["sample"][:20],
        }
        for name in CATEGORIES
    }


def test_diff_csv_without_a_mirror_fails_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "met_harvester", "diff-csv", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no mirror at" in result.stderr


SUBSET = MET_SAMPLES / "csv" / "MetObjects-subset-2000rows.csv"


@samples_required(SUBSET)
async def test_real_csv_rows_and_real_api_bodies_agree(tmp_path: Path) -> None:
    """The 4 objects both in the real CSV subset and in the recorded API bodies."""
    data = tmp_path / "data"
    import_csv(SUBSET, data)
    db = await open_db(data)
    try:
        items = []
        for object_id in (193506, 336228, 436535, 459123):
            body = (MET_SAMPLES / "objects" / f"{object_id}.json").read_text(encoding="utf-8")
            record, decoded = parse_body(body, object_id)
            items.append(records.FetchedRecord(record=record, data=decoded, body=body))
        await records.save_objects(db, items)
        await db.commit()
    finally:
        await db.close()
    result = diff(data)
    assert (result["in_both"], result["api_objects"], result["csv_objects"]) == (4, 4, 2000)
    counts = {name: result["categories"][name]["count"] for name in CATEGORIES}
    assert counts == {
        "only_in_csv": 1996,
        "only_in_api": 0,
        "tags_differ": 0,  # 193506 lists its tags in another order: same set
        "public_domain_differs": 0,
        "department_differs": 0,
    }
    columns = (
        "department, classification, object_name, is_public_domain, is_highlight, "
        "artist_display_name, artist_gender, object_begin_date, object_end_date, "
        "accession_year, accession_number"
    )
    conn = connect_sync(data)
    try:
        from_api = conn.execute(f"SELECT {columns} FROM objects ORDER BY object_id").fetchall()
        from_csv = conn.execute(
            f"SELECT {columns} FROM csv_objects WHERE object_id IN "
            "(SELECT object_id FROM objects) ORDER BY object_id"
        ).fetchall()
    finally:
        conn.close()
    assert from_csv == from_api  # typed columns mean the same on both paths
