"""`harvester_state`: small key/value facts kept between runs (API rate, listing size, ...)."""

from __future__ import annotations

from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now

RATE_KEYS = {"learned": "api.learned_rate", "current": "api.current_rate", "ceiling": "api.ceiling"}
"""harvester_state keys of the API request rate (requests/s), written by sync, read by status."""
LISTING_TOTAL_KEY = "api.listing_total"
"""harvester_state key: how many ids the last full listing had."""


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


async def delete_state(db: aiosqlite.Connection, key: str) -> None:
    """Forget `key`. Does not commit."""
    await db.execute("DELETE FROM harvester_state WHERE key = ?", (key,))
