"""Planning a pass: the id listing as a temp table, diffed against the mirror; withdrawal.

`load_listing` commits; the rest only read. Withdrawal itself is `db.withdrawal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aiosqlite

from met_harvester.db.sql import json_ids, select_ids


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


async def listed_ids(db: aiosqlite.Connection) -> list[int]:
    """Every id of the loaded listing, ascending."""
    return await select_ids(db, "SELECT object_id FROM temp.listing ORDER BY object_id")


async def unfetched_listed_ids(
    db: aiosqlite.Connection, *, now: str, missing_recheck_before: str
) -> list[int]:
    """Listed ids the mirror lacks (or holds as withdrawn), ascending, leaving out ids that are
    missing (404) since after `missing_recheck_before`, quarantined (their due retries come
    from `due_quarantine_ids`), or failed and not yet due."""
    return await select_ids(
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
    return await select_ids(
        db,
        f"SELECT object_id FROM fetch_failures WHERE next_retry_at <= ? {where} ORDER BY object_id",
        (now,),
    )


async def due_quarantine_ids(
    db: aiosqlite.Connection, *, now: str, listed_only: bool = True
) -> list[int]:
    """Quarantined ids whose next retry time has come (only those still listed, by default)."""
    where = "AND object_id IN (SELECT object_id FROM temp.listing)" if listed_only else ""
    return await select_ids(
        db,
        "SELECT object_id FROM quarantine WHERE COALESCE(next_retry_at, received_at) <= ? "
        f"{where} ORDER BY object_id",
        (now,),
    )


async def vanished_ids(db: aiosqlite.Connection) -> list[int]:
    """Stored, not yet withdrawn objects that are absent from the loaded listing."""
    return await select_ids(
        db,
        "SELECT object_id FROM objects WHERE withdrawn_at IS NULL "
        "AND object_id NOT IN (SELECT object_id FROM temp.listing) ORDER BY object_id",
    )


async def csv_only_ids(db: aiosqlite.Connection, ids: Sequence[int]) -> set[int]:
    """Which of `ids` are known from the CSV import (csv_objects) without an objects row."""
    if not ids:
        return set()
    found = await select_ids(
        db,
        "SELECT c.object_id FROM csv_objects AS c "
        "WHERE c.object_id IN (SELECT value FROM json_each(?)) "
        "AND NOT EXISTS (SELECT 1 FROM objects AS o WHERE o.object_id = c.object_id)",
        (json_ids(ids),),
    )
    return set(found)
