"""Import the Met's Open Access CSV into `csv_objects`, seeding `tags`/`object_tags` (source 'csv').

The file is streamed (constant memory) and written in batches, one transaction per batch, by a
writer process with its own sqlite3 connection (`writer.WriterProcess`) while the next batch is
parsed. A row whose content hash is unchanged is not touched, so re-importing the same file
changes nothing; a changed row keeps its previous version in `csv_object_versions`
and has its csv tags replaced. Each run is recorded in `csv_imports` with its counts and issues.

Bad rows are reported with their location and skipped; the rest is imported:
- malformed records (stray quotes) and rows with the wrong number of fields;
- a missing, non-integer or non-positive `Object ID`;
- an `Object ID` repeated in the file: the first row wins, later ones are skipped;
- bytes that are not UTF-8: the row is imported with those bytes decoded as Windows-1252 (a
  superset of Latin-1; bytes it leaves undefined become U+FFFD) and reported as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from met_harvester.csvimport.columns import raw_row_encoder, typing_picker
from met_harvester.csvimport.reader import CsvIssue, DataRow, MetCsvReader
from met_harvester.csvimport.writer import BatchWork, NewRow, WriterProcess
from met_harvester.db.connection import connect_sync, utc_now

log = logging.getLogger("met_harvester.csvimport")

DEFAULT_BATCH_SIZE = 2000
MAX_STORED_ISSUES = 1000
"""Issues kept in `csv_imports.errors_json` (all are counted)."""

ProgressCallback = Callable[[int, int, int], None]
"""Called after each batch with (bytes_read, bytes_total, rows_read)."""

_SURROGATES = re.compile("[\udc80-\udcff]+")


def repair_encoding(cell: str) -> str:
    """Decode the bytes that were not UTF-8 (lone surrogates from `surrogateescape`) as
    Windows-1252, e.g. a Latin-1 `Caf\\xe9` -> `Café`."""
    return _SURROGATES.sub(
        lambda m: m.group().encode("utf-8", "surrogateescape").decode("cp1252", "replace"), cell
    )


@dataclass
class ImportReport:
    """What an import did. `rows_read` counts data rows, good and bad."""

    path: str
    import_id: int
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    bad_rows: int = 0
    repaired_rows: int = 0
    tags_linked: int = 0
    issue_count: int = 0
    issues_by_kind: Counter[str] = field(default_factory=Counter)
    issues: list[CsvIssue] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    cpu_main: float = 0.0  # CPU seconds of the parsing thread
    cpu_writer: float = 0.0  # CPU seconds of the writer process

    def counts(self) -> dict[str, int | float | bool]:
        """The counts stored in `csv_imports.counts_json`."""
        return {
            "rows_read": self.rows_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "bad_rows": self.bad_rows,
            "repaired_rows": self.repaired_rows,
            "tags_linked": self.tags_linked,
            "issues": self.issue_count,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }

    def summary(self) -> str:
        """One line for the terminal."""
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"rows read {self.rows_read}, inserted {self.inserted}, updated {self.updated}, "
            f"unchanged {self.unchanged}, bad rows {self.bad_rows}"
        )
        if self.repaired_rows:
            text += f", re-decoded rows {self.repaired_rows}"
        return text + f" ({self.seconds:.1f} s, {rate:,.0f} rows/s)"


class _IdSet:
    """Object ids seen in this file: a bitmap (ids are < 1M in practice), a set above 2**28."""

    _BITMAP_LIMIT = 1 << 28

    def __init__(self) -> None:
        self._bits = bytearray()
        self._big: set[int] = set()

    def add(self, object_id: int) -> bool:
        """Add an id; False when it was already there."""
        if object_id >= self._BITMAP_LIMIT:
            if object_id in self._big:
                return False
            self._big.add(object_id)
            return True
        byte, mask = object_id >> 3, 1 << (object_id & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1, 2 * len(self._bits)) - len(self._bits)))
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        return True


class CsvImporter:
    """One import of one file into one database (see `import_csv`).

    This process parses and checks rows and compares them with what is stored (through `conn`);
    a `WriterProcess` types and writes each batch of new and changed rows in one transaction.
    """

    def __init__(
        self,
        reader: MetCsvReader,
        conn: sqlite3.Connection,
        data_dir: Path | str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
        on_issue: Callable[[CsvIssue], None] | None = None,
    ) -> None:
        self.reader = reader
        self.conn = conn
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.progress = progress
        self.on_issue = on_issue
        self.pick = typing_picker(reader.header)
        self.encode_row = raw_row_encoder(reader.header)
        self.id_column = reader.header.index("Object ID")
        self.source_file = str(reader.path.resolve())
        self.seen = _IdSet()
        with conn:
            cursor = conn.execute(
                "INSERT INTO csv_imports (path, started_at) VALUES (?, ?)",
                (self.source_file, utc_now()),
            )
        assert cursor.lastrowid is not None
        self.report = ImportReport(path=self.source_file, import_id=cursor.lastrowid)

    # --- issues ---------------------------------------------------------------------------
    def _issue(self, issue: CsvIssue) -> None:
        report = self.report
        report.issue_count += 1
        report.issues_by_kind[issue.kind] += 1
        if issue.skipped:
            report.bad_rows += 1
        if len(report.issues) < MAX_STORED_ISSUES:
            report.issues.append(issue)
        log.info("csv %s: %s", report.path, issue)
        if self.on_issue is not None:
            self.on_issue(issue)

    # --- rows -----------------------------------------------------------------------------
    def _check_row(self, data: DataRow) -> NewRow | None:
        cells = data.cells
        id_cell = cells[self.id_column].strip()
        try:
            object_id = int(id_cell)
        except ValueError:
            object_id = 0
        if object_id <= 0 or not id_cell.isascii():
            self._issue(
                CsvIssue(
                    data.row,
                    data.line,
                    "bad_id",
                    f"Object ID {id_cell!r} is not a positive integer",
                    skipped=True,
                )
            )
            return None
        if not self.seen.add(object_id):
            self._issue(
                CsvIssue(
                    data.row,
                    data.line,
                    "duplicate_id",
                    f"Object ID {object_id} already appeared in an earlier row; the first is kept",
                    skipped=True,
                )
            )
            return None
        raw_row = self.encode_row(cells)
        try:
            encoded = raw_row.encode("utf-8")
        except UnicodeEncodeError:
            bad_columns = [
                name
                for name, cell in zip(self.reader.header, cells, strict=True)
                if _SURROGATES.search(cell)
            ]
            cells = [repair_encoding(cell) for cell in cells]
            raw_row = self.encode_row(cells)
            encoded = raw_row.encode("utf-8")
            self.report.repaired_rows += 1
            self._issue(
                CsvIssue(
                    data.row,
                    data.line,
                    "encoding",
                    f"bytes that are not UTF-8 in {', '.join(map(repr, bad_columns))}: "
                    "decoded as Windows-1252 and imported",
                    skipped=False,
                )
            )
        return object_id, raw_row, hashlib.sha256(encoded).hexdigest(), self.pick(cells)

    def _prepare(self, batch: Sequence[NewRow]) -> BatchWork:
        """Compare a batch with the stored rows; keep the new and changed ones (the writer
        types them)."""
        marks = ",".join("?" * len(batch))
        existing = dict(
            self.conn.execute(
                f"SELECT object_id, row_sha256 FROM csv_objects WHERE object_id IN ({marks})",
                [item[0] for item in batch],
            )
        )
        work = BatchWork(utc_now(), self.source_file)
        for item in batch:
            old_sha = existing.get(item[0])
            if old_sha is None:
                work.inserts.append(item)
            elif old_sha != item[2]:
                work.updates.append(item)
        self.report.unchanged += len(batch) - len(work.inserts) - len(work.updates)
        return work

    # --- the run --------------------------------------------------------------------------
    def run(self) -> ImportReport:
        """Read the whole file, write it in batches, and record the run in `csv_imports`."""
        report = self.report
        for issue in self.reader.header_issues:
            self._issue(issue)
        began = time.perf_counter()
        began_cpu = time.thread_time()
        writer = WriterProcess(self.data_dir)  # started before the first batch is parsed
        batch: list[NewRow] = []
        try:
            try:
                for item in self.reader:
                    report.rows_read += 1
                    if isinstance(item, CsvIssue):
                        self._issue(item)
                        continue
                    pending = self._check_row(item)
                    if pending is None:
                        continue
                    batch.append(pending)
                    if len(batch) >= self.batch_size:
                        writer.submit(self._prepare(batch))
                        batch = []
                        if self.progress is not None:
                            self.progress(
                                self.reader.bytes_read, self.reader.bytes_total, report.rows_read
                            )
                if batch:
                    writer.submit(self._prepare(batch))
            finally:
                writer.close()  # waits for the queued batches to be committed
        except BaseException:
            report.interrupted = True
            raise
        finally:
            report.inserted = writer.counts.inserted
            report.updated = writer.counts.updated
            report.tags_linked = writer.counts.tags_linked
            report.seconds = time.perf_counter() - began
            report.cpu_main = time.thread_time() - began_cpu
            report.cpu_writer = writer.cpu_seconds
            self._record()
        if self.progress is not None:
            self.progress(self.reader.bytes_total, self.reader.bytes_total, report.rows_read)
        return report

    def _record(self) -> None:
        report = self.report
        with self.conn:
            self.conn.execute(
                "UPDATE csv_imports SET finished_at = ?, counts_json = ?, errors_json = ? "
                "WHERE import_id = ?",
                (
                    None if report.interrupted else utc_now(),
                    json.dumps(report.counts() | {"by_kind": dict(report.issues_by_kind)}),
                    json.dumps([issue.to_dict() for issue in report.issues], ensure_ascii=False),
                    report.import_id,
                ),
            )


def import_csv(
    path: Path | str,
    data_dir: Path | str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    on_issue: Callable[[CsvIssue], None] | None = None,
) -> ImportReport:
    """Import a Met Open Access CSV into the mirror at `data_dir`.

    Args:
        path: MetObjects.csv (plain or gzip).
        data_dir: the data dir; the DB `<data-dir>/met.sqlite` is created if absent.
        batch_size: rows per transaction.
        progress: called after each batch with (bytes_read, bytes_total, rows_read).
        on_issue: called with each located issue as it is found.

    Returns:
        The import's report (also stored in `csv_imports`).

    Raises:
        NotMetCsvError: the file is not the Met CSV; raised before the DB is opened.
    """
    with MetCsvReader(path) as reader:
        conn = connect_sync(data_dir)
        try:
            importer = CsvImporter(
                reader, conn, data_dir, batch_size=batch_size, progress=progress, on_issue=on_issue
            )
            return importer.run()
        finally:
            conn.close()
