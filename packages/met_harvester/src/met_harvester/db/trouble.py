"""Failures and retry: ids answered 404 (missing), fetches that failed, bodies quarantined.

Each `save_*` leaves the transaction open; the caller commits once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from met_harvester.db.connection import iso_after, utc_now
from met_harvester.db.sql import json_ids

FAILURE_RETRY_BASE_SECONDS = 60.0
"""First retry of a failed fetch after this long; doubles per attempt."""
FAILURE_RETRY_MAX_SECONDS = 7 * 24 * 3600.0
"""Longest wait between retries of a failed fetch."""


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


async def forget_trouble(
    db: aiosqlite.Connection, ids: Sequence[int], *, tables: Sequence[str]
) -> None:
    """Delete `ids` from the given trouble tables (the id was answered otherwise). No commit."""
    if not ids:
        return
    for table in tables:
        await db.execute(
            f"DELETE FROM {table} WHERE object_id IN (SELECT value FROM json_each(?))",
            (json_ids(ids),),
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
        (now, json_ids(ids)),
    )
    await forget_trouble(db, ids, tables=("fetch_failures", "quarantine"))


def retry_delay(
    attempts: int,
    *,
    base: float = FAILURE_RETRY_BASE_SECONDS,
    cap: float = FAILURE_RETRY_MAX_SECONDS,
) -> float:
    """Seconds before retry number `attempts` + 1: base * 2^(attempts-1), at most `cap`
    (default: a failed record fetch, 60 s doubling up to 7 days)."""
    return float(min(cap, base * 2 ** max(0, min(attempts - 1, 40))))


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
        (json_ids(ids),),
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
    await forget_trouble(db, [q.object_id for q in items], tables=("fetch_failures",))
