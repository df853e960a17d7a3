"""What each pool's rate limiter learned, kept in `harvester_state` under `limiter.<pool>`.

The value is a JSON object (`met_harvester.ratelimit.LimiterState` plus the ceiling and the time
it was written). `save` does not commit: callers write it in the same transaction as each
record (or image) batch, so a kill loses nothing the committed batches did not also lose.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.ratelimit import AdaptiveRateLimiter, LimiterState

log = logging.getLogger("met_harvester.db.limiter_state")

POOLS = ("api", "images")


def state_key(pool: str) -> str:
    """The `harvester_state` key of `pool`'s limiter."""
    return f"limiter.{pool}"


async def load(db: aiosqlite.Connection, pool: str) -> LimiterState | None:
    """The state saved for `pool`, or None (never saved, or not readable: then it is relearned)."""
    raw = await _read(db, pool)
    if raw is None:
        return None
    state = LimiterState.from_dict(raw)
    if state is None:
        log.warning("ignoring unreadable limiter state of pool %s: %.200s", pool, raw)
    return state


async def save(db: aiosqlite.Connection, limiter: AdaptiveRateLimiter) -> None:
    """Write `limiter`'s state under its pool's key (no commit)."""
    value = limiter.state().as_dict() | {"ceiling": limiter.ceiling, "paused": limiter.paused}
    now = utc_now()
    await db.execute(
        "INSERT INTO harvester_state (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (state_key(limiter.name), json.dumps(value | {"saved_at": now}), now),
    )


async def status(db: aiosqlite.Connection) -> dict[str, dict[str, Any] | None]:
    """Every pool's saved state as a plain dict (None for a pool never saved), for `status`."""
    out: dict[str, dict[str, Any] | None] = {}
    for pool in POOLS:
        raw = await _read(db, pool)
        out[pool] = raw if isinstance(raw, dict) else None
    return out


async def _read(db: aiosqlite.Connection, pool: str) -> Any:
    async with db.execute(
        "SELECT value FROM harvester_state WHERE key = ?", (state_key(pool),)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except (TypeError, ValueError):
        return str(row[0])
