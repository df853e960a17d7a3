"""Keeping the database fit for years: run after every pass (`after_pass`).

- `PRAGMA journal_size_limit` (set on every connection, `db.connection`) caps what a WAL keeps
  on disk after a checkpoint;
- old versions are compressed (`db.versions.compress_versions`) and, with `keep_versions`,
  pruned to the newest N per object;
- `PRAGMA optimize` refreshes the planner's statistics where they are stale;
- `PRAGMA wal_checkpoint(TRUNCATE)` folds the WAL into the database and truncates it (it does
  nothing harmful when readers are busy: the next pass tries again).
"""

from __future__ import annotations

import logging
import sqlite3

import aiosqlite

from met_harvester.db.state import get_state, set_state
from met_harvester.db.versions import COMPRESS_BATCH, compress_versions, prune_versions

log = logging.getLogger("met_harvester.db")

ALL_COMPRESSED_KEY = "db.versions_compressed"
"""harvester_state key, set once every pre-migration-4 version is compressed."""


async def after_pass(db: aiosqlite.Connection, *, keep_versions: int | None = None) -> None:
    """Compress and prune old versions, optimize, checkpoint and truncate the WAL.

    Never raises for database trouble: a pass that ended must not fail in its clean-up; the
    reason is logged instead.
    """
    try:
        if db.in_transaction:
            await db.rollback()  # whatever a failed pass left open is not ours to commit
        compressed = 0
        if await get_state(db, ALL_COMPRESSED_KEY) is None:  # rows from before migration 4
            compressed = await compress_versions(db)
            if compressed < COMPRESS_BATCH:
                await set_state(db, ALL_COMPRESSED_KEY, 1)  # new versions are born compressed
                await db.commit()
        pruned = await prune_versions(db, keep_versions)
        await db.execute("PRAGMA analysis_limit=400")  # bounded work, as SQLite advises
        await db.execute("PRAGMA optimize")
        async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
            busy = await cursor.fetchone()
    except (sqlite3.Error, ValueError) as exc:
        log.warning("database upkeep after the pass skipped: %s", exc)
        return
    if compressed or pruned:
        log.info("old versions: %d compressed, %d pruned", compressed, pruned)
    if busy and busy[0]:
        log.info("WAL checkpoint incomplete (readers busy); the next pass tries again")
