"""The CSV import's writer: a thread with its own sqlite3 connection that writes prepared batches,
one transaction each, while the main thread parses the next ones.

sqlite3 releases the GIL while SQLite steps and commits, so that work overlaps with parsing. The
Python parts of both threads still share the GIL, and sqlite3 takes the GIL back after every row
it steps, which a busy parsing thread can delay by up to a switch interval: the overlap is partial
(a writer process would avoid both; see docs/performance.md). At most `max_pending` batches wait
in the queue, so memory stays flat.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from met_harvester.csvimport.columns import TYPED_COLUMNS, TagCell
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


@dataclass(slots=True)
class BatchWork:
    """One prepared batch: rows to insert, rows to update (object_id last), tag links."""

    now: str
    inserts: list[tuple[object, ...]] = field(default_factory=list)
    updates: list[tuple[object, ...]] = field(default_factory=list)
    links: list[tuple[int, TagCell]] = field(default_factory=list)


@dataclass
class WrittenCounts:
    """What the writer has committed so far."""

    inserted: int = 0
    updated: int = 0
    tags_linked: int = 0


class BatchWriter(threading.Thread):
    """Writes `BatchWork`s to the mirror at `data_dir` on its own connection.

    Use `submit()` per batch and `close()` once; both re-raise an error the writer hit.
    """

    def __init__(self, data_dir: Path | str, *, max_pending: int = 2) -> None:
        super().__init__(name="csv-import-writer", daemon=True)
        self.data_dir = data_dir
        self.counts = WrittenCounts()
        self.cpu_seconds = 0.0  # CPU time of this thread (for the benchmark)
        self.error: BaseException | None = None
        self._queue: queue.Queue[BatchWork | None] = queue.Queue(maxsize=max_pending)
        self._tag_ids: dict[str, int] = {}
        self._tags_touched: set[str] = set()

    # --- the producer's side -------------------------------------------------------------------
    def submit(self, work: BatchWork | None) -> None:
        """Queue a batch (None: no more), waiting while the queue is full."""
        while True:
            self._raise_error()
            try:
                self._queue.put(work, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Let the queued batches be written, stop the thread, and re-raise its error if any."""
        if self.is_alive():
            try:
                self.submit(None)
            finally:
                self.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    # --- the writer's side ---------------------------------------------------------------------
    def run(self) -> None:
        """Write batches until None arrives (or an error stops the writer)."""
        began = time.thread_time()
        try:
            conn = connect_sync(self.data_dir, migrate=False)
            try:
                self._tag_ids = dict(conn.execute("SELECT term, tag_id FROM tags"))
                while (work := self._queue.get()) is not None:
                    self._write(conn, work)
            finally:
                conn.close()
        except BaseException as exc:  # handed to the producer by submit()/close()
            self.error = exc
        finally:
            self.cpu_seconds = time.thread_time() - began

    def _tag_id(self, conn: sqlite3.Connection, tag: TagCell) -> int:
        tag_id = self._tag_ids.get(tag.term)
        if tag_id is not None and tag.term in self._tags_touched:
            return tag_id
        self._tags_touched.add(tag.term)  # fill missing URLs once per import
        conn.execute(_UPSERT_TAG_SQL, (tag.term, tag.aat_url, tag.wikidata_url))
        if tag_id is None:
            (tag_id,) = conn.execute(
                "SELECT tag_id FROM tags WHERE term = ?", (tag.term,)
            ).fetchone()
            self._tag_ids[tag.term] = tag_id
        return tag_id

    def _write(self, conn: sqlite3.Connection, work: BatchWork) -> None:
        changed: Sequence[tuple[object]] = [(row[-1],) for row in work.updates]
        with conn:  # one transaction; any error rolls it back and stops the writer
            links = [(oid, self._tag_id(conn, tag)) for oid, tag in work.links]
            if work.inserts:
                conn.executemany(INSERT_SQL, work.inserts)
            if work.updates:
                conn.executemany(KEEP_VERSION_SQL, [(work.now, oid) for (oid,) in changed])
                conn.executemany(
                    "DELETE FROM object_tags WHERE object_id = ? AND source = 'csv'", changed
                )
                conn.executemany(UPDATE_SQL, work.updates)
            if links:
                conn.executemany(
                    "INSERT OR IGNORE INTO object_tags (object_id, tag_id, source) "
                    "VALUES (?, ?, 'csv')",
                    links,
                )
        self.counts.inserted += len(work.inserts)
        self.counts.updated += len(work.updates)
        self.counts.tags_linked += len(work.links)
