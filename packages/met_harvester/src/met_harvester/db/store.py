"""`save_*` and friends: plain SQL on the one writer connection (aiosqlite), no fetching here.

Each `save_*` call writes a whole batch with a handful of `executemany` statements and leaves the
transaction open; the caller commits once per batch (`await db.commit()`), so a batch lands whole
or not at all. Times are ISO-8601 UTC strings (`utc_now()`), which sort as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

import aiosqlite

from met_harvester.db.connection import iso_utc, parse_iso, utc_now
from met_harvester.models import MetObject, canonical_json, content_sha256

RATE_KEYS = {"learned": "api.learned_rate", "current": "api.current_rate", "ceiling": "api.ceiling"}
"""harvester_state keys of the API request rate (requests/s), written by sync, read by status."""
LISTING_TOTAL_KEY = "api.listing_total"
"""harvester_state key: how many ids the last full listing had."""
FAILURE_RETRY_BASE_SECONDS = 60.0
"""First retry of a failed fetch after this long; doubles per attempt."""
FAILURE_RETRY_MAX_SECONDS = 7 * 24 * 3600.0
"""Longest wait between retries of a failed fetch."""


@dataclass(frozen=True)
class FetchedRecord:
    """A validated record with the body exactly as received."""

    record: MetObject
    data: dict[str, Any]
    body: str

    @property
    def object_id(self) -> int:
        """The record's objectID."""
        return self.record.object_id

    @cached_property
    def sha256(self) -> str:
        """sha256 of the record's canonical JSON."""
        return content_sha256(self.data)


@dataclass(frozen=True)
class MissingObject:
    """An id the API answered 404 for ("ObjectID not found" / "Not a valid object")."""

    object_id: int
    http_status: int
    message: str | None = None


@dataclass(frozen=True)
class FailedFetch:
    """A fetch that failed after the client's retries (network, 5xx, block, bad JSON)."""

    object_id: int
    status: int | None
    error: str


@dataclass(frozen=True)
class QuarantinedRecord:
    """A body that arrived but failed validation."""

    object_id: int
    raw_body: str
    error: str
    http_status: int | None = None


@dataclass
class SaveCounts:
    """What `save_objects` did with a batch."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0


def _json_ids(ids: Iterable[int]) -> str:
    return json.dumps(list(ids))


def _blank_to_none(value: str | None) -> str | None:
    return value if value else None


def _bool_to_int(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _object_row(item: FetchedRecord, now: str) -> tuple[Any, ...]:
    r = item.record
    return (
        r.object_id,
        item.body,
        item.sha256,
        r.metadata_date,
        now,
        now,
        _blank_to_none(r.department),
        _blank_to_none(r.classification),
        _blank_to_none(r.object_name),
        _blank_to_none(r.title),
        _blank_to_none(r.culture),
        _blank_to_none(r.period),
        _bool_to_int(r.is_public_domain),
        _bool_to_int(r.is_highlight),
        _blank_to_none(r.artist_display_name),
        _blank_to_none(r.artist_gender),
        r.object_begin_date,
        r.object_end_date,
        _blank_to_none(r.primary_image),
        _blank_to_none(r.primary_image_small),
        json.dumps(r.additional_images, ensure_ascii=False),
        _blank_to_none(r.accession_year),
        _blank_to_none(r.accession_number),
    )


_UPSERT_OBJECT = """
INSERT INTO objects (
    object_id, raw_json, content_sha256, metadata_date, first_seen_at, fetched_at,
    department, classification, object_name, title, culture, period, is_public_domain,
    is_highlight, artist_display_name, artist_gender, object_begin_date, object_end_date,
    primary_image, primary_image_small, additional_images, accession_year, accession_number
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(object_id) DO UPDATE SET
    raw_json = excluded.raw_json, content_sha256 = excluded.content_sha256,
    metadata_date = excluded.metadata_date, fetched_at = excluded.fetched_at, withdrawn_at = NULL,
    department = excluded.department, classification = excluded.classification,
    object_name = excluded.object_name, title = excluded.title, culture = excluded.culture,
    period = excluded.period, is_public_domain = excluded.is_public_domain,
    is_highlight = excluded.is_highlight, artist_display_name = excluded.artist_display_name,
    artist_gender = excluded.artist_gender, object_begin_date = excluded.object_begin_date,
    object_end_date = excluded.object_end_date, primary_image = excluded.primary_image,
    primary_image_small = excluded.primary_image_small,
    additional_images = excluded.additional_images, accession_year = excluded.accession_year,
    accession_number = excluded.accession_number
"""

_SAVE_VERSION = """
INSERT INTO object_versions
    (object_id, raw_json, content_sha256, metadata_date, fetched_at, replaced_at, source)
SELECT object_id, raw_json, content_sha256, metadata_date, fetched_at, ?, 'api'
FROM objects WHERE object_id = ?
"""

_UPSERT_TAG = """
INSERT INTO tags (term, aat_url, wikidata_url) VALUES (?, ?, ?)
ON CONFLICT(term) DO UPDATE SET
    aat_url = COALESCE(excluded.aat_url, tags.aat_url),
    wikidata_url = COALESCE(excluded.wikidata_url, tags.wikidata_url)
"""

_UPSERT_CONSTITUENT = """
INSERT INTO constituents (constituent_id, name, ulan_url, wikidata_url, gender)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT(constituent_id) DO UPDATE SET
    name = COALESCE(excluded.name, constituents.name),
    ulan_url = COALESCE(excluded.ulan_url, constituents.ulan_url),
    wikidata_url = COALESCE(excluded.wikidata_url, constituents.wikidata_url),
    gender = COALESCE(excluded.gender, constituents.gender)
"""


async def save_objects(
    db: aiosqlite.Connection, items: Sequence[FetchedRecord], *, now: str | None = None
) -> SaveCounts:
    """Upsert a batch of fetched records with their tags and constituents.

    New ids are inserted; a changed record (other `content_sha256`) first moves its previous
    raw JSON to `object_versions`; an unchanged one only gets `fetched_at`. Every saved id is
    un-withdrawn and leaves `fetch_failures`, `missing_objects` and `quarantine`.
    `first_seen_at` is never overwritten. Does not commit.
    """
    counts = SaveCounts()
    if not items:
        return counts
    now = now or utc_now()
    latest: dict[int, FetchedRecord] = {item.object_id: item for item in items}
    ids = list(latest)
    async with db.execute(
        "SELECT object_id, content_sha256 FROM objects "
        "WHERE object_id IN (SELECT value FROM json_each(?))",
        (_json_ids(ids),),
    ) as cursor:
        stored = {row[0]: row[1] async for row in cursor}

    written: list[FetchedRecord] = []
    changed_ids: list[int] = []
    same_ids: list[int] = []
    for object_id, item in latest.items():
        if object_id not in stored:
            counts.new += 1
            written.append(item)
        elif stored[object_id] != item.sha256:
            counts.updated += 1
            changed_ids.append(object_id)
            written.append(item)
        else:
            counts.unchanged += 1
            same_ids.append(object_id)

    if changed_ids:
        await db.executemany(_SAVE_VERSION, [(now, i) for i in changed_ids])
    if written:
        await db.executemany(_UPSERT_OBJECT, [_object_row(item, now) for item in written])
        await _replace_tags(db, written)
        await _replace_constituents(db, written)
    if same_ids:
        await db.executemany(
            "UPDATE objects SET fetched_at = ?, withdrawn_at = NULL WHERE object_id = ?",
            [(now, i) for i in same_ids],
        )
    await _forget_trouble(db, ids, tables=("fetch_failures", "missing_objects", "quarantine"))
    return counts


async def _replace_tags(db: aiosqlite.Connection, items: Sequence[FetchedRecord]) -> None:
    tags_by_term: dict[str, tuple[str | None, str | None]] = {}
    per_object: list[tuple[int, list[str]]] = []
    for item in items:
        terms = []
        for tag in item.record.tag_list():
            term = tag.term.strip()
            terms.append(term)
            tags_by_term[term] = (_blank_to_none(tag.aat_url), _blank_to_none(tag.wikidata_url))
        per_object.append((item.object_id, terms))
    await db.executemany(
        "DELETE FROM object_tags WHERE object_id = ? AND source = 'api'",
        [(item.object_id,) for item in items],
    )
    if not tags_by_term:
        return
    await db.executemany(
        _UPSERT_TAG, [(term, aat, wiki) for term, (aat, wiki) in tags_by_term.items()]
    )
    async with db.execute(
        "SELECT term, tag_id FROM tags WHERE term IN (SELECT value FROM json_each(?))",
        (json.dumps(list(tags_by_term), ensure_ascii=False),),
    ) as cursor:
        tag_ids = {row[0]: row[1] async for row in cursor}
    await db.executemany(
        "INSERT OR IGNORE INTO object_tags (object_id, tag_id, source) VALUES (?, ?, 'api')",
        [(object_id, tag_ids[term]) for object_id, terms in per_object for term in terms],
    )


async def _replace_constituents(db: aiosqlite.Connection, items: Sequence[FetchedRecord]) -> None:
    people: dict[int, tuple[Any, ...]] = {}
    links: list[tuple[int, int, str, int]] = []
    for item in items:
        for position, person in enumerate(item.record.constituent_list()):
            person_id = person.stable_id()
            people[person_id] = (
                person_id,
                _blank_to_none(person.name),
                _blank_to_none(person.ulan_url),
                _blank_to_none(person.wikidata_url),
                _blank_to_none(person.gender),
            )
            links.append((item.object_id, person_id, person.role or "", position))
    await db.executemany(
        "DELETE FROM object_constituents WHERE object_id = ?", [(i.object_id,) for i in items]
    )
    if people:
        await db.executemany(_UPSERT_CONSTITUENT, list(people.values()))
    if links:
        await db.executemany(
            "INSERT INTO object_constituents (object_id, constituent_id, role, position) "
            "VALUES (?, ?, ?, ?)",
            links,
        )


async def _forget_trouble(
    db: aiosqlite.Connection, ids: Sequence[int], *, tables: Sequence[str]
) -> None:
    if not ids:
        return
    for table in tables:
        await db.execute(
            f"DELETE FROM {table} WHERE object_id IN (SELECT value FROM json_each(?))",
            (_json_ids(ids),),
        )


async def save_missing(
    db: aiosqlite.Connection, items: Sequence[MissingObject], *, now: str | None = None
) -> None:
    """Record 404s as missing (not failures). A stored object that is now missing is marked
    withdrawn (the row stays). Does not commit."""
    if not items:
        return
    now = now or utc_now()
    await db.executemany(
        "INSERT INTO missing_objects (object_id, http_status, message, first_seen_at, "
        "last_checked_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(object_id) DO UPDATE SET "
        "http_status = excluded.http_status, message = excluded.message, "
        "last_checked_at = excluded.last_checked_at",
        [(m.object_id, m.http_status, m.message, now, now) for m in items],
    )
    ids = [m.object_id for m in items]
    await db.execute(
        "UPDATE objects SET withdrawn_at = ? WHERE withdrawn_at IS NULL "
        "AND object_id IN (SELECT value FROM json_each(?))",
        (now, _json_ids(ids)),
    )
    await _forget_trouble(db, ids, tables=("fetch_failures", "quarantine"))


def retry_delay(
    attempts: int,
    *,
    base: float = FAILURE_RETRY_BASE_SECONDS,
    cap: float = FAILURE_RETRY_MAX_SECONDS,
) -> float:
    """Seconds before retry number `attempts` + 1: base * 2^(attempts-1), at most `cap`
    (default: a failed record fetch, 60 s doubling up to 7 days)."""
    return float(min(cap, base * 2 ** max(0, min(attempts - 1, 40))))


def iso_after(now: str, seconds: float) -> str:
    """The ISO-8601 UTC time `seconds` after `now` (negative: before), in `utc_now()`'s format."""
    return iso_utc(parse_iso(now) + timedelta(seconds=seconds))


async def save_failures(
    db: aiosqlite.Connection,
    items: Sequence[FailedFetch],
    *,
    now: str | None = None,
    retry_base: float = FAILURE_RETRY_BASE_SECONDS,
) -> None:
    """Record failed fetches: attempts + 1 and the next retry time, exponential per attempt.
    Does not commit."""
    if not items:
        return
    now = now or utc_now()
    ids = [f.object_id for f in items]
    async with db.execute(
        "SELECT object_id, attempts FROM fetch_failures "
        "WHERE object_id IN (SELECT value FROM json_each(?))",
        (_json_ids(ids),),
    ) as cursor:
        attempts = {row[0]: row[1] async for row in cursor}
    rows = []
    for failure in items:
        count = attempts.get(failure.object_id, 0) + 1
        attempts[failure.object_id] = count
        next_retry = iso_after(now, retry_delay(count, base=retry_base))
        rows.append((failure.object_id, count, failure.status, failure.error, now, now, next_retry))
    await db.executemany(
        "INSERT INTO fetch_failures (object_id, attempts, last_status, last_error, "
        "first_failed_at, last_failed_at, next_retry_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(object_id) DO UPDATE SET attempts = excluded.attempts, "
        "last_status = excluded.last_status, last_error = excluded.last_error, "
        "last_failed_at = excluded.last_failed_at, next_retry_at = excluded.next_retry_at",
        rows,
    )


async def save_quarantine(
    db: aiosqlite.Connection, items: Sequence[QuarantinedRecord], *, now: str | None = None
) -> None:
    """Keep bodies that failed validation with the reason; a stored good row is left as is.
    Does not commit."""
    if not items:
        return
    now = now or utc_now()
    await db.executemany(
        "INSERT INTO quarantine (object_id, raw_body, error, http_status, received_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(object_id) DO UPDATE SET raw_body = excluded.raw_body,"
        " error = excluded.error, http_status = excluded.http_status, "
        "received_at = excluded.received_at",
        [(q.object_id, q.raw_body, q.error, q.http_status, now) for q in items],
    )
    await _forget_trouble(db, [q.object_id for q in items], tables=("fetch_failures",))


async def mark_withdrawn(
    db: aiosqlite.Connection, ids: Sequence[int], *, now: str | None = None
) -> int:
    """Set `withdrawn_at` on stored objects that left the listing (rows are never deleted).
    Returns how many were newly marked. Does not commit."""
    if not ids:
        return 0
    cursor = await db.execute(
        "UPDATE objects SET withdrawn_at = ? WHERE withdrawn_at IS NULL "
        "AND object_id IN (SELECT value FROM json_each(?))",
        (now or utc_now(), _json_ids(ids)),
    )
    return cursor.rowcount


async def save_departments(
    db: aiosqlite.Connection, departments: Sequence[Mapping[str, Any]], *, now: str | None = None
) -> int:
    """Upsert `GET /departments` entries (`departmentId`, `displayName`). Does not commit."""
    now = now or utc_now()
    rows = [
        (int(d["departmentId"]), str(d.get("displayName") or ""), now)
        for d in departments
        if isinstance(d.get("departmentId"), int)
    ]
    await db.executemany(
        "INSERT INTO departments (department_id, display_name, fetched_at) VALUES (?, ?, ?) "
        "ON CONFLICT(department_id) DO UPDATE SET display_name = excluded.display_name, "
        "fetched_at = excluded.fetched_at",
        rows,
    )
    return len(rows)


# --- harvester_state ------------------------------------------------------------------------


async def get_state(db: aiosqlite.Connection, key: str) -> str | None:
    """The value stored under `key` in `harvester_state`, or None."""
    async with db.execute("SELECT value FROM harvester_state WHERE key = ?", (key,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def set_state(db: aiosqlite.Connection, key: str, value: Any) -> None:
    """Store `value` (as text) under `key`. Does not commit."""
    await db.execute(
        "INSERT INTO harvester_state (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, str(value), utc_now()),
    )


async def get_state_float(db: aiosqlite.Connection, key: str) -> float | None:
    """A numeric state value, or None when absent or not a number."""
    value = await get_state(db, key)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


# --- sync_runs ------------------------------------------------------------------------------


async def start_run(db: aiosqlite.Connection, mode: str, *, now: str | None = None) -> int:
    """Insert a `running` sync_runs row and commit it; returns its run_id."""
    cursor = await db.execute(
        "INSERT INTO sync_runs (started_at, mode, status) VALUES (?, ?, 'running')",
        (now or utc_now(), mode),
    )
    await db.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def update_run_counts(
    db: aiosqlite.Connection, run_id: int, counts: Mapping[str, Any]
) -> None:
    """Store the running counts of a run (so an interrupted run shows its progress)."""
    await db.execute(
        "UPDATE sync_runs SET counts_json = ? WHERE run_id = ?", (canonical_json(counts), run_id)
    )


async def finish_run(
    db: aiosqlite.Connection,
    run_id: int,
    status: str,
    counts: Mapping[str, Any],
    *,
    error: str | None = None,
    now: str | None = None,
) -> None:
    """Close a run as completed, interrupted or failed, and commit."""
    await db.execute(
        "UPDATE sync_runs SET status = ?, finished_at = ?, counts_json = ?, error = ? "
        "WHERE run_id = ?",
        (status, now or utc_now(), canonical_json(counts), error, run_id),
    )
    await db.commit()


async def mark_stale_runs_interrupted(db: aiosqlite.Connection) -> int:
    """Runs left `running` by a killed process become `interrupted`; commits; returns how many."""
    cursor = await db.execute(
        "UPDATE sync_runs SET status = 'interrupted', "
        "error = COALESCE(error, 'process ended while running (killed?)') WHERE status = 'running'"
    )
    await db.commit()
    return cursor.rowcount


async def changes_since(
    db: aiosqlite.Connection, *, complete_modes: Sequence[str] = ("full", "incremental")
) -> str | None:
    """Start time from which server-side changes may be missing from the mirror.

    That is the start of the last completed full or incremental run; when none completed yet,
    the start of the earliest run (records fetched by unfinished runs are fresh from then on).
    None when no run ever started (nothing stored from the API: a first full pass).
    """
    marks = ",".join("?" for _ in complete_modes)
    async with db.execute(
        f"SELECT MAX(started_at) FROM sync_runs WHERE status = 'completed' AND mode IN ({marks})",
        tuple(complete_modes),
    ) as cursor:
        row = await cursor.fetchone()
    if row and row[0]:
        return str(row[0])
    async with db.execute("SELECT MIN(started_at) FROM sync_runs") as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row and row[0] else None


async def last_run(db: aiosqlite.Connection) -> dict[str, Any] | None:
    """The most recent sync_runs row as a dict (counts decoded), or None."""
    async with db.execute(
        "SELECT run_id, started_at, finished_at, mode, status, counts_json, error "
        "FROM sync_runs ORDER BY run_id DESC LIMIT 1"
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    run_id, started, finished, mode, status, counts_json, error = row
    return {
        "run_id": run_id,
        "start": started,
        "end": finished,
        "mode": mode,
        "status": status,
        "counts": json.loads(counts_json or "{}"),
        "error": error,
    }


# --- planning a pass: the listing as a temp table, diffed against the mirror --------------------


async def load_listing(db: aiosqlite.Connection, ids: Iterable[int]) -> int:
    """Put an id listing into the temp table `listing` (replacing any previous); commits."""
    await db.execute("CREATE TEMP TABLE IF NOT EXISTS listing (object_id INTEGER PRIMARY KEY)")
    await db.execute("DELETE FROM temp.listing")
    await db.executemany(
        "INSERT OR IGNORE INTO temp.listing (object_id) VALUES (?)", ((i,) for i in ids)
    )
    await db.commit()
    async with db.execute("SELECT COUNT(*) FROM temp.listing") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _ids(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[int]:
    async with db.execute(sql, tuple(params)) as cursor:
        return [int(row[0]) async for row in cursor]


async def listed_ids(db: aiosqlite.Connection) -> list[int]:
    """Every id of the loaded listing, ascending."""
    return await _ids(db, "SELECT object_id FROM temp.listing ORDER BY object_id")


async def unfetched_listed_ids(
    db: aiosqlite.Connection, *, now: str, missing_recheck_before: str
) -> list[int]:
    """Listed ids the mirror lacks (or holds as withdrawn), ascending, leaving out ids that are
    missing (404) since after `missing_recheck_before`, quarantined, or failed and not yet due."""
    return await _ids(
        db,
        """
        SELECT l.object_id FROM temp.listing AS l
        LEFT JOIN objects AS o ON o.object_id = l.object_id
        WHERE (o.object_id IS NULL OR o.withdrawn_at IS NOT NULL)
          AND l.object_id NOT IN
              (SELECT object_id FROM missing_objects WHERE last_checked_at >= ?)
          AND l.object_id NOT IN (SELECT object_id FROM quarantine)
          AND l.object_id NOT IN (SELECT object_id FROM fetch_failures WHERE next_retry_at > ?)
        ORDER BY l.object_id
        """,
        (missing_recheck_before, now),
    )


async def due_failure_ids(
    db: aiosqlite.Connection, *, now: str, listed_only: bool = True
) -> list[int]:
    """Failed ids whose next retry time has come (only those still listed, by default)."""
    where = "AND object_id IN (SELECT object_id FROM temp.listing)" if listed_only else ""
    return await _ids(
        db,
        f"SELECT object_id FROM fetch_failures WHERE next_retry_at <= ? {where} ORDER BY object_id",
        (now,),
    )


async def vanished_ids(db: aiosqlite.Connection) -> list[int]:
    """Stored, not yet withdrawn objects that are absent from the loaded listing."""
    return await _ids(
        db,
        "SELECT object_id FROM objects WHERE withdrawn_at IS NULL "
        "AND object_id NOT IN (SELECT object_id FROM temp.listing) ORDER BY object_id",
    )


async def csv_only_ids(db: aiosqlite.Connection, ids: Sequence[int]) -> set[int]:
    """Which of `ids` are known from the CSV import (csv_objects) without an objects row."""
    if not ids:
        return set()
    found = await _ids(
        db,
        "SELECT c.object_id FROM csv_objects AS c "
        "WHERE c.object_id IN (SELECT value FROM json_each(?)) "
        "AND NOT EXISTS (SELECT 1 FROM objects AS o WHERE o.object_id = c.object_id)",
        (_json_ids(ids),),
    )
    return set(found)
