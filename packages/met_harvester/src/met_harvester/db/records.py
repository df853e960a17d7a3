"""Objects and their versions: `save_objects` (with tags and constituents) and departments.

Plain SQL on the one writer connection (aiosqlite), no fetching here. Each `save_*` call writes a
whole batch with a handful of `executemany` statements and leaves the transaction open; the
caller commits once per batch (`await db.commit()`), so a batch lands whole or not at all. Times
are ISO-8601 UTC strings (`utc_now()`), which sort as text.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.db.sql import rows_of_ids
from met_harvester.db.trouble import QuarantinedRecord, forget_trouble
from met_harvester.db.typed import TypedValues, fits_int, fits_text
from met_harvester.db.versions import save_versions
from met_harvester.db.withdrawal import RESTORED_REASON, record_events
from met_harvester.models import MetObject, content_sha256

log = logging.getLogger("met_harvester.db")

STORE_ERRORS: tuple[type[BaseException], ...] = (
    OverflowError,
    ValueError,  # UnicodeEncodeError too
    TypeError,
    RecursionError,
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
)
"""What one record's content can make a save raise (not disk, lock or I/O trouble)."""


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


@dataclass
class SaveCounts:
    """What `save_objects` did with a batch."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0


def _keyed(*fields: str) -> tuple[tuple[str, str], ...]:
    """`(field, JSON key)` of `MetObject` fields (the key is the alias), looked up once."""
    return tuple((f, MetObject.model_fields[f].alias or f) for f in fields)


_to_json = json.JSONEncoder(ensure_ascii=False).encode
"""`json.dumps(value, ensure_ascii=False)` without building an encoder for each row."""

_TEXT_FIELDS = _keyed("department", "classification", "object_name", "title", "culture", "period")
_MORE_TEXT_FIELDS = _keyed("artist_display_name", "artist_gender")
_IMAGE_FIELDS = _keyed("primary_image", "primary_image_small")
_ACCESSION_FIELDS = _keyed("accession_year", "accession_number")


def _object_row(item: FetchedRecord, now: str) -> tuple[Any, ...]:
    """The `objects` row of a record; typed values a column cannot hold become NULL with the
    reason in `typed_issues` (see `db.typed`)."""
    r = item.record
    typed = TypedValues(item.data)

    def texts(fields: Sequence[tuple[str, str]]) -> list[str | None]:
        return [typed.text(key, getattr(r, field)) for field, key in fields]

    additional = [u for u in r.additional_images if typed.check_text("additionalImages", u)]
    return (
        r.object_id,
        item.body,
        item.sha256,
        typed.text("metadataDate", r.metadata_date) if r.metadata_date else r.metadata_date,
        now,
        now,
        *texts(_TEXT_FIELDS),
        typed.flag("isPublicDomain", r.is_public_domain),
        typed.flag("isHighlight", r.is_highlight),
        *texts(_MORE_TEXT_FIELDS),
        typed.integer("objectBeginDate", r.object_begin_date),
        typed.integer("objectEndDate", r.object_end_date),
        *texts(_IMAGE_FIELDS),
        _to_json(additional),
        *texts(_ACCESSION_FIELDS),
        typed.issues_json(),
    )


_UPSERT_OBJECT = """
INSERT INTO objects (
    object_id, raw_json, content_sha256, metadata_date, first_seen_at, fetched_at,
    department, classification, object_name, title, culture, period, is_public_domain,
    is_highlight, artist_display_name, artist_gender, object_begin_date, object_end_date,
    primary_image, primary_image_small, additional_images, accession_year, accession_number,
    typed_issues
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
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
    accession_number = excluded.accession_number, typed_issues = excluded.typed_issues
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
    raw JSON to `object_versions` (compressed); an unchanged one only gets `fetched_at`. Every
    saved id is un-withdrawn (recorded in `withdrawal_events`) and leaves `fetch_failures`,
    `missing_objects` and `quarantine`.
    `first_seen_at` is never overwritten. Does not commit.
    """
    counts = SaveCounts()
    if not items:
        return counts
    now = now or utc_now()
    latest: dict[int, FetchedRecord] = {item.object_id: item for item in items}
    ids = list(latest)
    rows = await rows_of_ids(db, "object_id, content_sha256, withdrawn_at", "objects", ids)
    stored = {row[0]: row[1] for row in rows}
    restored = [row[0] for row in rows if row[2] is not None]

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

    await save_versions(db, changed_ids, now=now)
    await record_events(db, restored, "restored", RESTORED_REASON, now=now)
    if written:
        await db.executemany(_UPSERT_OBJECT, [_object_row(item, now) for item in written])
        await _replace_tags(db, written)
        await _replace_constituents(db, written)
    if same_ids:
        await db.executemany(
            "UPDATE objects SET fetched_at = ?, withdrawn_at = NULL WHERE object_id = ?",
            [(now, i) for i in same_ids],
        )
    await forget_trouble(db, ids, tables=("fetch_failures", "missing_objects", "quarantine"))
    return counts


async def save_objects_or_quarantine(
    db: aiosqlite.Connection, items: Sequence[FetchedRecord], *, now: str | None = None
) -> tuple[SaveCounts, list[QuarantinedRecord]]:
    """`save_objects`, except that a record which cannot be stored at all is left out and
    returned as a `QuarantinedRecord` (its body and the error); the rest of the batch is stored.

    The batch is tried whole inside a savepoint; if it fails on a record's content
    (`STORE_ERRORS`), each record is tried on its own. Does not commit.
    """
    try:
        return await _in_savepoint(db, functools.partial(save_objects, db, items, now=now)), []
    except STORE_ERRORS:
        pass
    counts = SaveCounts()
    unstorable: list[QuarantinedRecord] = []
    for item in items:
        try:
            one = await _in_savepoint(db, functools.partial(save_objects, db, [item], now=now))
        except STORE_ERRORS as exc:
            reason = f"cannot store the record: {type(exc).__name__}: {exc}"[:500]
            log.warning("quarantined record: %s", reason, extra={"object_id": item.object_id})
            unstorable.append(QuarantinedRecord(item.object_id, item.body, reason, 200))
            continue
        counts.new += one.new
        counts.updated += one.updated
        counts.unchanged += one.unchanged
    return counts, unstorable


async def _in_savepoint(
    db: aiosqlite.Connection, work: Callable[[], Awaitable[SaveCounts]]
) -> SaveCounts:
    if not db.in_transaction:  # else RELEASE of an outermost savepoint would COMMIT the batch
        await db.execute("BEGIN")
    await db.execute("SAVEPOINT save_records")
    try:
        result = await work()
    except BaseException:
        await db.execute("ROLLBACK TO save_records")
        await db.execute("RELEASE save_records")
        raise
    await db.execute("RELEASE save_records")
    return result


async def _replace_tags(db: aiosqlite.Connection, items: Sequence[FetchedRecord]) -> None:
    tags_by_term: dict[str, tuple[str | None, str | None]] = {}
    per_object: list[tuple[int, list[str]]] = []
    for item in items:
        terms = []
        for tag in item.record.tag_list():
            term = tag.term.strip()
            if not fits_text(term):
                continue  # the raw JSON keeps it; a term no column can hold is no label
            terms.append(term)
            tags_by_term[term] = (_clean_text(tag.aat_url), _clean_text(tag.wikidata_url))
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


def _clean_text(value: str | None) -> str | None:
    """A constituent's text if a column can hold it, else NULL (the raw JSON keeps it)."""
    return value if value and fits_text(value) else None


async def _replace_constituents(db: aiosqlite.Connection, items: Sequence[FetchedRecord]) -> None:
    people: dict[int, tuple[Any, ...]] = {}
    links: list[tuple[int, int, str, int]] = []
    for item in items:
        for position, person in enumerate(item.record.constituent_list()):
            person_id = person.stable_id()
            if not fits_int(person_id):
                continue  # the raw JSON keeps it; an id SQLite cannot hold links nothing
            people[person_id] = (
                person_id,
                *(_clean_text(v) for v in (person.name, person.ulan_url, person.wikidata_url)),
                _clean_text(person.gender),
            )
            links.append((item.object_id, person_id, _clean_text(person.role) or "", position))
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
