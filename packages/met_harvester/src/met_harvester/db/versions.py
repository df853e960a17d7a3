"""`object_versions`: the previous records of changed objects, stored zlib-compressed.

A version row written since migration 4 has `raw_json = ''` and the record's exact text in
`raw_json_zlib` (zlib of its UTF-8); older rows keep plain `raw_json` until `compress_versions`
rewrites them. Read either kind with `version_text`. `prune_versions` keeps the newest N per
object (the `keep_versions` setting; None keeps them all).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import aiosqlite

from met_harvester.db.sql import rows_of_ids

COMPRESS_BATCH = 5_000
"""Plain old versions compressed per `compress_versions` call (bounded work per pass)."""


def compress_text(text: str) -> bytes:
    """The zlib-compressed UTF-8 of a record's text."""
    return zlib.compress(text.encode("utf-8", "surrogatepass"), 6)


def version_text(raw_json: str, raw_json_zlib: bytes | None) -> str:
    """The exact record text of an `object_versions` row, compressed or not."""
    if raw_json_zlib is None:
        return raw_json
    return zlib.decompress(raw_json_zlib).decode("utf-8", "surrogatepass")


async def save_versions(db: aiosqlite.Connection, object_ids: Sequence[int], *, now: str) -> None:
    """Copy the stored records of `object_ids` to `object_versions`, compressed. No commit."""
    if not object_ids:
        return
    columns = "object_id, raw_json, content_sha256, metadata_date, fetched_at"
    rows = await rows_of_ids(db, columns, "objects", object_ids)
    await db.executemany(
        "INSERT INTO object_versions (object_id, raw_json, raw_json_zlib, content_sha256, "
        "metadata_date, fetched_at, replaced_at, source) VALUES (?, '', ?, ?, ?, ?, ?, 'api')",
        [
            (oid, compress_text(raw), sha, mdate, fetched, now)
            for oid, raw, sha, mdate, fetched in rows
        ],
    )


async def compress_versions(db: aiosqlite.Connection, *, limit: int = COMPRESS_BATCH) -> int:
    """Compress up to `limit` plain (pre-migration-4) versions; commits; returns how many."""
    async with db.execute(
        "SELECT version_id, raw_json FROM object_versions "
        "WHERE raw_json_zlib IS NULL AND raw_json != '' LIMIT ?",
        (limit,),
    ) as cursor:
        rows = [tuple(row) async for row in cursor]
    await db.executemany(
        "UPDATE object_versions SET raw_json_zlib = ?, raw_json = '' WHERE version_id = ?",
        [(compress_text(raw), vid) for vid, raw in rows],
    )
    await db.commit()
    return len(rows)


async def prune_versions(db: aiosqlite.Connection, keep: int | None) -> int:
    """Delete all but the newest `keep` versions of each object; commits; returns how many."""
    if keep is None:
        return 0
    cursor = await db.execute(
        "DELETE FROM object_versions WHERE version_id IN (SELECT version_id FROM "
        "(SELECT version_id, ROW_NUMBER() OVER (PARTITION BY object_id ORDER BY version_id DESC) "
        "AS newer FROM object_versions) WHERE newer > ?)",
        (keep,),
    )
    await db.commit()
    return cursor.rowcount
