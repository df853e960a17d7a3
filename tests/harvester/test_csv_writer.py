"""The CSV import's pieces that trade plainness for speed: the raw_row encoder (must equal
`json.dumps`), the typing of picked cells, and the writer process (its protocol, errors, and
Ctrl-C, on real SQLite files and real processes)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from csvgen import met_rows, write_met_csv

from met_harvester.csvimport.columns import (
    MET_COLUMNS,
    TYPED_COLUMNS,
    raw_row_encoder,
    type_cells,
    typing_picker,
)
from met_harvester.csvimport.writer import _CHILD_CODE, BatchWork, WriterProcess
from met_harvester.db.connection import connect_sync

TRICKY = ['say "hi"', "back\\slash", "two\r\nlines", "tab\there", "\x01", "100%", "%s", ""]
TRICKY += ["\u2028 line separator", "é ü 漢字", "\x7f", "\\", '"']


@pytest.mark.parametrize(
    "header",
    [list(MET_COLUMNS), ["Object ID", "Ti%tle", 'say "x"', "Title"], ["Title"], ["Object ID"]],
)
def test_raw_row_encoder_equals_json_dumps_for_every_kind_of_cell(header: list[str]) -> None:
    encode = raw_row_encoder(header)
    for text in TRICKY:
        for cells in ([text] * len(header), [text] + [""] * (len(header) - 1)):
            expected = json.dumps(dict(zip(header, cells, strict=True)), ensure_ascii=False)
            assert encode(cells) == expected, (header[:2], text)
        for position in range(len(header)):
            cells = ["plain"] * len(header)
            cells[position] = text
            expected = json.dumps(dict(zip(header, cells, strict=True)), ensure_ascii=False)
            assert encode(cells) == expected


def test_raw_row_encoder_on_generated_rows() -> None:
    encode = raw_row_encoder(MET_COLUMNS)
    for row in met_rows(300, seed=3):
        cells = [row[name] for name in MET_COLUMNS]
        assert encode(cells) == json.dumps(row, ensure_ascii=False)


def test_type_cells_reads_picked_cells_and_missing_columns_as_empty() -> None:
    row = next(met_rows(1, seed=5))
    row |= {"Is Public Domain": "True", "Object Begin Date": "-664", "Tags": "Cats|Dogs|Cats"}
    row |= {"Artist Display Name": "Ann|Bo", "Metadata Date": " 2024-01-01 "}
    cells = [row[name] for name in MET_COLUMNS]
    typed = type_cells(typing_picker(MET_COLUMNS)(cells))
    values = dict(zip(TYPED_COLUMNS, typed.values, strict=True))
    assert values["is_public_domain"] == 1 and values["object_begin_date"] == -664
    assert values["artist_display_name"] == "Ann"
    assert [tag.term for tag in typed.tags] == ["Cats", "Dogs"]
    assert typed.metadata_date == "2024-01-01"
    header = [name for name in MET_COLUMNS if name not in ("Tags", "Culture")]
    typed = type_cells(typing_picker(header)([row[name] for name in header]))
    assert (
        typed.tags == [] and dict(zip(TYPED_COLUMNS, typed.values, strict=True))["culture"] is None
    )


def _work(object_ids: range) -> BatchWork:
    picked = tuple("" for _ in range(18))
    rows = [(oid, "{}", f"sha-{oid}", picked) for oid in object_ids]
    return BatchWork("2026-01-01T00:00:00.000Z", "test.csv", inserts=rows)


def test_writer_process_commits_batches_and_reports_its_counts(tmp_path: Path) -> None:
    connect_sync(tmp_path).close()  # the parent migrates; the writer does not
    writer = WriterProcess(tmp_path)
    writer.submit(_work(range(1, 11)))
    writer.submit(_work(range(11, 16)))
    writer.close()
    assert writer.counts.inserted == 15 and writer.cpu_seconds > 0
    writer.close()  # closing twice is harmless
    conn = connect_sync(tmp_path)
    assert conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone() == (15,)
    conn.close()


def test_writer_process_error_reaches_the_parent_with_its_type(tmp_path: Path) -> None:
    connect_sync(tmp_path).close()
    writer = WriterProcess(tmp_path)
    writer.submit(_work(range(1, 4)))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        writer.submit(_work(range(3, 6)))  # 3 again: the second batch fails and rolls back
        for _ in range(200):  # the child may still be reading: later submits see it stopped
            writer.submit(_work(range(100, 101)))
            time.sleep(0.01)
        writer.close()
    assert writer.counts.inserted == 3


def test_a_message_cut_short_is_dropped_whole(tmp_path: Path) -> None:
    """The parent dies mid-message: the child writes the batches it fully received, no more."""
    connect_sync(tmp_path).close()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE, str(tmp_path), "unused"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    for work in (_work(range(1, 6)), _work(range(6, 11))):
        payload = pickle.dumps(work)
        child.stdin.write(struct.pack("<Q", len(payload)))
        child.stdin.write(payload if work.inserts[0][0] == 1 else payload[: len(payload) // 2])
    child.stdin.close()
    result = pickle.load(child.stdout)
    assert child.wait(timeout=30) == 0
    assert result.error is None and result.counts.inserted == 5
    conn = connect_sync(tmp_path)
    assert conn.execute("SELECT MAX(object_id), COUNT(*) FROM csv_objects").fetchone() == (5, 5)
    conn.close()


def start_import(tmp_path: Path, rows: int) -> tuple[subprocess.Popen[str], sqlite3.Connection]:
    """`met-harvester import-csv` of a generated file in a process group of its own, returned
    once its first batch is committed, with a connection to its database."""
    path = tmp_path / "MetObjects.csv"
    write_met_csv(path, rows, seed=4)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "met_harvester", "import-csv", str(path), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's Ctrl-C hits
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            conn = sqlite3.connect(data / "met.sqlite", timeout=30)
            if conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone()[0] > 0:
                return proc, conn
            conn.close()
        except sqlite3.OperationalError:
            continue  # not created yet
    proc.kill()
    raise AssertionError("the import wrote nothing within 60 s")


def import_again(tmp_path: Path) -> str:
    """Run the import of `start_import` again, to the end; its summary line."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "met_harvester",
            "import-csv",
            str(tmp_path / "MetObjects.csv"),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def writers_of(data: Path) -> list[str]:
    return [cmd for cmd, _ in processes() if "csvimport.writer" in cmd and str(data) in cmd]


def test_ctrl_c_keeps_committed_batches_and_leaves_no_writer_behind(tmp_path: Path) -> None:
    proc, conn = start_import(tmp_path, 60_000)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr.strip().splitlines()[-1]
    count = conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone()[0]
    assert 0 < count < 60_000 and count % 2000 == 0  # whole batches only
    counts = json.loads(conn.execute("SELECT counts_json FROM csv_imports").fetchone()[0])
    assert counts["interrupted"] is True and counts["inserted"] == count
    assert not writers_of(tmp_path / "data")
    conn.close()


def test_a_killed_parent_leaves_whole_batches_and_the_writer_exits(tmp_path: Path) -> None:
    proc, conn = start_import(tmp_path, 60_000)
    proc.kill()  # SIGKILL to the parent only: the writer sees end of file
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while writers_of(tmp_path / "data") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not writers_of(tmp_path / "data")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    count = conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone()[0]
    assert 0 < count <= 60_000 and count % 2000 == 0
    conn.close()
    assert f"inserted {60_000 - count}, updated 0, unchanged {count}" in import_again(tmp_path)


def processes() -> list[tuple[str, int]]:
    """(command line, pid) of this machine's processes (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        found.append((cmd, int(entry.parent.name)))
    return found


def test_a_killed_writer_gives_one_clear_line_and_keeps_whole_batches(tmp_path: Path) -> None:
    proc, conn = start_import(tmp_path, 60_000)
    data = tmp_path / "data"
    (writer_pid,) = [
        pid for cmd, pid in processes() if "csvimport.writer" in cmd and str(data) in cmd
    ]
    os.kill(writer_pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 1, stderr
    assert len(lines) == 1 and "writer process died (killed by signal 9)" in lines[0], stderr
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    count = conn.execute("SELECT COUNT(*) FROM csv_objects").fetchone()[0]
    assert count % 2000 == 0
    conn.close()
    assert f"inserted {60_000 - count}, updated 0, unchanged {count}" in import_again(tmp_path)
