"""Streaming, checking reader for the Met's `MetObjects.csv`.

`MetCsvReader` opens a file (plain or gzip), refuses what is not the Met CSV before anything is
written (`NotMetCsvError`), and then yields each data row with its 1-based data-row number and the
physical line it starts on, or a `CsvIssue` for a malformed record. Memory stays constant: the csv
module parses a text stream line by line, and only the lines of the current record are kept (so
that a record broken by a stray quote can be re-read from its second line on).

Decoding is UTF-8 (a BOM is skipped) with `surrogateescape`: bytes that are not UTF-8 reach the
importer as lone surrogates, which it repairs and reports (see `importer.repair_encoding`).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, cast

from met_harvester.csvimport.columns import MET_COLUMNS, REQUIRED_COLUMNS

IssueKind = Literal[
    "malformed", "field_count", "bad_id", "duplicate_id", "encoding", "columns", "value"
]

_SNIFF_BYTES = 65536
_READ_BUFFER = 1 << 20
_TEXT_CHUNK = 1 << 16
_LINE_LIMIT = 1 << 22  # characters read as one line at most (bounded memory on junk)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (unzip it first)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xff\xfe", "UTF-16 text (convert it to UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (convert it to UTF-8)"),
)


class NotMetCsvError(ValueError):
    """The file is not a readable Met Open Access CSV; nothing was written."""


@dataclass(frozen=True)
class CsvIssue:
    """A problem with one row (or the header), located in the file.

    Attributes:
        row: 1-based data row (the header is not a data row; blank lines are not counted).
        line: 1-based physical line the row starts on (the header is line 1).
        kind: what kind of problem.
        message: what was wrong, in words.
        skipped: True when the row was not imported; False for a warning.
        end_line: the last physical line of the record, when it spans several.
    """

    row: int | None
    line: int | None
    kind: IssueKind
    message: str
    skipped: bool
    end_line: int | None = None

    def location(self) -> str:
        """`row 12 (line 15)`, `row 12 (lines 15-18)` or `header`."""
        if self.row is None:
            return "header (line 1)"
        if self.end_line is not None and self.end_line != self.line:
            return f"row {self.row} (lines {self.line}-{self.end_line})"
        return f"row {self.row} (line {self.line})"

    def __str__(self) -> str:
        suffix = "; row skipped" if self.skipped else ""
        return f"{self.location()}: {self.message}{suffix}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (for `csv_imports.errors_json`)."""
        return {
            "row": self.row,
            "line": self.line,
            "end_line": self.end_line,
            "kind": self.kind,
            "message": self.message,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class DataRow:
    """One well-formed record: its cells, 1-based data-row number and first physical line."""

    row: int
    line: int
    cells: list[str]


class _RecordLines:
    """The physical lines fed to the csv parser, numbered, with the lines of the current record
    kept so that a broken record can be pushed back and re-read from its second line."""

    def __init__(self, text: IO[str], first_line: int) -> None:
        self._text = text
        self._next_number = first_line
        self._pushed: deque[tuple[int, str]] = deque()
        self.record: list[tuple[int, str]] = []

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        if self._pushed:
            item = self._pushed.popleft()
        else:
            line = self._text.readline(_LINE_LIMIT)  # a longer "line" is not CSV anyway
            if not line:
                raise StopIteration
            item = (self._next_number, line)
            if line[-1] in "\n\r":  # not a piece of an over-long line
                self._next_number += 1
        self.record.append(item)
        return item[1]

    def push_back_tail(self) -> None:
        """Re-read the current record's lines after its first one (stray-quote recovery)."""
        self._pushed.extendleft(reversed(self.record[1:]))


def _sniff(path: Path, head: bytes) -> None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise NotMetCsvError(f"{path} is {what}, not the Met Open Access CSV")
    if b"\x00" in head:
        raise NotMetCsvError(f"{path} holds binary data (NUL bytes), not the Met Open Access CSV")
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start in (b"{", b"["):
        raise NotMetCsvError(f"{path} looks like JSON, not the Met Open Access CSV")
    if not head.strip():
        raise NotMetCsvError(f"{path} is empty, not the Met Open Access CSV")


def check_header(path: Path, header: list[str]) -> list[CsvIssue]:
    """Refuse a header that is not the Met CSV's; warn about extra and missing optional columns.

    Raises:
        NotMetCsvError: required columns missing, or a column named twice.
    """
    names = [name.strip() for name in header]
    present = [name for name in names if name in MET_COLUMNS]
    missing_required = [name for name in REQUIRED_COLUMNS if name not in names]
    if len(present) < 3:
        shown = ", ".join(repr(name) for name in names[:4]) + (", ..." if len(names) > 4 else "")
        raise NotMetCsvError(
            f"{path} is not the Met Open Access CSV: its header ({shown}) has "
            f"{len(present)} of the {len(MET_COLUMNS)} MetObjects.csv columns"
        )
    if missing_required:
        raise NotMetCsvError(
            f"{path}: header (line 1) lacks required column(s) "
            f"{', '.join(repr(name) for name in missing_required)}; nothing imported"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise NotMetCsvError(f"{path}: header (line 1) names column {repeated[0]!r} twice")
    issues: list[CsvIssue] = []
    extra = [name for name in names if name not in MET_COLUMNS]
    if extra:
        issues.append(
            CsvIssue(
                None,
                1,
                "columns",
                f"unexpected column(s) {', '.join(repr(n) for n in extra)}: kept in raw_row only",
                skipped=False,
            )
        )
    missing = [name for name in MET_COLUMNS if name not in names]
    if missing:
        issues.append(
            CsvIssue(
                None,
                1,
                "columns",
                f"Met column(s) {', '.join(repr(n) for n in missing)} absent: read as empty",
                skipped=False,
            )
        )
    return issues


class MetCsvReader:
    """Open and check a Met CSV; iterate it as `DataRow`s and `CsvIssue`s.

    Args:
        path: the CSV file, plain or gzip-compressed.

    Raises:
        NotMetCsvError: the file is missing, binary, JSON, or its header is not the Met CSV's.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotMetCsvError(f"{self.path}: no such file")
        self.bytes_total = self.path.stat().st_size
        # A large buffer means few read() system calls, each of which lets the writer thread
        # take the GIL for a whole switch interval (the "convoy effect").
        self._raw = open(self.path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - see close()
        try:
            self._text = self._open_text()
            self._lines = _RecordLines(self._text, first_line=1)
            self._reader = csv.reader(self._lines, strict=True)
            try:
                header = next(self._reader)
            except (csv.Error, StopIteration) as exc:
                raise NotMetCsvError(f"{self.path}: cannot read a CSV header ({exc})") from exc
            self.header_issues = check_header(self.path, header)
        except BaseException:
            self.close()
            raise
        self.header = [name.strip() for name in header]

    def _open_text(self) -> IO[str]:
        head = self._raw.read(_SNIFF_BYTES)
        self._raw.seek(0)
        binary: IO[bytes] = self._raw
        if head.startswith(b"\x1f\x8b"):
            binary = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw, mode="rb"))
            try:
                head = binary.read(_SNIFF_BYTES)
            except (OSError, EOFError) as exc:
                raise NotMetCsvError(f"{self.path}: broken gzip file ({exc})") from exc
            binary.seek(0)
        _sniff(self.path, head)
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        text._CHUNK_SIZE = _TEXT_CHUNK  # type: ignore[attr-defined]  # decode in larger steps
        return text

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read so far (compressed bytes for a gzip file)."""
        return self._raw.tell() if not self._raw.closed else self.bytes_total

    def __iter__(self) -> Iterator[DataRow | CsvIssue]:
        width = len(self.header)
        lines = self._lines
        reader = self._reader
        row = 0
        while True:
            lines.record.clear()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                yield self._broken(row, f"malformed CSV: {exc}", "malformed")
                continue
            if not cells:
                continue  # a blank line
            row += 1
            if len(cells) == width:
                yield DataRow(row, lines.record[0][0], cells)
            else:
                yield self._broken(
                    row, f"expected {width} fields, found {len(cells)}", "field_count"
                )

    def _broken(self, row: int, message: str, kind: IssueKind) -> CsvIssue:
        record = self._lines.record
        first = record[0][0] if record else None
        last = record[-1][0] if record else None
        if first is not None and last is not None and last > first:
            message += (
                f" (the record ran over lines {first}-{last}; re-reading from line {first + 1})"
            )
            self._lines.push_back_tail()
            last = first
        return CsvIssue(row, first, kind, message, skipped=True, end_line=last)

    def close(self) -> None:
        """Close the file."""
        text = getattr(self, "_text", None)
        if text is not None:
            text.close()
        self._raw.close()

    def __enter__(self) -> MetCsvReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
