"""The image pass of a sync: plan, then fetch through the image pool and record every outcome.

`sync_images` is the whole pass on its own: the full planner (every stored public-domain object,
`images.plan`), then the pool (`images.pool`). During `sync` the pool instead runs beside the
record pass: `plan_saved_records` plans the images of each committed record batch inside that
batch's transaction and hands their rows to the pool (`ImagePool.offer`). The pool has its own
adaptive limiter (`--image-rate`; what it learned is kept in `harvester_state` under
`limiter.images`), its own session and `--image-concurrency` download slots. A download leaves
its slot once its body is validated; blobs are then made durable in small groups
(`images.commit`), and only after that is an outcome handed to the one writer
(`images.record`). A SIGKILL at any moment loses at most the uncommitted batch, whose rows stay
`pending` (or keep their previous state) and are redone by the next run (a blob already stored
is then found and deduplicated). Blobs are visible only once complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import aiosqlite

from met_harvester.db import state as db_state
from met_harvester.db.records import FetchedRecord
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.hosts import AllowedHost, parse_allowlist
from met_harvester.images.plan import ImagePlan, plan_images, plan_rows
from met_harvester.images.pool import ImagePassError, ImagePool
from met_harvester.images.record import ImageSyncReport, retry_delay
from met_harvester.metrics import HarvesterMetrics
from met_harvester.progress import ProgressReporter
from met_harvester.settings import HarvesterSettings

__all__ = [
    "LEARNED_RATE_KEY",
    "ImagePassError",
    "ImagePool",
    "ImageSyncReport",
    "plan_saved_records",
    "retry_delay",
    "sync_images",
]

log = logging.getLogger("met_harvester.images.sync")

LEARNED_RATE_KEY = "image_learned_rate"
"""harvester_state key of the image pool's learned rate (kept beside `limiter.images`)."""


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
        db: a writer connection of the mirror.
        settings: image options (variant, additional images, hosts, caps, rate, concurrency).
        metrics: optional counters.
        object_ids: only these objects (default: every public-domain, non-withdrawn object).
        progress: an optional `ProgressReporter` (task name "images").
        stop_event: when set, no new downloads start; those in flight finish and are recorded.

    Returns:
        The pass's counts.

    Raises:
        ImagePassError: recording outcomes failed; the pass stopped.
    """
    started = time.monotonic()
    report = ImageSyncReport()
    store = BlobStore.for_data_dir(settings.data_dir)
    allowed = parse_allowlist(settings.image_hosts)
    report.temp_files_removed = await asyncio.to_thread(store.remove_stale_temp_files)
    plan = await plan_images(
        db, settings, store, allowed, object_ids=object_ids, stop_event=stop_event
    )
    count_plan(report, plan)
    _log_plan(plan)
    if plan.fetch_ids and not (stop_event is not None and stop_event.is_set()):
        pool = ImagePool(
            db,
            settings,
            store,
            allowed,
            report,
            metrics=metrics,
            progress=progress,
            stop_event=stop_event,
            backlog=False,
        )
        pool.close()
        await pool.run(plan.fetch_ids, plan.conditional_ids)
        await save_learned_rate(db, pool)
    finish_report(report, started, stop_event)
    return report


async def plan_saved_records(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    store: BlobStore,
    allowed: tuple[AllowedHost, ...],
    records: Sequence[FetchedRecord],
) -> ImagePlan:
    """Plan the images of records just saved (no commit: it belongs to their batch). Reads
    the URLs from the records themselves, never from `objects`."""
    rows = [
        (
            r.object_id,
            r.record.primary_image,
            r.record.primary_image_small,
            r.record.additional_images,
        )
        for r in records
        if r.record.is_public_domain
    ]
    plan = ImagePlan()
    if rows:
        await plan_rows(db, settings, store, allowed, rows, plan)
    return plan


def count_plan(report: ImageSyncReport, plan: ImagePlan) -> None:
    """Add what a plan found to the pass's counts."""
    report.objects += plan.objects
    report.slots += plan.slots
    report.unchanged += plan.unchanged
    report.deferred += plan.deferred
    report.superseded += plan.superseded
    report.refused += plan.refused
    report.queued += len(plan.fetch_ids)


def finish_report(
    report: ImageSyncReport, started: float, stop_event: asyncio.Event | None
) -> None:
    """Mark the report interrupted if the pass was stopped, and note its duration."""
    if stop_event is not None and stop_event.is_set():
        report.interrupted = True
    report.elapsed_s = round(time.monotonic() - started, 3)


async def save_learned_rate(db: aiosqlite.Connection, pool: ImagePool) -> None:
    """Keep the pool's learned rate under `LEARNED_RATE_KEY` (read by older tooling)."""
    if pool.limiter is not None and pool.limiter.learned_rate is not None:
        await db_state.set_state(db, LEARNED_RATE_KEY, round(pool.limiter.learned_rate, 4))
        await db.commit()


def _log_plan(plan: ImagePlan) -> None:
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
