"""Failures and retry: ids answered 404 (missing), fetches that failed, bodies quarantined.

Each `save_*` leaves the transaction open; the caller commits once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiosqlite

from met_harvester.db.connection import iso_after, utc_now
from met_harvester.db.sql import json_ids, rows_of_ids

FAILURE_RETRY_BASE_SECONDS = 60.0
"""First retry of a failed fetch after this long; doubles per attempt."""
FAILURE_RETRY_MAX_SECONDS = 7 * 24 * 3600.0
"""Longest wait between retries of a failed fetch."""
QUARANTINE_RETRY_DAYS = (1, 7, 30)
"""A quarantined id is fetched again after 1 day, then 7, then every 30 days."""


class _HasId(Protocol):
    @property
    def object_id(self) -> int: ...


T = TypeVar("T", bound=_HasId)


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
    """Record the API's JSON 404s as missing (not failures). A stored object stays as it is:
    only trustworthy listings withdraw (`db.withdrawal`). Does not commit."""
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
    await forget_trouble(db, ids, tables=("fetch_failures", "quarantine"))


def _numbered(items: Sequence[T], attempts: dict[int, int]) -> list[tuple[T, int]]:
    """Each item with its attempt number: the stored attempts + 1 (a repeated id counts on)."""
    numbered = []
    for item in items:
        attempts[item.object_id] = attempts.get(item.object_id, 0) + 1
        numbered.append((item, attempts[item.object_id]))
    return numbered


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
    attempts = dict(await rows_of_ids(db, "object_id, attempts", "fetch_failures", ids))
    rows = []
    for failure, count in _numbered(items, attempts):
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


def quarantine_retry_days(attempts: int) -> int:
    """Days before quarantined attempt number `attempts` is fetched again: 1, 7, then 30."""
    return QUARANTINE_RETRY_DAYS[min(max(attempts, 1), len(QUARANTINE_RETRY_DAYS)) - 1]


async def save_quarantine(
    db: aiosqlite.Connection, items: Sequence[QuarantinedRecord], *, now: str | None = None
) -> None:
    """Keep bodies that could not be stored, with the reason and the next retry (after 1, 7,
    then every 30 days); a stored good row is left as is. Does not commit."""
    if not items:
        return
    now = now or utc_now()
    ids = [q.object_id for q in items]
    attempts = dict(await rows_of_ids(db, "object_id, attempts", "quarantine", ids))
    rows = []
    for q, count in _numbered(items, attempts):
        due = iso_after(now, quarantine_retry_days(count) * 86400.0)
        rows.append((q.object_id, q.raw_body, q.error, q.http_status, now, count, now, due))
    await db.executemany(
        "INSERT INTO quarantine (object_id, raw_body, error, http_status, received_at, attempts, "
        "first_received_at, next_retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(object_id) DO UPDATE SET raw_body = excluded.raw_body, "
        "error = excluded.error, http_status = excluded.http_status, "
        "received_at = excluded.received_at, attempts = excluded.attempts, "
        "next_retry_at = excluded.next_retry_at",
        rows,
    )
    await forget_trouble(db, ids, tables=("fetch_failures",))


async def next_retries(db: aiosqlite.Connection) -> dict[str, str | None]:
    """When the next quarantined id and the next failed fetch are due (None: none waiting)."""
    async with db.execute(
        "SELECT (SELECT MIN(COALESCE(next_retry_at, received_at)) FROM quarantine), "
        "(SELECT MIN(next_retry_at) FROM fetch_failures)"
    ) as cursor:
        row = await cursor.fetchone()
    return {
        "quarantine_next_retry_at": row[0] if row else None,
        "failures_next_retry_at": row[1] if row else None,
    }


async def trouble_ids(db: aiosqlite.Connection, *, quarantined: bool, failed: bool) -> list[int]:
    """Every quarantined and/or failed id, due or not (for `met-harvester retry`)."""
    parts = []
    if quarantined:
        parts.append("SELECT object_id FROM quarantine")
    if failed:
        parts.append("SELECT object_id FROM fetch_failures")
    if not parts:
        return []
    async with db.execute(" UNION ".join(parts) + " ORDER BY 1") as cursor:
        return [int(row[0]) async for row in cursor]
