"""Planning an image pass: which image slots each stored object wants, and which need a fetch.

A *slot* is `(object_id, role, position, variant)`; the `images` table holds one current row per
slot (`is_current = 1`) plus older rows kept as history. Planning brings the table in line with
the objects (new slots get a `pending` row; a changed URL supersedes the old row, which keeps its
blob link as history) and returns the ids of the rows to fetch. It commits as it goes, so a
killed run leaves `pending` rows that the next run picks up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from array import array
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.hosts import AllowedHost, UrlRefused, check_url
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.images.plan")

SCAN_BATCH = 500
_OBJECTS_SQL = (
    "SELECT object_id, primary_image, primary_image_small, additional_images FROM objects "
    "WHERE withdrawn_at IS NULL AND is_public_domain = 1"
)
_CURRENT_SQL = (
    "SELECT image_id, object_id, role, position, variant, url, sha256, bytes, status, "
    "next_retry_at, etag, last_modified, fetched_at FROM images WHERE is_current = 1 "
    "AND object_id IN ({marks})"
)


@dataclass(frozen=True)
class Slot:
    """One wanted image of an object."""

    object_id: int
    role: str
    position: int
    variant: str
    url: str

    @property
    def key(self) -> tuple[int, str, int, str]:
        """The slot's identity in the `images` table."""
        return (self.object_id, self.role, self.position, self.variant)


@dataclass
class ImagePlan:
    """What planning found: rows to fetch (image ids), conditional ones, and counts."""

    fetch_ids: array[int] = field(default_factory=lambda: array("q"))  # 8 bytes per id
    conditional_ids: set[int] = field(default_factory=set)
    objects: int = 0
    slots: int = 0
    new: int = 0
    superseded: int = 0
    unchanged: int = 0
    deferred: int = 0
    refused: int = 0
    missing_blobs: int = 0
    revalidate: int = 0


def _clean_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def wanted_slots(row: Sequence[Any], settings: HarvesterSettings) -> list[Slot]:
    """The slots an object row `(object_id, primary_image, primary_image_small,
    additional_images)` wants under the current settings."""
    object_id, primary, small, additional = row
    slots: list[Slot] = []
    if settings.image_variant == "original":
        url = _clean_url(primary)
    else:
        url = _clean_url(small) or _clean_url(primary)
    if url:
        slots.append(Slot(object_id, "primary", 0, settings.image_variant, url))
    if settings.additional_images and additional:
        try:
            urls = json.loads(additional) if isinstance(additional, str) else additional
        except ValueError:
            urls = []
        if isinstance(urls, list):
            for index, value in enumerate(urls):
                extra = _clean_url(value)
                if extra:
                    slots.append(Slot(object_id, "additional", index, "original", extra))
    return slots


def _managed(row_key: tuple[int, str, int, str], settings: HarvesterSettings) -> bool:
    """Whether a current row belongs to the kinds of slot these settings manage."""
    _oid, role, _pos, variant = row_key
    if role == "primary":
        return variant == settings.image_variant
    return settings.additional_images


async def _object_batches(
    db: aiosqlite.Connection, object_ids: Sequence[int] | None
) -> AsyncIterator[list[tuple[Any, ...]]]:
    if object_ids is not None:
        ids = sorted(set(int(i) for i in object_ids))
        for start in range(0, len(ids), SCAN_BATCH):
            chunk = ids[start : start + SCAN_BATCH]
            marks = ",".join("?" * len(chunk))
            sql = f"{_OBJECTS_SQL} AND object_id IN ({marks}) ORDER BY object_id"
            async with db.execute(sql, chunk) as cur:
                rows = [tuple(r) for r in await cur.fetchall()]
            if rows:
                yield rows
        return
    last = -1
    while True:
        sql = f"{_OBJECTS_SQL} AND object_id > ? ORDER BY object_id LIMIT {SCAN_BATCH}"
        async with db.execute(sql, (last,)) as cur:
            rows = [tuple(r) for r in await cur.fetchall()]
        if not rows:
            return
        yield rows
        last = rows[-1][0]


async def plan_images(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    store: BlobStore,
    allowed: tuple[AllowedHost, ...],
    *,
    object_ids: Sequence[int] | None = None,
    stop_event: asyncio.Event | None = None,
) -> ImagePlan:
    """Bring `images` in line with the stored objects and list the rows that need a fetch.

    A row is fetched when it is new or its URL changed, when it is `pending`, when it `failed`
    and its retry time has come, when its blob is missing, when a `refused` URL is now allowed,
    or (conditionally, with its ETag/Last-Modified) when the object's record changed after the
    image was fetched.
    """
    plan = ImagePlan()
    async for rows in _object_batches(db, object_ids):
        if stop_event is not None and stop_event.is_set():
            break
        await plan_rows(db, settings, store, allowed, rows, plan)
        await db.commit()
    return plan


async def plan_rows(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    store: BlobStore,
    allowed: tuple[AllowedHost, ...],
    rows: list[tuple[Any, ...]],
    plan: ImagePlan,
) -> None:
    """Plan object rows `(object_id, primary_image, primary_image_small, additional_images)`
    into `plan` (no commit)."""
    now = utc_now()
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    async with db.execute(_CURRENT_SQL.format(marks=marks), ids) as cur:
        current = {(r[1], r[2], r[3], r[4]): r for r in await cur.fetchall()}
    async with db.execute(
        "SELECT object_id, MAX(replaced_at) FROM object_versions "
        f"WHERE object_id IN ({marks}) GROUP BY object_id",
        ids,
    ) as cur:
        changed_at = {r[0]: r[1] for r in await cur.fetchall()}
    ok_rows = [r for r in current.values() if r[8] == "ok" and r[6]]
    present = set(await asyncio.to_thread(lambda: [r[0] for r in ok_rows if store.has(r[6], r[7])]))
    plan.objects += len(rows)
    seen: set[tuple[int, str, int, str]] = set()
    to_insert: list[Slot] = []
    to_supersede: list[int] = []
    for row in rows:
        for slot in wanted_slots(row, settings):
            plan.slots += 1
            seen.add(slot.key)
            existing = current.get(slot.key)
            if existing is None:
                to_insert.append(slot)
                plan.new += 1
            elif existing[5] != slot.url:
                to_supersede.append(existing[0])
                to_insert.append(slot)
                plan.superseded += 1
            else:
                _plan_existing(existing, present, changed_at, allowed, now, plan)
    for key, existing in current.items():
        if key not in seen and _managed(key, settings):
            to_supersede.append(existing[0])
            plan.superseded += 1
    # Old rows leave the current slot first (the unique index), then the new rows come in.
    await db.executemany(
        "UPDATE images SET is_current = 0, superseded_at = ? WHERE image_id = ?",
        [(now, image_id) for image_id in to_supersede],
    )
    await db.executemany(
        "INSERT INTO images (object_id, role, position, variant, url, status) "
        "VALUES (?, ?, ?, ?, ?, 'pending')",
        [(s.object_id, s.role, s.position, s.variant, s.url) for s in to_insert],
    )
    if to_insert:
        new_keys = {slot.key for slot in to_insert}
        async with db.execute(
            "SELECT image_id, object_id, role, position, variant FROM images "
            f"WHERE is_current = 1 AND status = 'pending' AND object_id IN ({marks})",
            ids,
        ) as cur:
            inserted = {(r[1], r[2], r[3], r[4]): r[0] for r in await cur.fetchall()}
        plan.fetch_ids.extend(inserted[key] for key in sorted(new_keys))


def _plan_existing(
    existing: Sequence[Any],
    present: set[int],
    changed_at: dict[int, str],
    allowed: tuple[AllowedHost, ...],
    now: str,
    plan: ImagePlan,
) -> None:
    image_id, object_id = existing[0], existing[1]
    url, status, next_retry_at = existing[5], existing[8], existing[9]
    etag, last_modified, fetched_at = existing[10], existing[11], existing[12]
    if status == "ok":
        if image_id not in present:
            log.warning(
                "image blob missing, fetching it again",
                extra={"object_id": object_id, "image_id": image_id},
            )
            plan.missing_blobs += 1
            plan.fetch_ids.append(image_id)
        elif (etag or last_modified) and fetched_at and changed_at.get(object_id, "") > fetched_at:
            plan.revalidate += 1
            plan.fetch_ids.append(image_id)
            plan.conditional_ids.add(image_id)
        else:
            plan.unchanged += 1
    elif status == "pending":
        plan.fetch_ids.append(image_id)
    elif status == "failed":
        if next_retry_at is None or next_retry_at <= now:
            plan.fetch_ids.append(image_id)
        else:
            plan.deferred += 1
    elif status == "refused":
        try:
            check_url(url, allowed)
        except UrlRefused:
            plan.refused += 1
        else:
            if next_retry_at is not None and next_retry_at > now:
                plan.refused += 1  # refused by a redirect: asked again after the back-off
            else:
                plan.fetch_ids.append(image_id)
