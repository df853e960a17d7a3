"""The CSV import's writer: a child process with its own sqlite3 connection that types and writes
prepared batches, one transaction each, while the parent parses the next ones.

A process, not a thread: parsing and typing rows is Python work that holds the GIL, and so is
most of what sqlite3 does per row, so a writer thread mostly takes turns with the parser instead of
running beside it (measured: ~50 µs per row either way on 2 cores). With a process, the two use two
cores (see docs/performance.md).

The protocol, parent to child on the child's stdin: batches as length-prefixed pickles (a
`BatchWork` each), then end of file. A message cut short (the parent interrupted mid-write or
killed) is dropped whole: a batch is written only once it has fully arrived, in one transaction.
Child to parent on stdout, once at the end: a pickled `WriterResult` (counts committed, CPU
seconds, and the error that stopped the writer, if any). The child ignores SIGINT: on Ctrl-C the
parent stops sending, and the child commits what it has received and exits at end of file.
At most one batch waits in the pipe (the pipe blocks the parent), so memory stays flat.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import met_harvester
from met_harvester.csvimport.columns import TYPED_COLUMNS, TagCell, tags_json, type_cells
from met_harvester.db.connection import connect_sync

INSERT_SQL = (
    "INSERT INTO csv_objects (object_id, raw_row, row_sha256, metadata_date, first_seen_at, "
    f"imported_at, source_file, {', '.join(TYPED_COLUMNS)}, tags) "
    f"VALUES ({', '.join('?' * (8 + len(TYPED_COLUMNS)))})"
)
UPDATE_SQL = (
    "UPDATE csv_objects SET raw_row = ?, row_sha256 = ?, metadata_date = ?, imported_at = ?, "
    f"source_file = ?, {', '.join(f'{col} = ?' for col in TYPED_COLUMNS)}, tags = ? "
    "WHERE object_id = ?"
)
KEEP_VERSION_SQL = (
    "INSERT INTO csv_object_versions (object_id, raw_row, row_sha256, imported_at, replaced_at) "
    "SELECT object_id, raw_row, row_sha256, imported_at, ? FROM csv_objects WHERE object_id = ?"
)
_UPSERT_TAG_SQL = (
    "INSERT INTO tags (term, aat_url, wikidata_url) VALUES (?, ?, ?) "
    "ON CONFLICT(term) DO UPDATE SET "
    "aat_url = COALESCE(tags.aat_url, excluded.aat_url), "
    "wikidata_url = COALESCE(tags.wikidata_url, excluded.wikidata_url)"
)
_LENGTH = struct.Struct("<Q")
_CHILD_CODE = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from met_harvester.csvimport.writer import main; main()"
)


NewRow = tuple[int, str, str, tuple[str, ...]]
"""A row to write: object_id, raw_row, row_sha256 and its `TYPING_COLUMNS` cells."""


class WriterProcessError(RuntimeError):
    """The writer process stopped without saying why (killed, out of memory, ...)."""


@dataclass(slots=True)
class BatchWork:
    """One prepared batch: rows new to the table and rows that changed, from `source_file`."""

    now: str
    source_file: str
    inserts: list[NewRow] = field(default_factory=list)
    updates: list[NewRow] = field(default_factory=list)


@dataclass
class WrittenCounts:
    """What the writer has committed so far."""

    inserted: int = 0
    updated: int = 0
    tags_linked: int = 0


@dataclass
class WriterResult:
    """What the child reports when it stops."""

    counts: WrittenCounts
    cpu_seconds: float
    error: BaseException | None = None


class SqliteBatchWriter:
    """Writes `BatchWork`s on one connection, one transaction each; any error rolls the batch
    back."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.counts = WrittenCounts()
        self._tag_ids: dict[str, int] = dict(conn.execute("SELECT term, tag_id FROM tags"))
        self._tags_touched: set[str] = set()

    def _tag_id(self, tag: TagCell) -> int:
        tag_id = self._tag_ids.get(tag.term)
        if tag_id is not None and tag.term in self._tags_touched:
            return tag_id
        self._tags_touched.add(tag.term)  # fill missing URLs once per import
        self.conn.execute(_UPSERT_TAG_SQL, (tag.term, tag.aat_url, tag.wikidata_url))
        if tag_id is None:
            (tag_id,) = self.conn.execute(
                "SELECT tag_id FROM tags WHERE term = ?", (tag.term,)
            ).fetchone()
            self._tag_ids[tag.term] = tag_id
        return tag_id

    def write(self, work: BatchWork) -> None:
        """Type and write one batch in one transaction."""
        conn, now, source_file = self.conn, work.now, work.source_file
        links: list[tuple[int, int]] = []
        inserts: list[tuple[object, ...]] = []
        updates: list[tuple[object, ...]] = []
        with conn:  # the writer stops at the first error, so the tag cache needs no rollback
            for rows, is_update in ((work.inserts, False), (work.updates, True)):
                for object_id, raw_row, sha256, picked in rows:
                    typed = type_cells(picked)
                    links.extend((object_id, self._tag_id(tag)) for tag in typed.tags)
                    tags = tags_json(typed.tags)
                    if is_update:
                        updates.append(
                            (
                                raw_row,
                                sha256,
                                typed.metadata_date,
                                now,
                                source_file,
                                *typed.values,
                                tags,
                                object_id,
                            )
                        )
                    else:
                        inserts.append(
                            (
                                object_id,
                                raw_row,
                                sha256,
                                typed.metadata_date,
                                now,
                                now,
                                source_file,
                                *typed.values,
                                tags,
                            )
                        )
            if inserts:
                conn.executemany(INSERT_SQL, inserts)
            if updates:
                changed: Sequence[tuple[object]] = [(row[-1],) for row in updates]
                conn.executemany(KEEP_VERSION_SQL, [(now, oid) for (oid,) in changed])
                conn.executemany(
                    "DELETE FROM object_tags WHERE object_id = ? AND source = 'csv'", changed
                )
                conn.executemany(UPDATE_SQL, updates)
            if links:
                conn.executemany(
                    "INSERT OR IGNORE INTO object_tags (object_id, tag_id, source) "
                    "VALUES (?, ?, 'csv')",
                    links,
                )
        self.counts.inserted += len(inserts)
        self.counts.updated += len(updates)
        self.counts.tags_linked += len(links)


class WriterProcess:
    """The parent's side: starts the child for the mirror at `data_dir`.

    Use `submit()` per batch and `close()` once; both re-raise the error that stopped the child.
    """

    def __init__(self, data_dir: Path | str) -> None:
        # The package's own folder goes last on the child's path: found even when the parent
        # imported it from a source tree, never shadowing what the interpreter would import.
        package_root = str(Path(met_harvester.__file__).resolve().parents[1])
        self.counts = WrittenCounts()
        self.cpu_seconds = 0.0  # CPU time of the child (for the benchmark)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, str(data_dir), package_root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._closed = False

    def submit(self, work: BatchWork) -> None:
        """Send a batch; blocks while the child is still busy with the previous one."""
        payload = pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(_LENGTH.pack(len(payload)))
            stdin.write(payload)
            stdin.flush()
        except BrokenPipeError:  # the child stopped: close() raises its error
            self.close()
            raise WriterProcessError("the CSV writer process stopped without an error") from None

    def close(self) -> None:
        """Signal the end, wait for the child to commit what it received, re-raise its error."""
        if self._closed:
            return
        self._closed = True
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        try:
            result = pickle.load(stdout)
        except (EOFError, pickle.UnpicklingError) as exc:
            code = self._proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise WriterProcessError(
                f"the CSV writer process died ({how}) before reporting; the batches it "
                "committed are kept (run the import again)"
            ) from exc
        finally:
            stdout.close()
        self._proc.wait()
        self.counts = result.counts
        self.cpu_seconds = result.cpu_seconds
        if result.error is not None:
            raise result.error


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any unpicklable error is reported by its text
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def serve(data_dir: str, source: IO[bytes], sink: IO[bytes]) -> None:
    """The child's loop: write each batch read from `source`; report on `sink` at the end."""
    began = time.process_time()
    counts = WrittenCounts()
    error: BaseException | None = None
    try:
        conn = connect_sync(data_dir, migrate=False)
        try:
            writer = SqliteBatchWriter(conn)
            counts = writer.counts
            while (header := _read_exactly(source, _LENGTH.size)) is not None:
                payload = _read_exactly(source, _LENGTH.unpack(header)[0])
                if payload is None:
                    break  # cut short: the parent stopped mid-message
                writer.write(pickle.loads(payload))
        finally:
            conn.close()
    except Exception as exc:  # handed to the parent, which raises it
        error = _picklable(exc)
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nobody to tell
        pickle.dump(WriterResult(counts, time.process_time() - began, error), sink)
        sink.flush()


def main() -> None:
    """Entry point of the child: `python -c "<_CHILD_CODE>" DATA_DIR PACKAGE_ROOT`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints cannot break the protocol
    with sink:
        serve(sys.argv[1], sys.stdin.buffer, sink)
