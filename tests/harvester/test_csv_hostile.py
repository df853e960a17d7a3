"""Hostile CSVs: each problem is reported with its data row and physical line, the good rows are
imported, and a file that is not the Met CSV is refused before anything is written."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from csvgen import met_rows
from PIL import Image

from met_harvester.csvimport import CsvIssue, ImportReport, NotMetCsvError, import_csv
from met_harvester.csvimport.columns import MET_COLUMNS
from met_harvester.db.connection import db_path

WIDTH = len(MET_COLUMNS)


def plain_rows(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """Generated rows on one physical line each, with no quote characters."""
    rows = []
    for row in met_rows(n, seed=seed):
        row["Dimensions"] = row["Dimensions"].replace("\r\n", " ")
        row["Title"] = f"Title {row['Object ID']}, plain"
        rows.append(row)
    return rows


def line_of(cells: Sequence[str] | dict[str, str], header: Sequence[str] = MET_COLUMNS) -> str:
    """One row as the csv module writes it (quoted where needed), ending in a newline."""
    values = [cells.get(c, "") for c in header] if isinstance(cells, dict) else list(cells)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def write_lines(path: Path, lines: Sequence[str], *, header: Sequence[str] = MET_COLUMNS) -> Path:
    path.write_text(line_of(list(header)) + "".join(lines), encoding="utf-8", newline="")
    return path


def imported_ids(data_dir: Path) -> list[int]:
    with sqlite3.connect(db_path(data_dir)) as conn:
        return [r[0] for r in conn.execute("SELECT object_id FROM csv_objects ORDER BY 1")]


def located(report: ImportReport) -> list[tuple[int | None, int | None, str, bool]]:
    return [(i.row, i.line, i.kind, i.skipped) for i in report.issues]


def ids(rows: Sequence[dict[str, str]]) -> list[int]:
    return sorted(int(r["Object ID"]) for r in rows)


def test_rows_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    rows = plain_rows(5)
    lines = [line_of(r) for r in rows]
    lines[2] = lines[2].rstrip("\n") + ",extra\n"
    lines[3] = line_of([rows[3][c] for c in MET_COLUMNS[:44]])
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert located(report) == [(3, 4, "field_count", True), (4, 5, "field_count", True)]
    assert "expected 54 fields, found 55" in str(report.issues[0])
    assert str(report.issues[1]).startswith("row 4 (line 5): expected 54 fields, found 44")
    assert (report.rows_read, report.inserted, report.bad_rows) == (5, 3, 2)
    assert imported_ids(tmp_path / "d") == ids([rows[0], rows[1], rows[4]])


def test_stray_quote_inside_a_quoted_cell(tmp_path: Path) -> None:
    rows = plain_rows(4)
    lines = [line_of(r) for r in rows]
    cells = [rows[1][c] for c in MET_COLUMNS]
    cells[MET_COLUMNS.index("Title")] = '"The "Blue" Boy"'  # quotes not doubled
    lines[1] = ",".join(cells) + "\n"
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert located(report) == [(2, 3, "malformed", True)]
    assert "malformed CSV" in report.issues[0].message
    assert imported_ids(tmp_path / "d") == ids([rows[0], rows[2], rows[3]])


def test_unterminated_quote_is_recovered_from_the_next_line(tmp_path: Path) -> None:
    rows = plain_rows(5)
    lines = [line_of(r) for r in rows]
    cells = [rows[1][c] for c in MET_COLUMNS]
    cells[MET_COLUMNS.index("Title")] = '"Never closed'
    lines[1] = ",".join(cells) + "\n"
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert located(report) == [(2, 3, "malformed", True)]
    # it ran on to the next quote (row 3's quoted title) before the parser saw the damage
    assert "lines 3-4; re-reading from line 4" in report.issues[0].message
    assert (report.rows_read, report.inserted) == (5, 4)
    assert imported_ids(tmp_path / "d") == ids([r for i, r in enumerate(rows) if i != 1])


def test_embedded_newlines_import_and_keep_later_line_numbers_right(tmp_path: Path) -> None:
    rows = plain_rows(4)
    rows[0]["Dimensions"] = "H. 10 cm\r\nW. 4 cm\r\nD. 2 cm"  # lines 2-4
    rows[1]["Title"] = 'Quoted, "with" a\nnewline'  # lines 5-6
    lines = [line_of(r) for r in rows]
    lines[2] = lines[2].rstrip("\n") + ",extra\n"  # row 3 is on line 7
    lines.insert(3, "\n")  # a blank line (line 8) is not a row
    lines[4] = lines[4].rstrip("\n") + ",x,y\n"  # row 4 on line 9
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert located(report) == [(3, 7, "field_count", True), (4, 9, "field_count", True)]
    with sqlite3.connect(db_path(tmp_path / "d")) as conn:
        raw = dict(conn.execute("SELECT object_id, raw_row FROM csv_objects"))
    assert json.loads(raw[int(rows[0]["Object ID"])])["Dimensions"] == rows[0]["Dimensions"]
    assert json.loads(raw[int(rows[1]["Object ID"])])["Title"] == rows[1]["Title"]


def test_bom_and_crlf_line_ends(tmp_path: Path) -> None:
    rows = plain_rows(3)
    text = "\ufeff" + line_of(list(MET_COLUMNS)) + "".join(line_of(r) for r in rows)
    path = tmp_path / "f.csv"
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    report = import_csv(path, tmp_path / "d")
    assert (report.inserted, report.issue_count) == (3, 0)


def test_missing_required_column_is_refused_before_writing(tmp_path: Path) -> None:
    header = [c for c in MET_COLUMNS if c != "Object ID"]
    path = write_lines(
        tmp_path / "f.csv", [line_of(r, header) for r in plain_rows(3)], header=header
    )
    with pytest.raises(NotMetCsvError, match="lacks required column\\(s\\) 'Object ID'"):
        import_csv(path, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_extra_and_missing_optional_columns_warn_and_import(tmp_path: Path) -> None:
    header = [c for c in MET_COLUMNS if c not in ("Tags Wikidata URL", "Gallery Number")]
    header.append("Curator Notes")
    rows = plain_rows(3)
    for row in rows:
        row["Curator Notes"] = "note"
    path = write_lines(tmp_path / "f.csv", [line_of(r, header) for r in rows], header=header)
    report = import_csv(path, tmp_path / "d")
    assert report.inserted == 3 and report.bad_rows == 0
    messages = [str(i) for i in report.issues]
    assert len(messages) == 2 and all(m.startswith("header (line 1)") for m in messages)
    assert "'Curator Notes'" in messages[0] and "'Gallery Number'" in messages[1]
    with sqlite3.connect(db_path(tmp_path / "d")) as conn:
        raw = json.loads(conn.execute("SELECT raw_row FROM csv_objects LIMIT 1").fetchone()[0])
        urls = conn.execute("SELECT COUNT(*) FROM tags WHERE wikidata_url IS NOT NULL").fetchone()
    assert raw["Curator Notes"] == "note" and "Gallery Number" not in raw
    assert urls == (0,)


def test_latin1_bytes_in_a_utf8_file_are_decoded_and_reported(tmp_path: Path) -> None:
    rows = plain_rows(3)
    rows[0]["Artist Display Name"] = "Albrecht Dürer"  # real UTF-8
    body = [line_of(r).encode("utf-8") for r in rows]
    body[1] = body[1].replace(b"plain", "Café crème".encode("latin-1"))
    path = tmp_path / "f.csv"
    path.write_bytes(line_of(list(MET_COLUMNS)).encode() + b"".join(body))
    report = import_csv(path, tmp_path / "d")
    assert located(report) == [(2, 3, "encoding", False)]
    assert "'Title'" in report.issues[0].message and "Windows-1252" in report.issues[0].message
    assert (report.inserted, report.repaired_rows) == (3, 1)
    with sqlite3.connect(db_path(tmp_path / "d")) as conn:
        titles = dict(conn.execute("SELECT object_id, title FROM csv_objects"))
        names = dict(conn.execute("SELECT object_id, artist_display_name FROM csv_objects"))
    assert titles[int(rows[1]["Object ID"])] == f"Title {rows[1]['Object ID']}, Café crème"
    assert names[int(rows[0]["Object ID"])] == "Albrecht Dürer"


def test_a_whole_latin1_file(tmp_path: Path) -> None:
    rows = plain_rows(20, seed=5)
    for row in rows:
        row["Period"] = ""
        row["Title"] = "Façade, Köln"
    text = line_of(list(MET_COLUMNS)) + "".join(line_of(r) for r in rows)
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    report = import_csv(path, tmp_path / "d")
    assert report.inserted == 20 and report.repaired_rows == 20 and report.bad_rows == 0
    assert [i.line for i in report.issues] == list(range(2, 22))
    with sqlite3.connect(db_path(tmp_path / "d")) as conn:
        assert {t for (t,) in conn.execute("SELECT title FROM csv_objects")} == {"Façade, Köln"}


@pytest.mark.parametrize("bad_id", ["abc", "", "12.5", "-3", "0", "٣"])
def test_object_id_that_is_not_a_positive_integer(tmp_path: Path, bad_id: str) -> None:
    rows = plain_rows(3)
    rows[1]["Object ID"] = bad_id
    report = import_csv(write_lines(tmp_path / "f.csv", [line_of(r) for r in rows]), tmp_path / "d")
    assert located(report) == [(2, 3, "bad_id", True)]
    assert repr(bad_id) in report.issues[0].message
    assert imported_ids(tmp_path / "d") == ids([rows[0], rows[2]])


def test_duplicate_ids_keep_the_first_row(tmp_path: Path) -> None:
    rows = plain_rows(4)
    rows[3]["Object ID"] = rows[1]["Object ID"]
    rows[3]["Title"] = "the duplicate"
    report = import_csv(write_lines(tmp_path / "f.csv", [line_of(r) for r in rows]), tmp_path / "d")
    assert located(report) == [(4, 5, "duplicate_id", True)]
    assert report.inserted == 3
    with sqlite3.connect(db_path(tmp_path / "d")) as conn:
        title = conn.execute(
            "SELECT title FROM csv_objects WHERE object_id = ?", (int(rows[1]["Object ID"]),)
        ).fetchone()
        (stored,) = conn.execute("SELECT errors_json FROM csv_imports").fetchone()
    assert title == (rows[1]["Title"],)
    assert json.loads(stored)[0] | {"message": ""} == {
        "row": 4,
        "line": 5,
        "end_line": None,
        "kind": "duplicate_id",
        "message": "",
        "skipped": True,
    }


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


NOT_MET = {
    "jpeg": (_jpeg, "a JPEG image"),
    "json": (lambda: b'{"total": 1, "objectIDs": [1]}', "looks like JSON"),
    "other-csv": (lambda: b"name,age,city\nAda,36,London\n", "0 of the 54"),
    "empty": (lambda: b"", "is empty"),
    "utf16": (lambda: line_of(list(MET_COLUMNS)).encode("utf-16"), "UTF-16"),
    "binary": (lambda: bytes(range(256)) * 4, "binary data"),
}


@pytest.mark.parametrize("kind", sorted(NOT_MET))
def test_a_file_that_is_not_the_met_csv_is_refused_before_writing(
    tmp_path: Path, kind: str
) -> None:
    make, expected = NOT_MET[kind]
    path = tmp_path / "MetObjects.csv"
    path.write_bytes(make())
    with pytest.raises(NotMetCsvError, match=expected) as caught:
        import_csv(path, tmp_path / "d")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "d").exists()


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotMetCsvError, match="no such file"):
        import_csv(tmp_path / "absent.csv", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_issue_text_names_row_and_lines() -> None:
    issue = CsvIssue(7, 12, "malformed", "bad", skipped=True, end_line=14)
    assert str(issue) == "row 7 (lines 12-14): bad; row skipped"
    assert str(CsvIssue(None, 1, "columns", "extra", skipped=False)) == "header (line 1): extra"


@pytest.mark.parametrize("n_rows", [10, 400])
def test_unterminated_quote_running_to_the_end_of_the_file(tmp_path: Path, n_rows: int) -> None:
    """No later quote closes it: the parser hits the end (or, past 128 KiB, the field limit)."""
    rows = [{k: v.replace(",", "") for k, v in r.items()} for r in plain_rows(n_rows, seed=7)]
    lines = [line_of(r) for r in rows]
    assert '"' not in "".join(lines)
    lines[1] = lines[1].replace("Title ", '"Title ', 1)
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert [(i.row, i.line, i.kind) for i in report.issues] == [(2, 3, "malformed")]
    assert report.inserted == n_rows - 1
    assert imported_ids(tmp_path / "d") == ids([r for i, r in enumerate(rows) if i != 1])


def test_an_endless_line_of_junk_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    rows = plain_rows(3)
    lines = [line_of(rows[0]), "x" * 5_000_000 + "\n", line_of(rows[1]), line_of(rows[2])]
    report = import_csv(write_lines(tmp_path / "f.csv", lines), tmp_path / "d")
    assert {(i.line, i.kind) for i in report.issues} == {(3, "malformed")}
    assert all("field larger than field limit" in i.message for i in report.issues)
    assert imported_ids(tmp_path / "d") == ids(rows)
    assert report.rows_read == 3 + len(report.issues)
