"""`sync_runs`: one row per pass, its mode, status and running counts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from met_harvester.db.connection import utc_now
from met_harvester.models import canonical_json


async def start_run(db: aiosqlite.Connection, mode: str, *, now: str | None = None) -> int:
    """Insert a `running` sync_runs row and commit it; returns its run_id."""
    cursor = await db.execute(
        "INSERT INTO sync_runs (started_at, mode, status) VALUES (?, ?, 'running')",
        (now or utc_now(), mode),
    )
    await db.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def update_run_counts(
    db: aiosqlite.Connection, run_id: int, counts: Mapping[str, Any]
) -> None:
    """Store the running counts of a run (so an interrupted run shows its progress)."""
    await db.execute(
        "UPDATE sync_runs SET counts_json = ? WHERE run_id = ?", (canonical_json(counts), run_id)
    )


async def finish_run(
    db: aiosqlite.Connection,
    run_id: int,
    status: str,
    counts: Mapping[str, Any],
    *,
    error: str | None = None,
    now: str | None = None,
) -> None:
    """Close a run as completed, interrupted or failed, and commit."""
    await db.execute(
        "UPDATE sync_runs SET status = ?, finished_at = ?, counts_json = ?, error = ? "
        "WHERE run_id = ?",
        (status, now or utc_now(), canonical_json(counts), error, run_id),
    )
    await db.commit()


async def mark_stale_runs_interrupted(db: aiosqlite.Connection) -> int:
    """Runs left `running` by a killed process become `interrupted`; commits; returns how many."""
    cursor = await db.execute(
        "UPDATE sync_runs SET status = 'interrupted', "
        "error = COALESCE(error, 'process ended while running (killed?)') WHERE status = 'running'"
    )
    await db.commit()
    return cursor.rowcount


async def changes_since(
    db: aiosqlite.Connection, *, complete_modes: Sequence[str] = ("full", "incremental")
) -> str | None:
    """Start time from which server-side changes may be missing from the mirror.

    That is the `changes_from` of the last completed full or incremental run (the start of the
    run that began its changed window; by default its own start); when none completed yet, the
    start of the earliest run (records fetched by unfinished runs are fresh from then on).
    None when no run ever started (nothing stored from the API: a first full pass).
    """
    marks = ",".join("?" for _ in complete_modes)
    async with db.execute(
        f"SELECT COALESCE(changes_from, started_at) FROM sync_runs WHERE status = 'completed' "
        f"AND mode IN ({marks}) ORDER BY run_id DESC LIMIT 1",
        tuple(complete_modes),
    ) as cursor:
        row = await cursor.fetchone()
    if row and row[0]:
        return str(row[0])
    async with db.execute("SELECT MIN(started_at) FROM sync_runs") as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row and row[0] else None


async def set_changes_from(db: aiosqlite.Connection, run_id: int, changes_from: str) -> None:
    """Record from when this run, once completed, vouches for the changes. No commit."""
    await db.execute(
        "UPDATE sync_runs SET changes_from = ? WHERE run_id = ?", (changes_from, run_id)
    )


async def last_run(db: aiosqlite.Connection) -> dict[str, Any] | None:
    """The most recent sync_runs row as a dict (counts decoded), or None."""
    async with db.execute(
        "SELECT run_id, started_at, finished_at, mode, status, counts_json, error "
        "FROM sync_runs ORDER BY run_id DESC LIMIT 1"
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    run_id, started, finished, mode, status, counts_json, error = row
    return {
        "run_id": run_id,
        "start": started,
        "end": finished,
        "mode": mode,
        "status": status,
        "counts": json.loads(counts_json or "{}"),
        "error": error,
    }
