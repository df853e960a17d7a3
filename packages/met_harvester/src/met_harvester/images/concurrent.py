"""The image pool running beside a sync's record pass (what `sync` uses).

`ImagesBeside.start` opens the pool's own database connection and starts the pool, which takes
the backlog (`pending` rows, failed rows due) at once. The record pass calls `plan` inside each
batch's transaction (the images of the saved records, planned from the records themselves) and
`offer` once the batch is committed. `finish` closes the offers; after a completed record pass
it first runs the full planner when the image settings changed since the last full plan, or
when records were saved with images off, since only then can `objects` hold slots not planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

import aiosqlite

from met_harvester.db import state as db_state
from met_harvester.db.connection import open_db
from met_harvester.db.records import FetchedRecord
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.hosts import parse_allowlist
from met_harvester.images.plan import ImagePlan, plan_images
from met_harvester.images.pool import LOAD_BATCH, ImagePool
from met_harvester.images.record import ImageSyncReport
from met_harvester.images.sync import (
    count_plan,
    finish_report,
    plan_saved_records,
    save_learned_rate,
)
from met_harvester.metrics import HarvesterMetrics
from met_harvester.progress import ProgressReporter
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.images.sync")

PLAN_SIGNATURE_KEY = "images.plan_signature"
"""harvester_state key: the image settings of the last full plan ("" when records were saved
with images off since, so that the next image pass plans them all)."""


def plan_signature(settings: HarvesterSettings) -> str:
    """The image settings that decide which slots an object wants and which URLs are allowed."""
    return json.dumps(
        [settings.image_variant, settings.additional_images, sorted(settings.image_hosts)]
    )


async def note_images_off(db: aiosqlite.Connection) -> None:
    """Records are being saved without image planning: the next image pass plans everything."""
    await db_state.set_state(db, PLAN_SIGNATURE_KEY, "")


class ImagesBeside:
    """Runs the image pool of a sync next to its record pass.

    Args:
        settings: every option (the pool uses the image ones).
        metrics: optional counters.
        progress: optional reporter (task "images").
        stop_event: stops the pool too.
        object_ids: the pass is limited to these objects (no full plan of the rest).
    """

    def __init__(
        self,
        settings: HarvesterSettings,
        *,
        metrics: HarvesterMetrics | None = None,
        progress: ProgressReporter | None = None,
        stop_event: asyncio.Event | None = None,
        object_ids: Sequence[int] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.progress = progress
        self.stop_event = stop_event
        self.object_ids = object_ids
        self.store = BlobStore.for_data_dir(settings.data_dir)
        self.allowed = parse_allowlist(settings.image_hosts)
        self.report = ImageSyncReport()
        self.write_lock = asyncio.Lock()
        """Taken by each record batch and each image batch: one transaction at a time."""
        self.pool: ImagePool | None = None
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    async def start(self) -> None:
        """Open the pool's connection and start the pool (it takes the backlog at once)."""
        self.report.temp_files_removed = await asyncio.to_thread(self.store.remove_stale_temp_files)
        self._db = await open_db(self.settings.data_dir, migrate=False)
        await self._nothing_to_plan_yet(self._db)
        self.pool = ImagePool(
            self._db,
            self.settings,
            self.store,
            self.allowed,
            self.report,
            metrics=self.metrics,
            progress=self.progress,
            stop_event=self.stop_event,
            write_lock=self.write_lock,
        )
        self._task = asyncio.create_task(self.pool.run(), name="image-pool")

    async def plan(self, db: aiosqlite.Connection, records: Sequence[FetchedRecord]) -> ImagePlan:
        """Inside a record batch's transaction: plan the images of its saved records."""
        plan = await plan_saved_records(db, self.settings, self.store, self.allowed, records)
        count_plan(self.report, plan)
        return plan

    def offer(self, plan: ImagePlan) -> None:
        """After the batch's commit: hand its image rows to the pool."""
        if self.pool is not None:
            self.pool.offer(plan.fetch_ids.tolist(), plan.conditional_ids)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            task.result()  # the pool failed: stop the record pass with its one line

    async def finish(self, db: aiosqlite.Connection, *, completed: bool) -> ImageSyncReport:
        """Close the offers (after a full plan when one is due) and wait for the pool."""
        assert self.pool is not None and self._task is not None
        stopping = self.stop_event is not None and self.stop_event.is_set()
        if completed and not stopping and self.object_ids is None and not self._task.done():
            await self._full_plan_if_due(db)
        self.pool.close()
        try:
            await self._task
        finally:
            await self._close_db()
        finish_report(self.report, self._started, self.stop_event)
        return self.report

    async def abort(self) -> None:
        """The record pass failed: stop the pool and close its connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._close_db()

    async def _full_plan_if_due(self, db: aiosqlite.Connection) -> None:
        assert self.pool is not None
        wanted = plan_signature(self.settings)
        if await db_state.get_state(db, PLAN_SIGNATURE_KEY) == wanted:
            return
        log.info("image settings changed (or records saved with images off): full image plan")
        plan = await plan_images(
            db, self.settings, self.store, self.allowed, stop_event=self.stop_event
        )
        count_plan(self.report, plan)
        ids = plan.fetch_ids.tolist()
        for start in range(0, len(ids), LOAD_BATCH):
            await self.pool.offer_wait(ids[start : start + LOAD_BATCH], plan.conditional_ids)
        if not (self.stop_event is not None and self.stop_event.is_set()):
            await db_state.set_state(db, PLAN_SIGNATURE_KEY, wanted)
            await db.commit()

    async def _nothing_to_plan_yet(self, db: aiosqlite.Connection) -> None:
        """A mirror without objects has nothing the full planner could find."""
        if await db_state.get_state(db, PLAN_SIGNATURE_KEY) is not None:
            return
        async with db.execute("SELECT 1 FROM objects LIMIT 1") as cur:
            if await cur.fetchone() is None:
                await db_state.set_state(db, PLAN_SIGNATURE_KEY, plan_signature(self.settings))
                await db.commit()

    async def _close_db(self) -> None:
        if self._db is not None:
            if self.pool is not None:
                with contextlib.suppress(Exception):
                    await save_learned_rate(self._db, self.pool)
            await self._db.close()
            self._db = None
