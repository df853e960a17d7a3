"""Objects and their versions: `save_objects` (with tags and constituents) and departments.

Plain SQL on the one writer connection (aiosqlite), no fetching here. Each `save_*` call writes a
whole batch with a handful of `executemany` statements and leaves the transaction open; the
caller commits once per batch (`await db.commit()`), so a batch lands whole or not at all. Times
are ISO-8601 UTC strings (`utc_now()`), which sort as text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.db.sql import json_ids
from met_harvester.db.trouble import forget_trouble
from met_harvester.models import MetObject, content_sha256


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
        (json_ids(ids),),
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
    await forget_trouble(db, ids, tables=("fetch_failures", "missing_objects", "quarantine"))
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
