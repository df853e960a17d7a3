"""The image pass of a sync: plan, then fetch through the image pool and record every outcome.

`sync_images` runs after the metadata pass (or on its own). Its pool has its own adaptive limiter
(`--image-rate`, learned rate kept in `harvester_state` under `image_learned_rate`), its own
session and `--image-concurrency` download slots. A download leaves its slot once its body is
validated; blobs are then made durable in small groups (`images.commit`), and only after that is
an outcome handed to the one writer, which records outcomes in batches. A SIGKILL at any moment
loses at most the uncommitted batch, whose rows stay `pending` (or keep their previous state)
and are redone by the next run (a blob already stored is then found and deduplicated). Blobs
are visible only once complete.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from met_harvester.db.connection import iso_utc
from met_harvester.db.state import get_state_float, set_state
from met_harvester.db.trouble import retry_delay as store_retry_delay
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.download import FetchOutcome, ImageFetcher
from met_harvester.images.hosts import AllowedHost, parse_allowlist
from met_harvester.images.plan import ImagePlan, plan_images
from met_harvester.images.session import make_session
from met_harvester.metrics import HarvesterMetrics
from met_harvester.progress import ProgressReporter
from met_harvester.ratelimit import AdaptiveRateLimiter
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.images.sync")

LEARNED_RATE_KEY = "image_learned_rate"
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})
WRITE_BATCH = 64
WORKERS_PER_SLOT = 4  # workers per download slot: the others wait for their group commit
WRITE_INTERVAL = 1.0
LOAD_BATCH = 256
DAY_S = 86400.0
_ROW_SQL = (
    "SELECT image_id, object_id, role, position, variant, url, sha256, status, etag, "
    "last_modified, attempts FROM images WHERE image_id IN ({marks})"
)


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
class _Work:
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


async def sync_images(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    *,
    metrics: HarvesterMetrics | None = None,
    object_ids: Sequence[int] | None = None,
    progress: ProgressReporter | None = None,
    stop_event: asyncio.Event | None = None,
) -> ImageSyncReport:
    """Download the images the stored public-domain objects need into the blob store.

    Args:
        db: the one writer connection of the mirror.
        settings: image options (variant, additional images, hosts, caps, rate, concurrency).
        metrics: optional counters.
        object_ids: only these objects (default: every public-domain, non-withdrawn object).
        progress: an optional `ProgressReporter` (task name "images").
        stop_event: when set, no new downloads start; those in flight finish and are recorded.

    Returns:
        The pass's counts.
    """
    started = time.monotonic()
    report = ImageSyncReport()
    store = BlobStore.for_data_dir(settings.data_dir)
    allowed = parse_allowlist(settings.image_hosts)
    report.temp_files_removed = await asyncio.to_thread(store.remove_stale_temp_files)

    plan = await plan_images(
        db, settings, store, allowed, object_ids=object_ids, stop_event=stop_event
    )
    report.objects, report.slots = plan.objects, plan.slots
    report.unchanged, report.deferred = plan.unchanged, plan.deferred
    report.superseded, report.refused = plan.superseded, plan.refused
    report.queued = len(plan.fetch_ids)
    log.info(
        "image plan: %d objects, %d slots, %d to fetch (%d new, %d changed URLs, %d missing "
        "blobs, %d to revalidate), %d unchanged",
        plan.objects,
        plan.slots,
        len(plan.fetch_ids),
        plan.new,
        plan.superseded,
        plan.missing_blobs,
        plan.revalidate,
        plan.unchanged,
    )
    if progress is not None:
        progress.start("images", len(plan.fetch_ids))
    if plan.fetch_ids and not (stop_event is not None and stop_event.is_set()):
        await _fetch_all(db, settings, store, allowed, plan, report, metrics, progress, stop_event)
    if stop_event is not None and stop_event.is_set():
        report.interrupted = True
    if progress is not None:
        progress.finish("images")
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


async def _fetch_all(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    store: BlobStore,
    allowed: tuple[AllowedHost, ...],
    plan: ImagePlan,
    report: ImageSyncReport,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
    stop_event: asyncio.Event | None,
) -> None:
    initial = await get_state_float(db, LEARNED_RATE_KEY)
    limiter = AdaptiveRateLimiter(
        settings.image_rate,
        initial=initial,
        name="images",
        cooldown=settings.block_cooldown,
        metrics=metrics,
    )
    work: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=settings.image_concurrency * 4)
    results: asyncio.Queue[tuple[_Work, FetchOutcome] | None] = asyncio.Queue()
    executor = ThreadPoolExecutor(
        max_workers=settings.image_concurrency, thread_name_prefix="met-image-commit"
    )
    async with make_session(settings, allowed) as session:
        fetcher = ImageFetcher(
            settings,
            store,
            session=session,
            limiter=limiter,
            allowed=allowed,
            metrics=metrics,
            executor=executor,
        )

        async def worker() -> None:
            while (item := await work.get()) is not None:
                if stop_event is not None and stop_event.is_set():
                    continue  # drain the queue without starting new downloads
                try:
                    outcome = await fetcher.fetch(
                        item.url,
                        etag=item.etag if item.conditional else None,
                        last_modified=item.last_modified if item.conditional else None,
                        stop_event=stop_event,
                    )
                except OSError as exc:
                    if exc.errno in _FATAL_ERRNOS:
                        raise  # disk full or read-only: no point going on
                    log.exception("image fetch failed", extra={"object_id": item.object_id})
                    outcome = FetchOutcome("failed", item.url, error=f"local error: {exc}")
                except Exception as exc:  # a bug must not end the whole pass
                    log.exception("image fetch failed", extra={"object_id": item.object_id})
                    outcome = FetchOutcome("failed", item.url, error=f"internal error: {exc!r}")
                if outcome is not None:
                    await results.put((item, outcome))

        writer = asyncio.create_task(_write_results(db, results, report, metrics, progress))
        # More workers than download slots: those waiting for a group commit hold no slot.
        workers = [
            asyncio.create_task(worker())
            for _ in range(WORKERS_PER_SLOT * settings.image_concurrency)
        ]
        try:
            await _feed(db, plan, work, stop_event, metrics)
            for _ in workers:
                await work.put(None)
            await asyncio.gather(*workers)
            if metrics is not None:
                metrics.queue_depth.labels("images").set(0)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await fetcher.aclose()
            await results.put(None)
            await writer
            executor.shutdown(wait=True)
    if limiter.learned_rate is not None:
        await set_state(db, LEARNED_RATE_KEY, round(limiter.learned_rate, 4))
        await db.commit()


async def _feed(
    db: aiosqlite.Connection,
    plan: ImagePlan,
    work: asyncio.Queue[_Work | None],
    stop_event: asyncio.Event | None,
    metrics: HarvesterMetrics | None,
) -> None:
    ids = plan.fetch_ids
    for start in range(0, len(ids), LOAD_BATCH):
        chunk = ids[start : start + LOAD_BATCH].tolist()
        marks = ",".join("?" * len(chunk))
        async with db.execute(_ROW_SQL.format(marks=marks), chunk) as cur:
            rows = {r[0]: r for r in await cur.fetchall()}
        for offset, image_id in enumerate(chunk):
            if stop_event is not None and stop_event.is_set():
                return
            if metrics is not None:
                metrics.queue_depth.labels("images").set(len(ids) - start - offset)
            r = rows.get(image_id)
            if r is None:
                continue
            conditional = image_id in plan.conditional_ids
            await work.put(
                _Work(
                    image_id=r[0],
                    object_id=r[1],
                    role=r[2],
                    position=r[3],
                    variant=r[4],
                    url=r[5],
                    sha256=r[6],
                    status=r[7],
                    etag=r[8],
                    last_modified=r[9],
                    attempts=r[10],
                    conditional=conditional,
                )
            )


async def _write_results(
    db: aiosqlite.Connection,
    results: asyncio.Queue[tuple[_Work, FetchOutcome] | None],
    report: ImageSyncReport,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
) -> None:
    batch: list[tuple[_Work, FetchOutcome]] = []
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
            await _record(db, batch, report, metrics)
            if progress is not None:
                progress.advance("images", len(batch))
            batch = []
            last_flush = time.monotonic()


async def _record(
    db: aiosqlite.Connection,
    batch: list[tuple[_Work, FetchOutcome]],
    report: ImageSyncReport,
    metrics: HarvesterMetrics | None,
) -> None:
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
    await db.commit()


def _ok_values(item: _Work, outcome: FetchOutcome, now: str) -> tuple[Any, ...] | None:
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
    db: aiosqlite.Connection, item: _Work, outcome: FetchOutcome, now: str
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
    item: _Work,
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
