"""Withdrawal decided only by trustworthy listings, and recorded with when and why.

A full id listing is *trustworthy* when it is complete (its distinct `objectIDs` equal its
`total`) and not smaller than the last trustworthy listing by more than the margin (default 2%).
Every listing a pass uses is judged and kept in `listing_checks`. A stored object is withdrawn
only when two consecutive trustworthy listings both lack it: the first makes it a candidate
(`withdrawal_candidates`), the second confirms. Each withdrawal and each un-withdrawal (the
record was fetched again) is a row of `withdrawal_events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.db.sql import json_ids, select_ids
from met_harvester.db.state import get_state_float, set_state

TRUSTED_LISTING_KEY = "api.trusted_listing_ids"
"""harvester_state key: distinct ids of the last trustworthy full listing."""
WITHDRAWN_REASON = "absent from two consecutive trustworthy listings"
RESTORED_REASON = "record fetched again from the API"


@dataclass(frozen=True)
class ListingVerdict:
    """What a listing is worth: its numbers and whether it may withdraw objects."""

    kind: str
    ids: int
    total: int | None
    previous: int | None
    trusted: bool
    reason: str | None = None

    def describe(self) -> str:
        """One line with the numbers, for the log."""
        prev = "-" if self.previous is None else f"{self.previous:,}"
        total = "-" if self.total is None else f"{self.total:,}"
        text = f"{self.kind} listing: {self.ids:,} ids, total {total}, last trusted {prev}"
        return text if self.trusted else f"{text}; not trusted: {self.reason}"


def judge_listing(
    kind: str, ids: int, total: int | None, previous: int | None, margin: float
) -> ListingVerdict:
    """Judge a listing of `ids` distinct ids that says `total`, against the last trusted one."""
    reason = None
    if total is None:
        reason = "the listing has no total"
    elif ids != total:
        reason = f"{ids:,} ids but its total says {total:,}"
    elif previous is not None and ids < previous * (1.0 - margin):
        shrink = (previous - ids) / previous
        reason = f"{shrink:.1%} smaller than the last trustworthy listing (margin {margin:.1%})"
    return ListingVerdict(kind, ids, total, previous, reason is None, reason)


async def last_trusted_size(db: aiosqlite.Connection) -> int | None:
    """Distinct ids of the last trustworthy full listing, or None before the first."""
    value = await get_state_float(db, TRUSTED_LISTING_KEY)
    return None if value is None else int(value)


async def record_check(
    db: aiosqlite.Connection, verdict: ListingVerdict, *, run_id: int | None
) -> int:
    """Keep the verdict in `listing_checks` (and a trusted full size in state). No commit."""
    cursor = await db.execute(
        "INSERT INTO listing_checks (run_id, checked_at, kind, ids, total, previous_trusted, "
        "trusted, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            utc_now(),
            verdict.kind,
            verdict.ids,
            verdict.total,
            verdict.previous,
            int(verdict.trusted),
            verdict.reason,
        ),
    )
    if verdict.trusted and verdict.kind == "full":
        await set_state(db, TRUSTED_LISTING_KEY, verdict.ids)
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def record_events(
    db: aiosqlite.Connection,
    ids: Sequence[int],
    action: str,
    reason: str,
    *,
    now: str | None = None,
    run_id: int | None = None,
) -> None:
    """One `withdrawal_events` row per id. No commit."""
    if ids:
        when = now or utc_now()
        await db.executemany(
            "INSERT INTO withdrawal_events (object_id, at, action, reason, run_id) "
            "VALUES (?, ?, ?, ?, ?)",
            [(i, when, action, reason, run_id) for i in ids],
        )


async def confirm_absent(
    db: aiosqlite.Connection, absent: Sequence[int], *, check_id: int
) -> tuple[list[int], list[int]]:
    """Split the ids a trustworthy listing lacks into (confirmed: the previous trustworthy
    listing lacked them too, new candidates); the candidates become exactly the new ones.
    No commit."""
    candidates = set(await select_ids(db, "SELECT object_id FROM withdrawal_candidates"))
    confirmed = [i for i in absent if i in candidates]
    fresh = [i for i in absent if i not in candidates]
    await db.execute("DELETE FROM withdrawal_candidates")
    now = utc_now()
    await db.executemany(
        "INSERT INTO withdrawal_candidates (object_id, first_absent_at, check_id) VALUES (?, ?, ?)",
        [(i, now, check_id) for i in fresh],
    )
    return confirmed, fresh


async def withdraw(
    db: aiosqlite.Connection,
    ids: Sequence[int],
    *,
    reason: str = WITHDRAWN_REASON,
    run_id: int | None = None,
    now: str | None = None,
) -> int:
    """Set `withdrawn_at` on stored, not yet withdrawn objects (rows are never deleted) and
    record why. Returns how many were newly marked. No commit."""
    if not ids:
        return 0
    when = now or utc_now()
    newly = await select_ids(
        db,
        "SELECT object_id FROM objects WHERE withdrawn_at IS NULL "
        "AND object_id IN (SELECT value FROM json_each(?)) ORDER BY object_id",
        (json_ids(ids),),
    )
    await db.execute(
        "UPDATE objects SET withdrawn_at = ? WHERE withdrawn_at IS NULL "
        "AND object_id IN (SELECT value FROM json_each(?))",
        (when, json_ids(newly)),
    )
    await record_events(db, newly, "withdrawn", reason, now=when, run_id=run_id)
    return len(newly)
