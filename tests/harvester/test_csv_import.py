"""import-csv on real SQLite files: the real 2,000-row subset, a generated full-shape CSV,
idempotence, history on a newer CSV, and the CLI."""

from __future__ import annotations

import csv
import gzip
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from csvgen import met_rows, tag_urls, write_csv, write_met_csv
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.csvimport import import_csv
from met_harvester.csvimport.columns import MET_COLUMNS
from met_harvester.db.connection import connect_sync, db_path

SUBSET = MET_SAMPLES / "csv" / "MetObjects-subset-2000rows.csv"
needs_subset = samples_required(SUBSET)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m met_harvester ARGS` in a subprocess (the real CLI, stdout and stderr apart)."""
    return subprocess.run(
        [sys.executable, "-m", "met_harvester", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def conn_of() -> Iterator[Any]:
    opened: list[sqlite3.Connection] = []

    def open_(data_dir: Path) -> sqlite3.Connection:
        conn = connect_sync(data_dir)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


def snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("csv_objects", "csv_object_versions", "tags", "object_tags")
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


def csv_tag_terms(conn: sqlite3.Connection, object_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT t.term FROM object_tags ot JOIN tags t USING (tag_id) "
        "WHERE ot.object_id = ? AND ot.source = 'csv' ORDER BY t.term",
        (object_id,),
    )
    return [row[0] for row in rows]


@needs_subset
def test_real_subset_imports_every_row_with_typed_values_and_tags(
    tmp_path: Path, conn_of: Any
) -> None:
    report = import_csv(SUBSET, tmp_path)
    assert (report.rows_read, report.inserted, report.bad_rows) == (2000, 2000, 0)
    with open(SUBSET, encoding="utf-8-sig", newline="") as f:
        raw = {int(row["Object ID"]): row for row in csv.DictReader(f)}
    conn = conn_of(tmp_path)
    assert conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone() == (2000,)
    for row in conn.execute(
        "SELECT object_id, raw_row, department, object_name, is_public_domain, is_highlight, "
        "accession_number, object_begin_date, tags FROM csv_objects"
    ):
        cells = raw[row[0]]
        assert json.loads(row[1]) == cells  # raw_row keeps every cell, newlines included
        assert row[2] == (cells["Department"] or None)
        assert row[3] == (cells["Object Name"] or None)
        assert row[4] == (cells["Is Public Domain"] == "True")
        assert row[5] == (cells["Is Highlight"] == "True")
        assert row[6] == cells["Object Number"]
        assert row[7] == int(cells["Object Begin Date"])
        assert json.loads(row[8]) == [t for t in cells["Tags"].split("|") if t]
    # spot checks against values read by eye from the file
    van_gogh = conn.execute(
        "SELECT department, artist_display_name, accession_year, tags FROM csv_objects "
        "WHERE object_id = 436535"
    ).fetchone()
    assert van_gogh == (
        "European Paintings",
        "Vincent van Gogh",
        "1993",
        '["Landscapes", "Cypresses", "Summer"]',
    )
    assert csv_tag_terms(conn, 436535) == ["Cypresses", "Landscapes", "Summer"]
    # multi-artist rows: the first constituent, as the API's artistDisplayName
    assert conn.execute(
        "SELECT artist_display_name, artist_gender FROM csv_objects WHERE object_id = 503046"
    ).fetchone() == ("Érard", None)
    # tags carry their aligned AAT / Wikidata URLs
    for cells in list(raw.values())[:200]:
        if not cells["Tags"]:
            continue
        for term, aat, wiki in zip(
            cells["Tags"].split("|"),
            cells["Tags AAT URL"].split("|"),
            cells["Tags Wikidata URL"].split("|"),
            strict=True,
        ):
            assert conn.execute(
                "SELECT aat_url, wikidata_url FROM tags WHERE term = ?", (term,)
            ).fetchone() == (aat.strip() or None, wiki.strip() or None)  # " " in the file
    links = conn.execute("SELECT COUNT(*) FROM object_tags WHERE source = 'csv'").fetchone()[0]
    assert links == sum(len(set(c["Tags"].split("|"))) for c in raw.values() if c["Tags"])


def test_generated_full_shape_csv_with_bom_and_embedded_newlines(
    tmp_path: Path, conn_of: Any
) -> None:
    path = tmp_path / "MetObjects.csv"
    write_met_csv(path, 300, seed=3, bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = list(met_rows(300, seed=3))
    assert sum("\r\n" in row["Dimensions"] for row in rows) > 20

    report = import_csv(path, tmp_path / "data")
    assert (report.rows_read, report.inserted, report.issue_count) == (300, 300, 0)
    conn = conn_of(tmp_path / "data")
    stored = {
        oid: json.loads(raw)
        for oid, raw in conn.execute("SELECT object_id, raw_row FROM csv_objects")
    }
    assert stored == {int(row["Object ID"]): row for row in rows}
    assert list(next(iter(stored.values()))) == list(MET_COLUMNS)  # no BOM in the first key
    for term, aat, wiki in conn.execute("SELECT term, aat_url, wikidata_url FROM tags"):
        assert (aat, wiki) == tag_urls(term)
    pipes = conn.execute("SELECT title FROM csv_objects WHERE title LIKE '%|%'").fetchall()
    assert pipes and all(title == "Fan | with pipe" for (title,) in pipes)


def test_reimport_of_the_same_file_changes_nothing(tmp_path: Path, conn_of: Any) -> None:
    path = tmp_path / "MetObjects.csv"
    write_met_csv(path, 250, seed=1)
    first = import_csv(path, tmp_path / "data", batch_size=64)
    conn = conn_of(tmp_path / "data")
    before = snapshot(conn)
    second = import_csv(path, tmp_path / "data", batch_size=64)
    assert (first.inserted, second.inserted, second.updated, second.unchanged) == (250, 0, 0, 250)
    assert snapshot(conn) == before
    assert before["csv_object_versions"] == []
    imports = conn.execute("SELECT counts_json, finished_at FROM csv_imports").fetchall()
    assert [json.loads(c)["unchanged"] for c, _ in imports] == [0, 250]
    assert all(finished for _, finished in imports)


def test_newer_csv_updates_rows_keeps_history_and_replaces_csv_tags(
    tmp_path: Path, conn_of: Any
) -> None:
    data = tmp_path / "data"
    rows = list(met_rows(120, seed=2))
    old_path, new_path = tmp_path / "old.csv", tmp_path / "new.csv.gz"
    write_csv(old_path, rows)
    import_csv(old_path, data)
    conn = conn_of(data)
    first_seen = dict(conn.execute("SELECT object_id, first_seen_at FROM csv_objects"))
    # an API tag on an object must survive CSV updates
    conn.execute("INSERT INTO tags (term) VALUES ('Api only')")
    api_tag = conn.execute("SELECT tag_id FROM tags WHERE term = 'Api only'").fetchone()[0]
    target = int(rows[0]["Object ID"])
    conn.execute("INSERT INTO object_tags VALUES (?, ?, 'api')", (target, api_tag))
    conn.commit()

    newer = [dict(row) for row in rows]
    newer[0]["Tags"], newer[0]["Tags AAT URL"], newer[0]["Tags Wikidata URL"] = "Unicorns", "", ""
    newer[1]["Department"] = "Renamed Department"
    newer[2]["Is Public Domain"] = "False" if rows[2]["Is Public Domain"] == "True" else "True"
    newer.append(next(iter(met_rows(1, seed=9, start_id=10_000_000))))
    tmp_csv = tmp_path / "new.csv"
    write_csv(tmp_csv, newer)
    new_path.write_bytes(gzip.compress(tmp_csv.read_bytes()))

    report = import_csv(new_path, data)
    assert (report.inserted, report.updated, report.unchanged) == (1, 3, 117)
    changed = [int(newer[i]["Object ID"]) for i in range(3)]
    versions = conn.execute(
        "SELECT object_id, raw_row FROM csv_object_versions ORDER BY object_id"
    ).fetchall()
    assert [oid for oid, _ in versions] == sorted(changed)
    old_by_id = {int(r["Object ID"]): r for r in rows}
    assert all(json.loads(raw) == old_by_id[oid] for oid, raw in versions)
    assert csv_tag_terms(conn, target) == ["Unicorns"]
    assert conn.execute(
        "SELECT COUNT(*) FROM object_tags WHERE object_id = ? AND source = 'api'", (target,)
    ).fetchone() == (1,)
    assert conn.execute(
        "SELECT department FROM csv_objects WHERE object_id = ?", (changed[1],)
    ).fetchone() == ("Renamed Department",)
    after = dict(conn.execute("SELECT object_id, first_seen_at FROM csv_objects"))
    assert all(after[oid] == seen for oid, seen in first_seen.items())
    again = import_csv(new_path, data)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 121)


def test_cli_import_csv_prints_a_summary_and_refuses_a_non_met_file(tmp_path: Path) -> None:
    path = tmp_path / "MetObjects.csv"
    write_met_csv(path, 50, seed=4)
    result = run_cli("import-csv", str(path), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert "rows read 50, inserted 50, updated 0, unchanged 0, bad rows 0" in result.stdout

    other = tmp_path / "other.csv"
    other.write_text("name,age\nAda,36\n", encoding="utf-8")
    result = run_cli("import-csv", str(other), "--data-dir", str(tmp_path / "e"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not the Met Open Access CSV" in lines[0]
    assert not db_path(tmp_path / "e").exists()


def test_a_failing_write_stops_the_import_and_keeps_committed_batches(
    tmp_path: Path, conn_of: Any
) -> None:
    path = tmp_path / "MetObjects.csv"
    rows = list(met_rows(100, seed=8))
    write_csv(path, rows)
    poison = int(rows[70]["Object ID"])
    conn = conn_of(tmp_path / "data")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON csv_objects "
        f"WHEN NEW.object_id = {poison} BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
        import_csv(path, tmp_path / "data", batch_size=25)
    # batches before the failing one are committed, the failing one is rolled back
    assert conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone() == (50,)
    finished, counts = conn.execute("SELECT finished_at, counts_json FROM csv_imports").fetchone()
    assert finished is None
    assert json.loads(counts)["interrupted"] is True
    assert json.loads(counts)["inserted"] == 50

    result = run_cli("import-csv", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "disk says no" in result.stderr
