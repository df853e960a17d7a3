"""Recording what the image pool fetched: one writer, batches of outcomes per transaction.

`write_results` takes (work item, outcome) pairs from a bounded queue and records them in
batches of `WRITE_BATCH` (or whatever arrived within `WRITE_INTERVAL`), each batch in one
transaction together with the pool limiter's state (`on_batch`). Blobs are durable before an
outcome reaches the queue, so a kill loses at most the uncommitted batch, whose rows stay
`pending` (or keep their previous state) and are redone by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from met_harvester.db.connection import iso_utc
from met_harvester.db.trouble import retry_delay as store_retry_delay
from met_harvester.images.download import FetchOutcome
from met_harvester.metrics import HarvesterMetrics

log = logging.getLogger("met_harvester.images.sync")

WRITE_BATCH = 64
WRITE_INTERVAL = 1.0
DAY_S = 86400.0


@dataclass
class ImageSyncReport:
    """Counts of one image pass (also stored in the sync run's counts)."""

    objects: int = 0
    slots: int = 0
    queued: int = 0
    stored: int = 0
    deduplicated: int = 0
    not_modified: int = 0
    unchanged: int = 0
    failed: int = 0
    refused: int = 0
    deferred: int = 0
    superseded: int = 0
    bytes: int = 0
    temp_files_removed: int = 0
    interrupted: bool = False
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class ImageWork:
    """One image row to fetch, as loaded from `images`."""

    image_id: int
    object_id: int
    role: str
    position: int
    variant: str
    url: str
    sha256: str | None
    status: str
    etag: str | None
    last_modified: str | None
    attempts: int
    conditional: bool


def retry_delay(attempts: int, *, permanent: bool) -> timedelta:
    """When a failed image is tried again: transient 10 min doubling to 1 day; permanent
    1 day doubling to 30 days."""
    if permanent:
        return timedelta(seconds=store_retry_delay(attempts, base=DAY_S, cap=30 * DAY_S))
    return timedelta(seconds=store_retry_delay(attempts, base=600.0, cap=DAY_S))


Results = asyncio.Queue[tuple[ImageWork, FetchOutcome] | None]
OnBatch = Callable[[aiosqlite.Connection, list[tuple["ImageWork", FetchOutcome]]], Awaitable[None]]


async def write_results(
    db: aiosqlite.Connection,
    results: Results,
    report: ImageSyncReport,
    metrics: HarvesterMetrics | None,
    on_batch: OnBatch,
    write_lock: asyncio.Lock,
) -> None:
    """Record outcomes from `results` until a None arrives; `on_batch(db, batch)` runs inside each
    batch's transaction, before its commit (the pool saves its limiter state there)."""
    batch: list[tuple[ImageWork, FetchOutcome]] = []
    last_flush = time.monotonic()
    done = False
    while not done:
        if batch:  # something to write: wait at most until its flush is due
            due = WRITE_INTERVAL - (time.monotonic() - last_flush)
            try:
                got = await asyncio.wait_for(results.get(), timeout=max(0.0, due))
            except TimeoutError:
                got = ()  # type: ignore[assignment]
        else:
            got = await results.get()
        while True:  # take everything already waiting, without more wake-ups
            if got is None:
                done = True
            elif got:
                batch.append(got)
            if done or results.empty():
                break
            got = results.get_nowait()
        if batch and (
            done or len(batch) >= WRITE_BATCH or time.monotonic() - last_flush >= WRITE_INTERVAL
        ):
            async with write_lock:  # one transaction at a time with the record pass
                await record_batch(db, batch, report, metrics)
                await on_batch(db, batch)
                await db.commit()
            batch = []
            last_flush = time.monotonic()


async def record_batch(
    db: aiosqlite.Connection,
    batch: list[tuple[ImageWork, FetchOutcome]],
    report: ImageSyncReport,
    metrics: HarvesterMetrics | None,
) -> None:
    """Write one batch of outcomes into `images` and count them into `report` (no commit)."""
    now_dt = datetime.now(UTC)
    now = iso_utc(now_dt)
    plain_ok: list[tuple[Any, ...]] = []  # the common case, written with one executemany
    for item, outcome in batch:
        extra = {"object_id": item.object_id, "image_id": item.image_id, "url": item.url}
        if outcome.kind in ("stored", "deduplicated"):
            assert outcome.sha256 is not None and outcome.info is not None
            if outcome.kind == "stored":
                report.stored += 1
                report.bytes += outcome.size or 0
                if metrics is not None:
                    metrics.images_stored.inc()
                    metrics.image_bytes.inc(outcome.size or 0)
            else:
                report.deduplicated += 1
            values = _ok_values(item, outcome, now)
            if values is not None:
                plain_ok.append(values)
            else:
                await _save_new_content(db, item, outcome, now)
        elif outcome.kind == "not_modified":
            report.not_modified += 1
            await db.execute(
                "UPDATE images SET fetched_at = ?, status = 'ok', error = NULL, attempts = 0, "
                "next_retry_at = NULL, etag = COALESCE(?, etag), "
                "last_modified = COALESCE(?, last_modified) WHERE image_id = ?",
                (now, outcome.etag, outcome.last_modified, item.image_id),
            )
        elif outcome.kind == "refused":
            report.refused += 1
            log.warning("image URL refused: %s", outcome.error, extra=extra)
            if metrics is not None:
                metrics.failures.labels("image_refused").inc()
            # A URL refused by itself is retried only once the allowlist lets it through; one
            # allowed but redirected elsewhere is asked again after the permanent back-off.
            retry_at = None
            if outcome.error and outcome.error.startswith("redirect"):
                retry_at = iso_utc(now_dt + retry_delay(item.attempts + 1, permanent=True))
            await db.execute(
                "UPDATE images SET status = 'refused', error = ?, attempts = attempts + 1, "
                "next_retry_at = ? WHERE image_id = ?",
                (outcome.error, retry_at, item.image_id),
            )
        else:
            report.failed += 1
            if metrics is not None:
                metrics.failures.labels("image").inc()
            await _save_failure(db, item, outcome, now_dt, extra)
    await db.executemany(
        "UPDATE images SET sha256 = ?, bytes = ?, width = ?, height = ?, format = ?, mode = ?, "
        "fetched_at = ?, etag = ?, last_modified = ?, status = 'ok', error = NULL, "
        "attempts = 0, next_retry_at = NULL WHERE image_id = ?",
        plain_ok,
    )


def _ok_values(item: ImageWork, outcome: FetchOutcome, now: str) -> tuple[Any, ...] | None:
    """Parameters of the plain `ok` update, or None when the row's old blob must become
    history (same URL, new bytes)."""
    if item.status == "ok" and item.sha256 and item.sha256 != outcome.sha256:
        return None
    return (*_content_values(outcome, now), item.image_id)


def _content_values(outcome: FetchOutcome, now: str) -> tuple[object, ...]:
    """sha256, bytes, width, height, format, mode, fetched_at, etag, last_modified of a stored
    image, in the order of the `images` columns."""
    info = outcome.info
    assert info is not None
    return (
        outcome.sha256,
        outcome.size,
        info.width,
        info.height,
        info.format,
        info.mode,
        now,
        outcome.etag,
        outcome.last_modified,
    )


async def _save_new_content(
    db: aiosqlite.Connection, item: ImageWork, outcome: FetchOutcome, now: str
) -> None:
    """Same URL, new bytes: keep the old link as history, start a new current row."""
    await db.execute(
        "UPDATE images SET is_current = 0, superseded_at = ? WHERE image_id = ?",
        (now, item.image_id),
    )
    await db.execute(
        "INSERT INTO images (object_id, role, position, variant, url, sha256, bytes, width, "
        "height, format, mode, fetched_at, etag, last_modified, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok')",
        (
            item.object_id,
            item.role,
            item.position,
            item.variant,
            item.url,
            *_content_values(outcome, now),
        ),
    )


async def _save_failure(
    db: aiosqlite.Connection,
    item: ImageWork,
    outcome: FetchOutcome,
    now_dt: datetime,
    extra: dict[str, Any],
) -> None:
    if item.conditional and item.status == "ok":
        # A revalidation that failed: the blob we have is still good; try again next run.
        log.warning("image revalidation failed: %s", outcome.error, extra=extra)
        await db.execute(
            "UPDATE images SET error = ? WHERE image_id = ?",
            (f"revalidation failed: {outcome.error}", item.image_id),
        )
        return
    attempts = item.attempts + 1
    next_retry = iso_utc(now_dt + retry_delay(attempts, permanent=outcome.permanent))
    # Transient trouble that outlasted every retry is a give-up (ERROR); a body that is not a
    # whole, sane image is the server's content, reported as a warning.
    log.log(
        logging.WARNING if outcome.permanent else logging.ERROR,
        "image failed (attempt %d, next try %s): %s",
        attempts,
        next_retry,
        outcome.error,
        extra=extra,
    )
    await db.execute(
        "UPDATE images SET status = 'failed', error = ?, attempts = ?, next_retry_at = ? "
        "WHERE image_id = ?",
        (outcome.error, attempts, next_retry, item.image_id),
    )
