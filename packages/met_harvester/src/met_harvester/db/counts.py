"""The mirror's counts, defined once: `status`, `/metrics` and the image pass all read these.

Each count is one SQL query with a fixed meaning:

- `objects`: stored records not withdrawn; `withdrawn`: stored records marked withdrawn;
- `quarantined`: ids whose last body could not be stored; `quarantined_due`: those due for a
  retry now; `missing`: ids the API answered with its JSON 404;
- `failures`: ids whose fetch failed and waits for a retry; `failures_due`: those due now;
- `images`: distinct blobs referenced by a current `ok` image row; `image_failures`: current
  rows failed and waiting for a retry; `images_pending`, `images_refused`: current rows so marked.

`mirror_counts` / `image_counts` run on the aiosqlite connection; `read_counts` runs the same
queries on a plain `sqlite3` connection (a read-only one for `/metrics`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import aiosqlite

MIRROR_COUNTS: dict[str, str] = {
    "objects": "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NULL",
    "withdrawn": "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NOT NULL",
    "quarantined": "SELECT COUNT(*) FROM quarantine",
    "failures": "SELECT COUNT(*) FROM fetch_failures",
    "failures_due": "SELECT COUNT(*) FROM fetch_failures "
    "WHERE next_retry_at <= strftime('%Y-%m-%dT%H:%M:%fZ')",
    "quarantined_due": "SELECT COUNT(*) FROM quarantine "
    "WHERE COALESCE(next_retry_at, received_at) <= strftime('%Y-%m-%dT%H:%M:%fZ')",
    "missing": "SELECT COUNT(*) FROM missing_objects",
    "tags": "SELECT COUNT(*) FROM tags",
    "constituents": "SELECT COUNT(*) FROM constituents",
    "object_versions": "SELECT COUNT(*) FROM object_versions",
    "departments": "SELECT COUNT(*) FROM departments",
}
"""Record-side counts, by key."""

IMAGE_COUNTS: dict[str, str] = {
    "images": "SELECT COUNT(DISTINCT sha256) FROM images WHERE status = 'ok' AND is_current = 1",
    "image_failures": "SELECT COUNT(*) FROM images WHERE status = 'failed' AND is_current = 1",
    "images_pending": "SELECT COUNT(*) FROM images WHERE status = 'pending' AND is_current = 1",
    "images_refused": "SELECT COUNT(*) FROM images WHERE status = 'refused' AND is_current = 1",
}
"""Image-side counts, by key."""

ALL_COUNTS: dict[str, str] = {**MIRROR_COUNTS, **IMAGE_COUNTS}


async def _run_counts(db: aiosqlite.Connection, queries: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, sql in queries.items():
        async with db.execute(sql) as cursor:
            row = await cursor.fetchone()
        counts[key] = int(row[0]) if row and row[0] is not None else 0
    return counts


async def count(db: aiosqlite.Connection, key: str) -> int:
    """One count of `ALL_COUNTS` by its key."""
    return (await _run_counts(db, {key: ALL_COUNTS[key]}))[key]


async def mirror_counts(db: aiosqlite.Connection) -> dict[str, int]:
    """Every `MIRROR_COUNTS` value."""
    return await _run_counts(db, MIRROR_COUNTS)


async def image_counts(db: aiosqlite.Connection) -> dict[str, int]:
    """Every `IMAGE_COUNTS` value."""
    return await _run_counts(db, IMAGE_COUNTS)


def read_counts(conn: sqlite3.Connection, keys: Iterable[str] | None = None) -> dict[str, int]:
    """The named counts (default: all) on a plain sqlite3 connection."""
    wanted = list(ALL_COUNTS) if keys is None else list(keys)
    return {key: int(conn.execute(ALL_COUNTS[key]).fetchone()[0] or 0) for key in wanted}
