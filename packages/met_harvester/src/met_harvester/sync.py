"""One sync pass: plan the ids (`sync_plan`), fetch and store them (`sync_fetch`) while the
image pool fetches their images beside it (`images.concurrent`).

`run_sync` is the entry point (the `sync` command and the daemon call it). A pass is recorded in
`sync_runs` as running, then completed, interrupted (stopped by a signal, or cancelled) or
failed; the next incremental pass starts from the last *completed* full or incremental one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from met_harvester import sync_window
from met_harvester.client import ListingError, MetClient
from met_harvester.db import limiter_state, runs
from met_harvester.db.connection import open_db, utc_now
from met_harvester.db.maintenance import after_pass
from met_harvester.images.concurrent import ImagesBeside, note_images_off
from met_harvester.images.sync import ImagePassError, ImageSyncReport
from met_harvester.metrics import HarvesterMetrics
from met_harvester.priority import parse_priority
from met_harvester.progress import ProgressReporter
from met_harvester.ratelimit import AdaptiveRateLimiter
from met_harvester.settings import HarvesterSettings
from met_harvester.sync_fetch import FetchPipeline, save_rate
from met_harvester.sync_plan import choose_mode, plan_ids

log = logging.getLogger("met_harvester.sync")

COUNT_KEYS = (
    "listed",
    "changed_listed",
    "retries_due",
    "to_fetch",
    "fetched",
    "new",
    "updated",
    "unchanged",
    "missing",
    "failed",
    "quarantined",
    "withdrawn",
    "changed_todo",
)
"""The counts every pass records (in this order), all starting at 0."""


class SyncError(RuntimeError):
    """A fatal problem that ends a pass (its text is the one-line reason shown to the user)."""


@dataclass
class SyncReport:
    """What one pass did. `status` is completed, interrupted or failed."""

    run_id: int | None
    mode: str
    status: str
    started_at: str
    finished_at: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    images: ImageSyncReport | None = None

    @property
    def completed(self) -> bool:
        """Whether the metadata pass went through to the end."""
        return self.status == "completed"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "start": self.started_at,
            "end": self.finished_at,
            "counts": self.counts,
            "error": self.error,
            "images": None if self.images is None else self.images.as_dict(),
        }


async def run_sync(
    settings: HarvesterSettings,
    *,
    full: bool = False,
    limit: int | None = None,
    object_ids: Sequence[int] | None = None,
    departments: Sequence[int] | None = None,
    metrics: HarvesterMetrics | None = None,
    progress: ProgressReporter | None = None,
    stop_event: asyncio.Event | None = None,
    limiter: AdaptiveRateLimiter | None = None,
) -> SyncReport:
    """Run one sync pass: records, and beside them their images (unless `settings.images` is
    off) through a second pool with its own limiter.

    Args:
        settings: every option; `settings.data_dir` holds the database.
        full: refetch every listed record.
        limit: stop after this many records (the run then does not count as a completed pass).
        object_ids: fetch just these ids (no listing).
        departments: restrict the listing to these department ids.
        metrics: counters to update.
        progress: where to report progress (None: silent).
        stop_event: set it to stop cleanly (SIGINT/SIGTERM); the run ends `interrupted`.
        limiter: an API rate limiter to use instead of one built from the settings and what
            the last run learned (tests use one with a scaled-down policy).

    Returns:
        The report; `status` is completed or interrupted (failed records do not fail a pass).

    Raises:
        SyncError: a fatal problem (database not writable, listing unavailable after retries,
            image outcomes that cannot be recorded).
    """
    if limit is not None and limit < 0:
        raise SyncError("--limit must be >= 0")
    try:
        db = await open_db(settings.data_dir)
    except (sqlite3.Error, OSError) as exc:
        raise SyncError(f"cannot open the database {settings.db_path}: {exc}") from exc
    try:
        return await _run(
            db,
            settings,
            full=full,
            limit=limit,
            object_ids=object_ids,
            departments=departments,
            metrics=metrics,
            progress=progress,
            stop_event=stop_event,
            limiter=limiter,
        )
    except sqlite3.Error as exc:
        raise SyncError(f"database error in {settings.db_path}: {exc}") from exc
    except OSError as exc:  # e.g. no space left for a blob, a read-only data dir
        raise SyncError(f"cannot write in {settings.data_dir}: {exc}") from exc
    finally:
        await after_pass(db, keep_versions=settings.keep_versions)
        await db.close()


async def _run(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    *,
    full: bool,
    limit: int | None,
    object_ids: Sequence[int] | None,
    departments: Sequence[int] | None,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
    stop_event: asyncio.Event | None,
    limiter: AdaptiveRateLimiter | None,
) -> SyncReport:
    try:
        parse_priority(settings.priority)
    except ValueError as exc:
        raise SyncError(str(exc)) from exc
    stale = await runs.mark_stale_runs_interrupted(db)
    if stale:
        log.info("marked %d run(s) left running by an ended process as interrupted", stale)
    since = await runs.changes_since(db)
    mode = choose_mode(
        full=full, limit=limit, object_ids=object_ids, departments=departments, since=since
    )
    started_at = utc_now()
    run_id = await runs.start_run(db, mode, now=started_at)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    images = _images_beside(settings, metrics, progress, stop_event, object_ids)
    pipeline: FetchPipeline | None = None
    api_state = await limiter_state.load(db, "api")
    try:
        async with MetClient(settings, metrics=metrics, state=api_state, limiter=limiter) as client:
            if images is None:
                await note_images_off(db)
            todo = await plan_ids(
                db,
                client,
                priority=settings.priority,
                counts=counts,
                full=full or since is None,
                since=since,
                object_ids=object_ids,
                departments=departments,
                metrics=metrics,
                run_id=run_id,
                started_at=started_at,
                listing_margin=settings.listing_margin,
            )
            if limit is not None:
                todo = todo[:limit]
            counts["to_fetch"] = len(todo)
            if images is not None:  # after the listing's writes: from here on, writers take turns
                await images.start()
            log.info(
                "sync %s: %d listed, %d changed since %s, %d retries due, %d to fetch",
                mode,
                counts["listed"],
                counts["changed_listed"],
                since or "-",
                counts["retries_due"],
                len(todo),
            )
            pipeline = FetchPipeline(
                db,
                settings,
                client,
                counts=counts,
                run_id=run_id,
                metrics=metrics,
                progress=progress,
                stop_event=stop_event,
                images=images,
                window_ids=todo[: counts.get("changed_todo", 0)],
            )
            done = await pipeline.fetch_all(todo) if todo else 0
            await save_rate(db, client, settings)
            await db.commit()
    except ListingError as exc:
        await db.rollback()
        await runs.finish_run(db, run_id, "failed", counts, error=str(exc))
        if images is not None:
            await images.abort()
        raise SyncError(str(exc)) from exc
    except (asyncio.CancelledError, Exception) as exc:
        with contextlib.suppress(Exception):
            # A batch cut short must not be committed along with the run's end.
            await db.rollback()
            status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
            await runs.finish_run(db, run_id, status, counts, error=repr(exc)[:500])
        if images is not None:
            await images.abort()
        if isinstance(exc, ImagePassError):
            raise SyncError(str(exc)) from exc
        raise
    finally:
        if progress is not None:
            progress.finish("records")
    interrupted = pipeline is not None and pipeline.stopping and done < len(todo)
    report = SyncReport(
        run_id=run_id,
        mode=mode,
        status="interrupted" if interrupted else "completed",
        started_at=started_at,
        counts=counts,
    )
    log.info(
        "sync %s records %s: %s",
        mode,
        report.status,
        ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    if images is not None:
        report.images = await _finish_images(db, run_id, images, report)
    report.finished_at = utc_now()
    if report.completed and mode in ("full", "incremental"):
        await sync_window.clear_window(db)  # committed with the run's end
    await runs.finish_run(
        db,
        run_id,
        report.status,
        counts,
        error="stopped by signal" if interrupted else None,
        now=report.finished_at,
    )
    return report


def _images_beside(
    settings: HarvesterSettings,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
    stop_event: asyncio.Event | None,
    object_ids: Sequence[int] | None,
) -> ImagesBeside | None:
    if not settings.images:
        return None
    return ImagesBeside(
        settings,
        metrics=metrics,
        progress=progress,
        stop_event=stop_event,
        object_ids=object_ids,
    )


async def _finish_images(
    db: aiosqlite.Connection, run_id: int, images: ImagesBeside, report: SyncReport
) -> ImageSyncReport:
    """Let the image pool finish what the record pass gave it; a failure ends the run."""
    try:
        return await images.finish(db, completed=report.completed)
    except (asyncio.CancelledError, Exception) as exc:
        with contextlib.suppress(Exception):
            status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
            await runs.finish_run(db, run_id, status, report.counts, error=str(exc)[:500])
        if isinstance(exc, ImagePassError):
            raise SyncError(str(exc)) from exc
        raise
